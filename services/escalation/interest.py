"""Late-payment interest (French Code de commerce L441-10, Directive 2011/7/EU, the UK's 1998 Act) and its rate tables.

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
* **Semesters.** With the ``reference`` basis, each day accrues at the reference rate of its own semester (1 January
  to 30 June, 1 July to 31 December) plus the policy's margin, so a delay spanning semesters changes rate on 1 January
  and 1 July: the ECB's in force on the semester's first day, or the Bank of England's in force on the reference day
  before it (31 December, 30 June) under English law. With the ``contractual`` basis, the agreed rate applies to every
  day; under French law an agreed rate gives way, on the days of a semester where it is lower, to three times that
  semester's legal interest rate (``InterestRule.floor``).

The rates are data (:class:`RateTable`): the ECB main refinancing rates, the Bank of England Bank Rate and the French
legal interest rate shipped in ``rates/`` (:data:`SERIES`), extended or corrected by the file named by
``RELANCE_RATES_FILE``. A semester missing from a table is an error, never a rate of zero, and never the last known
rate carried on. Because a new semester's rate is known only when it begins, :meth:`RateTable.gaps` says which
semester around a date still lacks one, so the workers, ``relance rates check`` and the agenda can warn weeks before
the first interest computation fails. The law a policy follows, and its fixed sums, are :mod:`services.escalation.law`.
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
from services.escalation.model import InterestRule
from shared.config import ConfigurationError
from shared.contracts.erp import minor_units

log = structlog.get_logger()

RATES_DIR = Path(__file__).with_name("rates")
SHIPPED_RATES = RATES_DIR / "ecb.csv"
DAYS_IN_YEAR = 365
_DISPLAY = Decimal("1e-10")  # places kept in the unrounded figures shown per period
_RATE = re.compile(r"^-?\d{1,3}(\.\d{1,6})?$")
FLOOR_TIMES_LEGAL_RATE = 3  # French law: an agreed rate is at least three times the legal interest rate (L441-10)
RATES_WARNING_DAYS = 45  # how long before a semester without a rate begins the workers and the agenda warn

ECB = "ecb"  # ECB main refinancing rate, in force on each semester's first day (France, EU)
BOE = "boe"  # Bank of England Bank Rate, in force on 31 December / 30 June (England and Wales, the 1998 Act)
LEGAL_FR = "legal-fr"  # French legal interest rate, creditors other than individuals, per semester (the 3x floor)


@dataclass(frozen=True, slots=True)
class Series:
    """One table of rates: its name in a CSV row, what it is, its shipped file and how its rows are dated."""

    key: str
    title: str
    file: Path
    dated_by_reference_day: bool  # True: a row is dated 30 June / 31 December and applies to the next semester


SERIES: dict[str, Series] = {
    ECB: Series(ECB, "ECB main refinancing rate", SHIPPED_RATES, False),
    BOE: Series(BOE, "Bank of England Bank Rate", RATES_DIR / "boe.csv", True),
    LEGAL_FR: Series(
        LEGAL_FR, "French legal interest rate (creditors other than individuals)", RATES_DIR / "legal-fr.csv", False
    ),
}


class MissingReferenceRate(EscalationError, LookupError):
    """The rate table has no row for a semester that interest must be computed over; extend the table."""

    def __init__(self, semester: date, series: str = ECB) -> None:
        what = "reference rate" if series == ECB else SERIES[series].title
        on = "that day" if series == ECB else row_date(semester, series).isoformat()
        super().__init__(
            f"no {what} for the semester starting {semester.isoformat()}: add a row "
            f'"{rate_line(semester, series)}" to the file named by RELANCE_RATES_FILE (the rate in force on {on})'
        )
        self.semester = semester
        self.series = series
        self.advice = (
            f"no {what} for the semester starting {semester.isoformat()} in the rate table; add the row "
            f'"{rate_line(semester, series)}" (the official rate in force on {on})'
        )


def row_date(semester: date, series: str = ECB) -> date:
    """The date a row of ``series`` is written with for ``semester``: the semester's first day, or for the Bank of
    England the reference day before it (31 December for January-June, 30 June for July-December)."""
    return semester - timedelta(days=1) if SERIES[series].dated_by_reference_day else semester


def rate_line(semester: date, series: str = ECB) -> str:
    """The CSV row a user adds for ``semester``, the rate left for them to fill in: relance never guesses it.

    An ECB row keeps the two columns of the original format; the other tables' rows name their table first.
    """
    cells = f"{row_date(semester, series).isoformat()},<rate in percent>"
    return cells if series == ECB else f"{series},{cells}"


def semester_start(day: date) -> date:
    """1 January or 1 July: the day whose reference rate applies to ``day``."""
    return date(day.year, 1 if day.month <= 6 else 7, 1)


@dataclass(frozen=True, slots=True)
class RateRow:
    """One semester of the table in effect, and where its rate comes from."""

    semester: date  # the first day of the semester the rate applies to
    rate: Decimal
    source: str  # the file the rate was read from ("" for a table built in code)
    replaces: tuple[Decimal, str] | None = None  # the rate and file an override replaced
    series: str = ECB

    @property
    def dated(self) -> date:
        """The date the row is written with in its file (see :func:`row_date`)."""
        return row_date(self.semester, self.series)


@dataclass(frozen=True, slots=True)
class RateGap:
    """A semester, starting ``days_left`` days after the day checked (0 or less: already begun), with no rate."""

    semester: date
    days_left: int
    series: str = ECB

    @property
    def begun(self) -> bool:
        return self.days_left <= 0


class RateTable:
    """Rates (annual percent) by semester: the ECB's (``rates``), and the other tables of :data:`SERIES` by name.

    Every table is keyed by the first day of the semester its rate applies to; only a file's rows of the Bank of
    England table are dated otherwise (the reference day before the semester, :func:`row_date`).
    """

    def __init__(
        self,
        rates: Mapping[date, Decimal],
        rows: Mapping[tuple[str, date], RateRow] | None = None,
        *,
        series: Mapping[str, Mapping[date, Decimal]] | None = None,
    ) -> None:
        tables = {ECB: rates, **(series or {})}
        self._tables: dict[str, dict[date, Decimal]] = {}
        known = rows or {}
        self._rows: dict[tuple[str, date], RateRow] = {}
        for name, table in tables.items():
            if name not in SERIES:
                raise ValueError(f"{name!r} is not a rate table ({', '.join(SERIES)})")
            for semester in table:
                if semester != semester_start(semester):
                    raise ValueError(f"{semester.isoformat()} is not the first day of a semester (1 January or 1 July)")
            self._tables[name] = dict(sorted(table.items()))
            for s, rate in self._tables[name].items():
                self._rows[(name, s)] = known.get((name, s)) or RateRow(s, rate, "", series=name)
        self._rates = self._tables[ECB]

    @classmethod
    def load(cls, *paths: Path, series: str = ECB) -> RateTable:
        """Read CSV files of rate rows; a later file's row replaces an earlier one's.

        A row of two columns, ``date,rate``, belongs to ``series``; a row of three, ``table,date,rate``, names its
        table (``ecb``, ``boe``, ``legal-fr``).
        """
        return cls._from_files([(path, series) for path in paths])

    @classmethod
    def _from_files(cls, files: Iterable[tuple[Path, str]]) -> RateTable:
        tables: dict[str, dict[date, Decimal]] = {}
        rows: dict[tuple[str, date], RateRow] = {}
        for path, default_series in files:
            for (name, semester), rate in _read_rates(path, default_series).items():
                earlier = rows.get((name, semester))
                if earlier is not None and earlier.rate != rate:
                    log.warning(
                        "escalation.reference_rate_replaced",
                        table=name,
                        semester=semester.isoformat(),
                        shipped=str(earlier.rate),
                        rate=str(rate),
                        file=str(path),
                    )
                replaces = None if earlier is None else (earlier.rate, earlier.source)
                tables.setdefault(name, {})[semester] = rate
                rows[(name, semester)] = RateRow(semester, rate, str(path), replaces, name)
        return cls(tables.pop(ECB, {}), rows, series=tables)

    @classmethod
    def default(cls, extra: Path | None = None) -> RateTable:
        """The shipped tables (ECB, Bank of England, French legal rate), extended by the user's file
        (``RELANCE_RATES_FILE``, whose two-column rows are ECB rows) when there is one."""
        shipped = [(table.file, key) for key, table in SERIES.items()]
        return cls._from_files([*shipped, *([(extra, ECB)] if extra is not None else [])])

    def rate_for(self, day: date, series: str = ECB) -> Decimal:
        """The rate of ``series`` applying to ``day``: for its semester (in force on its first day, or for the Bank
        of England on the reference day before it)."""
        semester = semester_start(day)
        try:
            return self._tables.get(series, {})[semester]
        except KeyError:
            raise MissingReferenceRate(semester, series) from None

    def semesters(self, series: str = ECB) -> dict[date, Decimal]:
        return dict(self._tables.get(series, {}))

    def tables(self) -> list[str]:
        """The tables holding at least one rate, in the order of :data:`SERIES`."""
        return [name for name in SERIES if self._tables.get(name)]

    def rows(self, series: str | None = ECB) -> list[RateRow]:
        """Every semester of ``series`` (every table's with None), oldest first, with the file its rate comes from."""
        return [
            row
            for (name, _), row in sorted(
                self._rows.items(), key=lambda item: (list(SERIES).index(item[0][0]), item[0][1])
            )
            if series is None or name == series
        ]

    def has(self, semester: date, series: str = ECB) -> bool:
        return semester in self._tables.get(series, {})

    def gaps(self, on: date, within_days: int, series: str | Iterable[str] | None = ECB) -> list[RateGap]:
        """The semesters without a rate among ``on``'s own and those beginning within ``within_days`` after it.

        Only the present and the near future: a semester before ``on``'s is reported by the interest computations
        that need it (an invoice older than the table), not as a deadline. ``series`` None checks every table that
        holds a rate.
        """
        names = self.tables() if series is None else [series] if isinstance(series, str) else list(series)
        horizon = _days_after(on, within_days)
        gaps = []
        for name in names:
            semester: date | None = semester_start(on)
            while semester is not None and semester <= horizon:
                if not self.has(semester, name):
                    gaps.append(RateGap(semester, (semester - on).days, name))
                semester = _next_semester(semester)
        return gaps


def warn_missing_rates(
    rates: RateTable, on: date, within_days: int = RATES_WARNING_DAYS, series: str | Iterable[str] | None = None
) -> list[RateGap]:
    """Log each semester without a rate around ``on``: ``rates.missing`` once begun, else ``rates.missing_soon``."""
    gaps = rates.gaps(on, within_days, series)
    for gap in gaps:
        fields = {
            "table": gap.series,
            "semester": gap.semester.isoformat(),
            "days_left": gap.days_left,
            "add": rate_line(gap.semester, gap.series),
        }
        if gap.begun:
            log.error("rates.missing", **fields, note="interest on days of this semester cannot be computed")
        else:
            log.warning("rates.missing_soon", **fields, note="add the rate by the first day of the semester")
    return gaps


def days_left(rates: RateTable, on: date, series: str = ECB) -> int:
    """Days from ``on`` to the first semester, ``on``'s own or a later one, the table has no rate for (0 or less:
    ``on``'s semester has none): how long interest can still be computed without a new line in the table."""
    semester: date | None = semester_start(on)
    while semester is not None and rates.has(semester, series):
        semester = _next_semester(semester)
    return (semester - on).days if semester is not None else (date.max - on).days


def _next_semester(semester: date) -> date | None:
    if semester.month == 1:
        return date(semester.year, 7, 1)
    return None if semester.year == date.max.year else date(semester.year + 1, 1, 1)


def _days_after(day: date, days: int) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max


def _read_rates(path: Path, default_series: str = ECB) -> dict[tuple[str, date], Decimal]:
    def fail(line: int, message: str) -> ConfigurationError:
        return ConfigurationError(f"{path}, line {line}: {message}")

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the rate table ({exc.strerror or exc})") from None
    rates: dict[tuple[str, date], Decimal] = {}
    rows = [(number, row) for number, row in enumerate(csv.reader(text.splitlines()), start=1)]
    for number, row in rows:
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if cells[-1] == "rate":
            continue  # a header: semester_start,rate / reference_date,rate / table,date,rate
        if len(cells) == 3:
            name, cells = cells[0], cells[1:]
            if name not in SERIES:
                raise fail(
                    number,
                    "expected two columns, date,rate (e.g. 2025-07-01,2.15), or three naming the table first "
                    f"(e.g. boe,2025-12-31,3.75): {name!r} is not a rate table ({', '.join(SERIES)}), got {row!r}",
                )
        elif len(cells) == 2:
            name = default_series
        else:
            raise fail(
                number,
                f"expected date,rate (e.g. 2025-07-01,2.15) or table,date,rate (e.g. boe,2025-12-31,3.75), got {row!r}",
            )
        try:
            day = date.fromisoformat(cells[0])
        except ValueError:
            raise fail(number, f"{cells[0]!r} is not an ISO date such as 2025-07-01") from None
        semester = _row_semester(day, name)
        if semester is None:
            if SERIES[name].dated_by_reference_day:
                message = "is not a reference day of the Bank of England table: use YYYY-06-30 or YYYY-12-31"
            else:
                message = "is not the first day of a semester: use YYYY-01-01 or YYYY-07-01"
            raise fail(number, f"{cells[0]} {message}")
        if not _RATE.match(cells[1]):
            raise fail(number, f"rate {cells[1]!r} must be a percentage written as a decimal, e.g. 2.15")
        rate = Decimal(cells[1])
        if not Decimal("-10") <= rate <= Decimal("100"):
            raise fail(number, f"rate {rate} is outside -10..100 percent")
        if (name, semester) in rates:
            raise fail(number, f"{day.isoformat()} is listed twice in this file")
        rates[(name, semester)] = rate
    return rates


def _row_semester(day: date, series: str) -> date | None:
    """The semester a row dated ``day`` applies to, or None when ``day`` is not a date such a row may have."""
    if SERIES[series].dated_by_reference_day:
        if (day.month, day.day) not in ((6, 30), (12, 31)) or day == date.max:
            return None
        return day + timedelta(days=1)
    return day if day == semester_start(day) else None


@dataclass(frozen=True, slots=True)
class InterestPeriod:
    """Consecutive days accrued on the same base at the same rate."""

    start: date  # first day accrued
    end: date  # last day accrued, inclusive
    days: int
    base: Decimal  # amount outstanding, including tax
    annual_rate: Decimal  # percent
    raw_amount: Decimal  # unrounded interest of the period (ten places, for display)
    reference: Decimal | None = None  # the reference rate the annual rate was built on (None: an agreed rate)
    margin: Decimal | None = None  # the points added to it


@dataclass(frozen=True, slots=True)
class DayRate:
    """The annual rate of one day, and what it is made of (reference and margin, None for an agreed rate)."""

    rate: Decimal
    reference: Decimal | None = None
    margin: Decimal | None = None


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

    spans: list[tuple[date, date, Decimal, DayRate]] = []  # (first day, last day, base, annual rate)
    index = 0
    base = Decimal(0)
    day = first
    while day <= through:
        # The base of ``day`` is the balance at the end of the previous day.
        while index < len(changes) and changes[index][0] < day:
            base = max(changes[index][1], Decimal(0))
            index += 1
        rate = day_rate(day, rule, rates)
        # The span runs until the rate (a new semester) or the base (the next balance change) may change.
        end = _semester_end(day) if rule.basis == "reference" or rule.floor else through
        if index < len(changes):
            end = min(end, changes[index][0])
        end = min(end, through)
        if spans and spans[-1][1] + timedelta(days=1) == day and spans[-1][2:] == (base, rate):
            spans[-1] = (spans[-1][0], end, base, rate)  # a change that left base and rate as they were
        elif base > 0:
            spans.append((day, end, base, rate))
        day = end + timedelta(days=1)

    periods: list[InterestPeriod] = []
    total, over = 0, 1  # the exact total, total / over, in integers (a Fraction per span costs more than the rest)
    for start, end, base, rate in spans:
        days = (end - start).days + 1
        base_n, base_d = base.as_integer_ratio()
        rate_n, rate_d = rate.rate.as_integer_ratio()
        accrued, under = base_n * rate_n * days, base_d * rate_d * 100 * DAYS_IN_YEAR  # exactly accrued / under
        total, over = (total + accrued, over) if under == over else (total * under + accrued * over, over * under)
        raw = _quantize(accrued, under, _DISPLAY)
        periods.append(InterestPeriod(start, end, days, base, rate.rate, raw, rate.reference, rate.margin))
    exact = Fraction(total, over)
    return InterestResult(currency=currency, amount=round_half_up(exact, currency), periods=tuple(periods), exact=exact)


def needs_rates(rule: InterestRule) -> bool:
    """Whether interest under ``rule`` needs a rate table: a reference rate, or the French floor on an agreed rate."""
    return rule.basis == "reference" or rule.floor


def day_rate(day: date, rule: InterestRule, rates: RateTable | None) -> DayRate:
    """The annual rate of ``day`` under ``rule`` (raises :class:`MissingReferenceRate` for a semester the table lacks).

    With ``rule.floor`` (French law, an agreed rate), a rate below three times the legal interest rate of the day's
    semester gives way to that floor (L441-10), which is then an agreed rate of its own (no reference, no margin).
    """
    if needs_rates(rule) and rates is None:
        raise ValueError("interest at the reference rate, or under the French floor, needs a rate table")
    if rule.basis == "contractual":
        if rule.rate is None:
            raise ValueError("a contractual interest rule needs a rate")
        found = DayRate(rule.rate)
    else:
        assert rates is not None
        reference = rates.rate_for(day, rule.reference)
        found = DayRate(reference + rule.margin, reference, rule.margin)
    if rule.floor:
        assert rates is not None
        floor = FLOOR_TIMES_LEGAL_RATE * rates.rate_for(day, LEGAL_FR)
        if found.rate < floor:
            return DayRate(floor)
    return found


def _semester_end(day: date) -> date:
    return date(day.year, 6, 30) if day.month <= 6 else date(day.year, 12, 31)


def round_half_up(value: Fraction | Decimal, currency: str) -> Decimal:
    """``value`` rounded half-up (away from zero on a tie) to the currency's minor unit: EUR 0.01, JPY 1."""
    numerator, denominator = value.as_integer_ratio()
    return _quantize(numerator, denominator, Decimal(1).scaleb(-minor_units(currency)))


def _quantize(numerator: int, denominator: int, unit: Decimal) -> Decimal:
    """``numerator / denominator`` (``denominator`` > 0, the ratio in any terms) rounded half-up to ``unit``."""
    unit_n, unit_d = unit.as_integer_ratio()
    steps, per = numerator * unit_d, denominator * unit_n  # the value in units: steps / per, per > 0
    whole, remainder = divmod(abs(steps), per)
    if 2 * remainder >= per:
        whole += 1
    sign = -1 if steps < 0 else 1
    return (Decimal(sign * whole) * unit).quantize(unit)


def outstanding_timeline(
    amount: Decimal, movements: Iterable[tuple[date, Decimal]], start: date
) -> list[tuple[date, Decimal]]:
    """Build a timeline from the invoiced ``amount`` on ``start`` and dated reductions (payments, credit notes).

    A reduction dated before ``start`` (a deposit, paid before the invoice was issued) lowers the amount from the
    start: the timeline never shows the invoice at its full amount once part of it was already paid.
    """
    movements = sorted(movements)
    balance = amount - sum((reduction for day, reduction in movements if day < start), Decimal(0))
    timeline = [(start, balance)]
    for day, reduction in movements:
        if day >= start:
            balance -= reduction
            timeline.append((day, balance))
    return timeline
