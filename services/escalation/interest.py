"""Late-payment interest and the fixed recovery fee (French Code de commerce L441-10 and D441-5).

Interest is simple interest on the amount outstanding including tax, ``base * annual rate * days / 365``, accrued
day by day and rounded half-up to the currency's minor unit once, on the total.

Conventions, stated because they change figures:

* **Days are date differences**, as French calculators and courts count them: an invoice due on D and paid on P
  owes ``P - D`` days of interest; the due date does not count and the payment day does. Day by day, interest
  accrues for every day from ``D + 1`` through ``through`` inclusive (the as-of date, or the payment date).
* **Balance changes.** The timeline gives the amount outstanding from each date on. A payment or credit note dated
  P closes the period at the old balance on P and opens the reduced balance's period there, so day ``d`` accrues on
  the balance outstanding at the end of day ``d - 1``. A full payment on P therefore owes interest through P,
  exactly as ``P - D`` says, and a partial payment is treated the same way: the reduced base applies to the days
  after P. A balance of zero or less (paid, overpaid) accrues nothing.
* **365-day year, leap years included.** French practice divides by 365 whatever the year, so 29 February 2028 is
  one more day at 1/365 of the annual rate; the same convention is used for every currency.
* **Semesters.** With the ``reference`` basis, each day accrues at the reference rate in force on the first day of
  its own semester (1 January to 30 June, 1 July to 31 December) plus the policy's margin, so a delay spanning semesters
  changes rate on 1 January and 1 July. With the ``contractual`` basis, the agreed rate applies to every day.

The reference rates are data (:class:`RateTable`): the ECB main refinancing rates shipped in ``rates/ecb.csv``,
extended or corrected by the file named by ``RELANCE_RATES_FILE``. A semester missing from the table is an error,
never a rate of zero, and never the last known rate carried on. Because a new semester's rate is known only when it
begins, :meth:`RateTable.gaps` says which semester around a date still lacks one, so the workers, ``relance rates
check`` and the agenda can warn weeks before the first interest computation fails.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import structlog

from services.escalation.errors import EscalationError
from services.escalation.model import InterestRule, Policy
from shared.config import ConfigurationError
from shared.contracts.erp import minor_units

log = structlog.get_logger()

SHIPPED_RATES = Path(__file__).with_name("rates") / "ecb.csv"
DAYS_IN_YEAR = 365
_DISPLAY = Decimal("1e-10")  # places kept in the unrounded figures shown per period
_RATE = re.compile(r"^-?\d{1,3}(\.\d{1,6})?$")
RATES_WARNING_DAYS = 45  # how long before a semester without a rate begins the workers and the agenda warn


class MissingReferenceRate(EscalationError, LookupError):
    """The rate table has no row for a semester that interest must be computed over; extend the table."""

    def __init__(self, semester: date) -> None:
        super().__init__(
            f"no reference rate for the semester starting {semester.isoformat()}: add a row "
            f'"{rate_line(semester)}" to the file named by RELANCE_RATES_FILE '
            "(the reference rate in force on that day)"
        )
        self.semester = semester


def rate_line(semester: date) -> str:
    """The CSV row a user adds for ``semester``, the rate left for them to fill in: relance never guesses it."""
    return f"{semester.isoformat()},<rate in percent>"


def semester_start(day: date) -> date:
    """1 January or 1 July: the day whose reference rate applies to ``day``."""
    return date(day.year, 1 if day.month <= 6 else 7, 1)


@dataclass(frozen=True, slots=True)
class RateRow:
    """One semester of the table in effect, and where its rate comes from."""

    semester: date
    rate: Decimal
    source: str  # the file the rate was read from ("" for a table built in code)
    replaces: tuple[Decimal, str] | None = None  # the rate and file an override replaced


@dataclass(frozen=True, slots=True)
class RateGap:
    """A semester, starting ``days_left`` days after the day checked (0 or less: already begun), with no rate."""

    semester: date
    days_left: int

    @property
    def begun(self) -> bool:
        return self.days_left <= 0


class RateTable:
    """Reference rates (annual percent) by semester: the rate in force on 1 January or 1 July of each semester."""

    def __init__(self, rates: Mapping[date, Decimal], rows: Mapping[date, RateRow] | None = None) -> None:
        for semester in rates:
            if semester != semester_start(semester):
                raise ValueError(f"{semester.isoformat()} is not the first day of a semester (1 January or 1 July)")
        self._rates = dict(sorted(rates.items()))
        known = rows or {}
        self._rows = {s: known.get(s) or RateRow(s, rate, "") for s, rate in self._rates.items()}

    @classmethod
    def load(cls, *paths: Path) -> RateTable:
        """Read CSV files of ``semester_start,rate`` rows; a later file's row replaces an earlier one's."""
        rates: dict[date, Decimal] = {}
        rows: dict[date, RateRow] = {}
        for path in paths:
            for semester, rate in _read_rates(path).items():
                earlier = rows.get(semester)
                if earlier is not None and earlier.rate != rate:
                    log.warning(
                        "escalation.reference_rate_replaced",
                        semester=semester.isoformat(),
                        shipped=str(earlier.rate),
                        rate=str(rate),
                        file=str(path),
                    )
                replaces = None if earlier is None else (earlier.rate, earlier.source)
                rates[semester] = rate
                rows[semester] = RateRow(semester, rate, str(path), replaces)
        return cls(rates, rows)

    @classmethod
    def default(cls, extra: Path | None = None) -> RateTable:
        """The shipped ECB table, extended by the user's file (``RELANCE_RATES_FILE``) when there is one."""
        return cls.load(SHIPPED_RATES, *([extra] if extra is not None else []))

    def rate_for(self, day: date) -> Decimal:
        """The reference rate applying to ``day``: the one in force on the first day of its semester."""
        semester = semester_start(day)
        try:
            return self._rates[semester]
        except KeyError:
            raise MissingReferenceRate(semester) from None

    def semesters(self) -> dict[date, Decimal]:
        return dict(self._rates)

    def rows(self) -> list[RateRow]:
        """Every semester of the table, oldest first, with the file its rate comes from."""
        return list(self._rows.values())

    def has(self, semester: date) -> bool:
        return semester in self._rates

    def gaps(self, on: date, within_days: int) -> list[RateGap]:
        """The semesters without a rate among ``on``'s own and those beginning within ``within_days`` after it.

        Only the present and the near future: a semester before ``on``'s is reported by the interest computations
        that need it (an invoice older than the table), not as a deadline.
        """
        horizon = _days_after(on, within_days)
        semester: date | None = semester_start(on)
        gaps = []
        while semester is not None and semester <= horizon:
            if semester not in self._rates:
                gaps.append(RateGap(semester, (semester - on).days))
            semester = _next_semester(semester)
        return gaps


def warn_missing_rates(rates: RateTable, on: date, within_days: int = RATES_WARNING_DAYS) -> list[RateGap]:
    """Log each semester without a rate around ``on``: ``rates.missing`` once begun, else ``rates.missing_soon``."""
    gaps = rates.gaps(on, within_days)
    for gap in gaps:
        fields = {"semester": gap.semester.isoformat(), "days_left": gap.days_left, "add": rate_line(gap.semester)}
        if gap.begun:
            log.error("rates.missing", **fields, note="interest on days of this semester cannot be computed")
        else:
            log.warning("rates.missing_soon", **fields, note="add the rate by the first day of the semester")
    return gaps


def _next_semester(semester: date) -> date | None:
    if semester.month == 1:
        return date(semester.year, 7, 1)
    return None if semester.year == date.max.year else date(semester.year + 1, 1, 1)


def _days_after(day: date, days: int) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max


def _read_rates(path: Path) -> dict[date, Decimal]:
    def fail(line: int, message: str) -> ConfigurationError:
        return ConfigurationError(f"{path}, line {line}: {message}")

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the rate table ({exc.strerror or exc})") from None
    rates: dict[date, Decimal] = {}
    rows = [(number, row) for number, row in enumerate(csv.reader(text.splitlines()), start=1)]
    for number, row in rows:
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if cells[:2] == ["semester_start", "rate"]:
            continue
        if len(cells) != 2:
            raise fail(number, f"expected two columns, semester_start,rate (e.g. 2025-07-01,2.15), got {row!r}")
        try:
            semester = date.fromisoformat(cells[0])
        except ValueError:
            raise fail(number, f"{cells[0]!r} is not an ISO date such as 2025-07-01") from None
        if semester != semester_start(semester):
            raise fail(number, f"{cells[0]} is not the first day of a semester: use YYYY-01-01 or YYYY-07-01")
        if not _RATE.match(cells[1]):
            raise fail(number, f"rate {cells[1]!r} must be a percentage written as a decimal, e.g. 2.15")
        rate = Decimal(cells[1])
        if not Decimal("-10") <= rate <= Decimal("100"):
            raise fail(number, f"rate {rate} is outside -10..100 percent")
        if semester in rates:
            raise fail(number, f"{semester.isoformat()} is listed twice in this file")
        rates[semester] = rate
    return rates


@dataclass(frozen=True, slots=True)
class InterestPeriod:
    """Consecutive days accrued on the same base at the same rate."""

    start: date  # first day accrued
    end: date  # last day accrued, inclusive
    days: int
    base: Decimal  # amount outstanding, including tax
    annual_rate: Decimal  # percent
    raw_amount: Decimal  # unrounded interest of the period (ten places, for display)


@dataclass(frozen=True, slots=True)
class InterestResult:
    currency: str
    amount: Decimal  # rounded half-up to the currency's minor unit, once, on the exact total
    periods: tuple[InterestPeriod, ...]
    exact: Fraction  # the exact unrounded total, for audit and for checks that splitting a delay changes nothing

    @property
    def days(self) -> int:
        return sum(period.days for period in self.periods)


def late_interest(
    timeline: Sequence[tuple[date, Decimal]],
    due_date: date,
    through: date,
    rule: InterestRule,
    rates: RateTable | None,
    currency: str,
    *,
    after: date | None = None,
) -> InterestResult:
    """Late interest owed on one invoice for the days after ``due_date`` up to and including ``through``.

    ``timeline`` lists ``(date, amount outstanding from that date on)``, in any order, and must begin on or before
    the due date (typically the invoice date with its full amount). ``after`` skips the days up to and including it:
    interest already charged through that date, so that charges made at different times add up to the whole.
    ``rates`` may be ``None`` only with a contractual rate.
    """
    if not timeline:
        raise ValueError("the timeline is empty: give at least the amount outstanding on the due date")
    changes = sorted(timeline)
    if changes[0][0] > due_date:
        raise ValueError(
            f"the timeline begins on {changes[0][0].isoformat()}, after the due date {due_date.isoformat()}: "
            "give the amount outstanding on the due date"
        )
    first = due_date + timedelta(days=1)
    if after is not None:
        first = max(first, after + timedelta(days=1))

    spans: list[tuple[date, date, Decimal, Decimal]] = []  # (first day, last day, base, annual rate)
    index = 0
    base = Decimal(0)
    day = first
    while day <= through:
        # The base of ``day`` is the balance at the end of the previous day.
        while index < len(changes) and changes[index][0] < day:
            base = max(changes[index][1], Decimal(0))
            index += 1
        rate = _annual_rate(day, rule, rates)
        # The span runs until the rate (a new semester) or the base (the next balance change) may change.
        end = _semester_end(day) if rule.basis == "reference" else through
        if index < len(changes):
            end = min(end, changes[index][0])
        end = min(end, through)
        if spans and spans[-1][1] + timedelta(days=1) == day and spans[-1][2:] == (base, rate):
            spans[-1] = (spans[-1][0], end, base, rate)  # a change that left base and rate as they were
        elif base > 0:
            spans.append((day, end, base, rate))
        day = end + timedelta(days=1)

    periods: list[InterestPeriod] = []
    exact = Fraction(0)
    for start, end, base, rate in spans:
        days = (end - start).days + 1
        accrued = Fraction(base) * Fraction(rate) * days / (100 * DAYS_IN_YEAR)
        exact += accrued
        periods.append(InterestPeriod(start, end, days, base, rate, _display(accrued)))
    return InterestResult(currency=currency, amount=round_half_up(exact, currency), periods=tuple(periods), exact=exact)


def _annual_rate(day: date, rule: InterestRule, rates: RateTable | None) -> Decimal:
    if rule.basis == "contractual":
        if rule.rate is None:
            raise ValueError("a contractual interest rule needs a rate")
        return rule.rate
    if rates is None:
        raise ValueError("interest at the reference rate needs a rate table")
    return rates.rate_for(day) + rule.margin


def _semester_end(day: date) -> date:
    return date(day.year, 6, 30) if day.month <= 6 else date(day.year, 12, 31)


def _display(value: Fraction) -> Decimal:
    return _quantize(value, _DISPLAY)


def round_half_up(value: Fraction | Decimal, currency: str) -> Decimal:
    """``value`` rounded half-up (away from zero on a tie) to the currency's minor unit: EUR 0.01, JPY 1."""
    return _quantize(Fraction(value), Decimal(1).scaleb(-minor_units(currency)))


def _quantize(value: Fraction, unit: Decimal) -> Decimal:
    steps = value / Fraction(unit)
    sign = -1 if steps < 0 else 1
    whole, remainder = divmod(abs(steps.numerator), steps.denominator)
    if 2 * remainder >= steps.denominator:
        whole += 1
    return (Decimal(sign * whole) * unit).quantize(unit)


def fixed_fee(policy: Policy, currency: str) -> Decimal | None:
    """The fixed recovery fee owed once per late invoice in ``currency``, or None when the policy sets none.

    Not subject to VAT and not part of the interest base; due in full even on a partly paid invoice (CJEU C-585/20).
    """
    fee = policy.fixed_fee.get(currency)
    return None if fee is None else round_half_up(fee, currency)


def outstanding_timeline(
    amount: Decimal, movements: Iterable[tuple[date, Decimal]], start: date
) -> list[tuple[date, Decimal]]:
    """Build a timeline from the invoiced ``amount`` on ``start`` and dated reductions (payments, credit notes)."""
    timeline = [(start, amount)]
    balance = amount
    for day, reduction in sorted(movements):
        balance -= reduction
        timeline.append((day, balance))
    return timeline
