"""Days sales outstanding (DSO) as of a day, by two methods, per currency.

Definitions (as of the day D, for a period P ending on D):

* **receivables** — the open principal at D, net: the open invoices' outstanding (disputed ones included) less
  unapplied credit, the aged balance's ``net`` (:mod:`services.reports.aging`); claims (interest, fees) are not
  receivables here.
* **sales** of a span of days — the amounts (tax included) of the invoices issued in it (``issue_date``), not
  cancelled by D, less the credit notes issued in it (``issued_on``).
* **the period** — ``Nm``: the N calendar months ending on D (when D is a month's last day, the N whole months
  through D's; otherwise from the day after the same day N months earlier); ``Nd``: the N days ending on D.

**Simple**: ``DSO = receivables / sales of the period x days of the period``.

**Countback**: walk back from D month by month (the month ending on D, the one before it, ..., the last one cut at
the period's start). Take ``remaining = receivables``; for each month, if its sales cover what remains,
add ``remaining / month's sales x month's days`` (the last month, prorated) and stop; otherwise add the month's
days and take its sales off what remains. If the period's sales do not cover the receivables, the DSO is the
period's days and is marked as capped ("at least").

Zero (or negative) sales of the period give "n/a", never a division error; receivables of zero or less give 0.
The DSO is rounded to a tenth of a day (half up); money is never summed across currencies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from services.reports.aging import segment_of
from services.reports.walk import month_end, months_back
from shared.ledger.state import CustomerState

ZERO = Decimal(0)
TENTH = Decimal("0.1")
Method = Literal["simple", "countback"]
METHODS: tuple[Method, ...] = ("simple", "countback")
By = Literal["tenant", "customer", "segment"]
GROUPINGS: tuple[By, ...] = ("tenant", "segment", "customer")
_PERIOD = re.compile(r"^(\d{1,3})([md])$")


@dataclass(frozen=True, slots=True)
class Period:
    """A span of days ``first`` to ``last``, both included."""

    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def holds(self, day: date) -> bool:
        return self.first <= day <= self.last


@dataclass(frozen=True, slots=True)
class PeriodLength:
    """``3m``, ``6m``, ``12m``, ``90d``...: a number of months or days ending on the report's day."""

    count: int
    unit: Literal["m", "d"]

    @classmethod
    def parse(cls, text: str) -> PeriodLength:
        found = _PERIOD.match(text.strip())
        if found is None or int(found.group(1)) == 0:
            raise ValueError(f"not a period: {text!r}; write a number of months or days, such as 3m, 12m or 90d")
        unit: Literal["m", "d"] = "m" if found.group(2) == "m" else "d"
        count = int(found.group(1))
        if (unit == "m" and count > 60) or (unit == "d" and count > 1830):
            raise ValueError(f"period {text!r} is too long: at most 60m or 1830d")
        return cls(count, unit)

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    def ending(self, day: date) -> Period:
        if self.unit == "d":
            return Period(day - timedelta(days=self.count - 1), day)
        return Period(_months_start(day, self.count), day)

    def months(self, day: date) -> list[Period]:
        """The countback's months, newest first: each a calendar month back from ``day``, the last one cut at the
        period's start."""
        start = self.ending(day).first
        months: list[Period] = []
        last = day
        while last >= start:
            first = max(_months_start(last, 1), start)
            months.append(Period(first, last))
            last = first - timedelta(days=1)
        return months


def _months_start(day: date, months: int) -> date:
    """The first day of the ``months`` months ending on ``day``."""
    if day == month_end(day):
        return months_back(day.replace(day=1), months - 1)
    return months_back(day, months) + timedelta(days=1)


def sales(state: CustomerState, period: Period) -> dict[str, Decimal]:
    """Per currency: invoices issued in ``period`` (not cancelled) less credit notes issued in it."""
    result: dict[str, Decimal] = {}
    for invoice in state.invoices.values():
        if invoice.status != "cancelled" and period.holds(invoice.issue_date):
            result[invoice.currency] = result.get(invoice.currency, ZERO) + invoice.amount
    for credit in state.credits.values():
        if credit.kind == "credit_note" and period.holds(credit.on):
            result[credit.currency] = result.get(credit.currency, ZERO) - credit.amount
    return result


@dataclass(frozen=True, slots=True)
class Dso:
    """A DSO figure: ``days`` is None when it cannot be computed (no sales), ``capped`` when it is at least that."""

    days: Decimal | None
    capped: bool = False

    def __str__(self) -> str:
        if self.days is None:
            return "n/a"
        return f">= {self.days}" if self.capped else str(self.days)


def _tenth(value: Decimal) -> Decimal:
    return value.quantize(TENTH, rounding=ROUND_HALF_UP)


def simple(receivables: Decimal, period_sales: Decimal, days: int) -> Dso:
    """``receivables / sales x days``; n/a for no sales, 0 when nothing is owed."""
    if period_sales <= 0:
        return Dso(None)
    if receivables <= 0:
        return Dso(_tenth(ZERO))
    return Dso(_tenth(receivables / period_sales * days))


def countback(receivables: Decimal, months: list[tuple[Decimal, int]]) -> Dso:
    """``months``: (sales, days) of each month walking back from the day, newest first (see the module's doc)."""
    if sum((s for s, _ in months), ZERO) <= 0:
        return Dso(None)
    if receivables <= 0:
        return Dso(_tenth(ZERO))
    remaining, total = receivables, ZERO
    for month_sales, days in months:
        if month_sales > 0 and remaining <= month_sales:
            return Dso(_tenth(total + remaining / month_sales * days))
        total += days
        remaining -= max(month_sales, ZERO)
    return Dso(_tenth(total), capped=True)


@dataclass
class DsoRow:
    """One line: a tenant, segment or customer in one currency, with its receivables and sales."""

    key: str
    name: str
    currency: str
    receivables: Decimal = ZERO
    sales: Decimal = ZERO  # of the period
    monthly: list[Decimal] = field(default_factory=list)  # the countback's months' sales, newest first
    customers: set[str] = field(default_factory=set)

    def dso(self, method: Method, length: PeriodLength, as_of: date) -> Dso:
        if method == "simple":
            return simple(self.receivables, self.sales, length.ending(as_of).days)
        months = length.months(as_of)
        return countback(self.receivables, [(s, m.days) for s, m in zip(self.monthly, months, strict=True)])


@dataclass
class DsoReport:
    tenant: str
    as_of: date
    length: PeriodLength
    method: Method
    by: By
    rows: list[DsoRow]
    totals: dict[str, DsoRow]  # currency -> the tenant's row

    @property
    def period(self) -> Period:
        return self.length.ending(self.as_of)

    def dso(self, row: DsoRow) -> Dso:
        return row.dso(self.method, self.length, self.as_of)


def dso_report(
    tenant: str,
    states: Iterable[CustomerState],
    as_of: date,
    length: PeriodLength,
    method: Method = "simple",
    by: By = "tenant",
) -> DsoReport:
    """The DSO of ``tenant`` as of ``as_of`` from its customers' states as of that day."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: one of {', '.join(METHODS)}")
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}: one of {', '.join(GROUPINGS)}")
    period, months = length.ending(as_of), length.months(as_of)
    grouped: dict[tuple[str, str], DsoRow] = {}
    totals: dict[str, DsoRow] = {}
    for state in states:
        if state.tenant != tenant:
            raise ValueError(f"state of tenant {state.tenant!r} given to the DSO of {tenant!r}")
        owed = state.balances()
        of_period = sales(state, period)
        of_months = [sales(state, month) for month in months]
        currencies = set(owed) | set(of_period) | {c for m in of_months for c in m}
        name = str((state.profile or {}).get("name") or state.customer_id)
        if by == "customer":
            key = state.customer_id
        elif by == "segment":
            key = name = segment_of(state)
        else:
            key = name = tenant
        for currency in currencies:
            targets = [grouped.setdefault((key, currency), DsoRow(key, name, currency, monthly=[ZERO] * len(months)))]
            if by != "tenant":
                targets.append(
                    totals.setdefault(currency, DsoRow(tenant, tenant, currency, monthly=[ZERO] * len(months)))
                )
            for row in targets:
                row.receivables += owed.get(currency, ZERO)
                row.sales += of_period.get(currency, ZERO)
                row.monthly = [a + m.get(currency, ZERO) for a, m in zip(row.monthly, of_months, strict=True)]
                row.customers.add(state.customer_id)
    if by == "tenant":
        totals = {currency: row for (_, currency), row in grouped.items()}
    rows = sorted(grouped.values(), key=lambda r: (r.currency, -r.receivables, r.key))
    return DsoReport(tenant, as_of, length, method, by, rows, totals)
