"""Late interest against hand-worked figures, and the properties any correct accrual must have.

Every figure below is worked by hand in the comments: ``base * rate% * days / 365``, summed over the periods, then
rounded half-up once. ECB rates used (shipped table): 2025 H1 3.15, 2025 H2 2.15, 2026 H1 2.15.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.escalation.interest import (
    InterestPeriod,
    MissingReferenceRate,
    RateTable,
    late_interest,
    outstanding_timeline,
    round_half_up,
)
from services.escalation.model import InterestRule
from shared.config import ConfigurationError

ECB = RateTable.default()
FRANCE = InterestRule()  # ECB + 10 points
D = Decimal


def test_one_semester() -> None:
    # Given EUR 1,200.00 due 2025-03-10, unpaid, at ECB 3.15 + 10 = 13.15 %
    timeline = [(date(2025, 2, 8), D("1200.00"))]
    # When interest is computed through 2025-04-09 (11-31 March: 21 days, 1-9 April: 9 days, 30 days)
    result = late_interest(timeline, date(2025, 3, 10), date(2025, 4, 9), FRANCE, ECB, "EUR")
    # Then 1200 * 0.1315 * 30 / 365 = 4734 / 365 = 12.969863... -> 12.97
    assert result.periods == (
        InterestPeriod(
            date(2025, 3, 11), date(2025, 4, 9), 30, D("1200.00"), D("13.15"), D("12.9698630137"), D("3.15"), D("10")
        ),
    )
    assert result.exact == Fraction(4734, 365)
    assert result.amount == D("12.97")


def test_a_delay_spanning_two_semesters_changes_rate_on_1_july() -> None:
    # Given EUR 1,000.00 due 2025-06-15 and paid in full on 2025-07-20
    timeline = [(date(2025, 5, 1), D("1000.00")), (date(2025, 7, 20), D("0"))]
    # When interest is computed through the payment date
    result = late_interest(timeline, date(2025, 6, 15), date(2025, 7, 20), FRANCE, ECB, "EUR")
    # Then 16-30 June: 15 days at 3.15 + 10 = 13.15 %: 1000 * 0.1315 * 15 / 365 = 1972.5 / 365 = 5.404109...
    # and 1-20 July: 20 days at 2.15 + 10 = 12.15 %: 1000 * 0.1215 * 20 / 365 = 2430 / 365 = 6.657534...
    # total 4402.5 / 365 = 12.061643... -> 12.06, over 35 days (= 20 July - 15 June: the payment day counts)
    assert [(p.start, p.end, p.days, p.annual_rate) for p in result.periods] == [
        (date(2025, 6, 16), date(2025, 6, 30), 15, D("13.15")),
        (date(2025, 7, 1), date(2025, 7, 20), 20, D("12.15")),
    ]
    assert [p.raw_amount for p in result.periods] == [D("5.4041095890"), D("6.6575342466")]
    assert result.exact == Fraction(44025, 3650)
    assert result.amount == D("12.06")
    assert result.days == 35


def test_a_partial_payment_reduces_the_base_after_its_day() -> None:
    # Given EUR 1,000.00 due 2025-06-15, of which 600.00 paid on 2025-07-05
    timeline = outstanding_timeline(D("1000.00"), [(date(2025, 7, 5), D("600.00"))], date(2025, 5, 1))
    # When interest is computed through 2025-07-20
    result = late_interest(timeline, date(2025, 6, 15), date(2025, 7, 20), FRANCE, ECB, "EUR")
    # Then 16-30 June, 15 days on 1000 at 13.15 %: 1972.5 / 365 = 5.404109...
    #      1-5 July,    5 days on 1000 at 12.15 %:  607.5 / 365 = 1.664383...  (the payment day still counts)
    #      6-20 July,  15 days on  400 at 12.15 %:  729   / 365 = 1.997260...
    # total 3309 / 365 = 9.065753... -> 9.07
    assert [(p.start, p.end, p.days, p.base, p.annual_rate) for p in result.periods] == [
        (date(2025, 6, 16), date(2025, 6, 30), 15, D("1000.00"), D("13.15")),
        (date(2025, 7, 1), date(2025, 7, 5), 5, D("1000.00"), D("12.15")),
        (date(2025, 7, 6), date(2025, 7, 20), 15, D("400.00"), D("12.15")),
    ]
    assert result.exact == Fraction(3309, 365)
    assert result.amount == D("9.07")


def test_a_payment_on_or_before_the_due_date_owes_nothing() -> None:
    # Given an invoice paid in full on its due date
    timeline = [(date(2025, 5, 1), D("1000.00")), (date(2025, 6, 15), D("0"))]
    # When interest is computed well after
    result = late_interest(timeline, date(2025, 6, 15), date(2025, 8, 1), FRANCE, ECB, "EUR")
    # Then nothing is owed, and no period is listed
    assert result.amount == D("0.00")
    assert result.periods == ()


def test_a_contractual_rate_ignores_semesters_and_the_table() -> None:
    # Given EUR 5,000.00 due 2025-12-20 under a contractual 12 % (no rate table at all)
    rule = InterestRule(basis="contractual", rate=D("12"))
    # When interest is computed through 2026-01-19, across the new year
    result = late_interest(
        [(date(2025, 11, 20), D("5000.00"))], date(2025, 12, 20), date(2026, 1, 19), rule, None, "EUR"
    )
    # Then one period of 30 days: 5000 * 0.12 * 30 / 365 = 18000 / 365 = 49.315068... -> 49.32
    assert [(p.days, p.annual_rate) for p in result.periods] == [(30, D("12"))]
    assert result.amount == D("49.32")


def test_rounding_happens_once_on_the_total_not_per_period() -> None:
    # Given EUR 1,200.00 due 2025-06-20, unpaid through 2025-07-10
    result = late_interest([(date(2025, 6, 1), D("1200.00"))], date(2025, 6, 20), date(2025, 7, 10), FRANCE, ECB, "EUR")
    # Then 21-30 June: 1200 * 0.1315 * 10 / 365 = 1578 / 365 = 4.323287... (would round to 4.32)
    #      1-10 July:  1200 * 0.1215 * 10 / 365 = 1458 / 365 = 3.994520... (would round to 3.99)
    # Rounded per period: 4.32 + 3.99 = 8.31; rounded once: 3036 / 365 = 8.317808... -> 8.32
    per_period = sum(round_half_up(Fraction(p.raw_amount), "EUR") for p in result.periods)
    assert per_period == D("8.31")
    assert result.amount == D("8.32")


def test_yen_rounds_half_up_to_whole_units() -> None:
    # Given JPY 25 at a contractual 10 % for a whole non-leap year (2025-01-01 to 2026-01-01: 365 days)
    rule = InterestRule(basis="contractual", rate=D("10"))
    result = late_interest([(date(2024, 12, 1), D("25"))], date(2025, 1, 1), date(2026, 1, 1), rule, None, "JPY")
    # Then 25 * 0.10 * 365 / 365 = 2.5 exactly: a tie, rounded up to 3 (half-even would give 2), no decimals
    assert result.exact == Fraction(5, 2)
    assert result.amount == D("3")
    assert result.amount.as_tuple().exponent == 0


def test_yen_at_the_reference_rate() -> None:
    # Given JPY 1,000,000 due 2025-03-10, 30 days late at 13.15 %
    result = late_interest([(date(2025, 2, 1), D("1000000"))], date(2025, 3, 10), date(2025, 4, 9), FRANCE, ECB, "JPY")
    # Then 1,000,000 * 0.1315 * 30 / 365 = 3,945,000 / 365 = 10,808.219... -> 10808
    assert result.amount == D("10808")


def test_charges_made_at_different_times_add_up_to_the_whole() -> None:
    # Given interest charged at the formal notice (through 2025-07-15), then the rest at payment (2025-08-31)
    timeline = [(date(2025, 6, 1), D("2500.00"))]
    first = late_interest(timeline, date(2025, 6, 15), date(2025, 7, 15), FRANCE, ECB, "EUR")
    rest = late_interest(timeline, date(2025, 6, 15), date(2025, 8, 31), FRANCE, ECB, "EUR", after=date(2025, 7, 15))
    whole = late_interest(timeline, date(2025, 6, 15), date(2025, 8, 31), FRANCE, ECB, "EUR")
    # Then the two parts are exactly the whole, and the second starts the day after the first ended
    assert first.exact + rest.exact == whole.exact
    assert rest.periods[0].start == date(2025, 7, 16)


def test_a_missing_semester_is_an_error_never_a_zero_rate() -> None:
    # Given the shipped table, which ends with the semester starting 2026-01-01
    # When interest runs into the second half of 2026
    with pytest.raises(MissingReferenceRate) as caught:
        late_interest([(date(2026, 5, 1), D("100.00"))], date(2026, 6, 1), date(2026, 7, 2), FRANCE, ECB, "EUR")
    # Then the error names the semester and how to add it
    assert caught.value.semester == date(2026, 7, 1)
    assert "2026-07-01" in str(caught.value) and "RELANCE_RATES_FILE" in str(caught.value)


def test_a_users_rate_file_extends_and_corrects_the_shipped_table(tmp_path: Path) -> None:
    # Given a user's file with the next semester and a corrected older one
    extra = tmp_path / "rates.csv"
    extra.write_text("semester_start,rate\n2026-07-01,2.00\n2023-01-01,2.60\n", encoding="utf-8")
    # When the table is loaded with it
    table = RateTable.default(extra)
    # Then the new semester is known, the correction wins, and the others are the shipped ones
    assert table.rate_for(date(2026, 9, 30)) == D("2.00")
    assert table.rate_for(date(2023, 6, 30)) == D("2.60")
    assert table.rate_for(date(2025, 7, 1)) == D("2.15")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("2026-07-02,2.00\n", "line 1: 2026-07-02 is not the first day of a semester"),
        ("2026-07-01,2,00\n", "line 1: expected two columns"),
        ("2026-07-01,two\n", "line 1: rate 'two' must be a percentage"),
        ("semester_start,rate\n2026-07-01,2\n2026-07-01,2\n", "line 3: 2026-07-01 is listed twice"),
        ("07/01/2026,2\n", "line 1: '07/01/2026' is not an ISO date"),
    ],
)
def test_a_bad_rate_file_names_the_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "rates.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        RateTable.load(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_the_shipped_table_holds_the_domain_rates() -> None:
    assert {k.isoformat(): str(v) for k, v in ECB.semesters().items()} == {
        "2023-01-01": "2.50",
        "2023-07-01": "4.00",
        "2024-01-01": "4.50",
        "2024-07-01": "4.25",
        "2025-01-01": "3.15",
        "2025-07-01": "2.15",
        "2026-01-01": "2.15",
    }


def test_a_timeline_must_start_by_the_due_date() -> None:
    with pytest.raises(ValueError, match="after the due date"):
        late_interest([(date(2025, 7, 1), D("10"))], date(2025, 6, 15), date(2025, 7, 20), FRANCE, ECB, "EUR")


# --- properties ---------------------------------------------------------------------------------------------------

PROPERTY = settings(max_examples=200, deadline=None)
FIRST, LAST = date(2023, 1, 2), date(2026, 6, 30)  # the days the shipped table covers
amounts = st.decimals(min_value=D("0.01"), max_value=D("1000000"), places=2)
days = st.dates(min_value=FIRST, max_value=LAST)


@st.composite
def timelines(draw: st.DrawFn) -> tuple[date, list[tuple[date, Decimal]]]:
    due = draw(st.dates(min_value=FIRST, max_value=LAST - timedelta(days=1)))
    moves = draw(st.lists(st.tuples(st.dates(min_value=due, max_value=LAST), amounts), max_size=4))
    return due, outstanding_timeline(draw(amounts), moves, due)


@PROPERTY
@given(timelines(), days, days)
def test_interest_never_decreases_with_more_days(
    case: tuple[date, list[tuple[date, Decimal]]], a: date, b: date
) -> None:
    due, timeline = case
    early, late = sorted((a, b))
    assert (
        late_interest(timeline, due, early, FRANCE, ECB, "EUR").exact
        <= late_interest(timeline, due, late, FRANCE, ECB, "EUR").exact
    )


@PROPERTY
@given(days, days, amounts, amounts)
def test_interest_never_decreases_with_more_outstanding(due: date, through: date, a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    low_result = late_interest([(due, low)], due, through, FRANCE, ECB, "EUR")
    high_result = late_interest([(due, high)], due, through, FRANCE, ECB, "EUR")
    assert low_result.exact <= high_result.exact
    assert low_result.amount <= high_result.amount


@PROPERTY
@given(timelines(), days, days)
def test_splitting_a_delay_at_any_date_changes_nothing(
    case: tuple[date, list[tuple[date, Decimal]]], a: date, b: date
) -> None:
    due, timeline = case
    split, through = sorted((a, b))
    whole = late_interest(timeline, due, through, FRANCE, ECB, "EUR")
    head = late_interest(timeline, due, split, FRANCE, ECB, "EUR")
    tail = late_interest(timeline, due, through, FRANCE, ECB, "EUR", after=split)
    assert head.exact + tail.exact == whole.exact
    assert head.days + tail.days == whole.days


@PROPERTY
@given(timelines(), days)
def test_the_rounded_amount_is_within_half_a_cent_and_the_periods_tile_the_delay(
    case: tuple[date, list[tuple[date, Decimal]]], through: date
) -> None:
    due, timeline = case
    result = late_interest(timeline, due, through, FRANCE, ECB, "EUR")
    assert abs(Fraction(result.amount) - result.exact) <= Fraction(1, 200)
    for previous, current in zip(result.periods, result.periods[1:], strict=False):
        assert previous.end < current.start
    for period in result.periods:
        assert due < period.start <= period.end <= through
        assert period.days == (period.end - period.start).days + 1
