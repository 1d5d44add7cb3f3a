"""DSO worked by hand: simple, countback with its prorated last month, no sales, receivables beyond the period."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from services.reports.dso import Dso, Period, PeriodLength, countback, dso_report, sales, simple
from tests.factories import TENANT, Ev, credit_note, fold, invoice, payment

AS_OF = date(2026, 11, 30)


def account() -> list[Ev]:
    return [
        invoice("S-1", "1000.00", issue_date="2026-09-10"),  # September's sales
        invoice("O-1", "2000.00", issue_date="2026-10-05"),  # October's
        invoice("N-1", "3000.00", issue_date="2026-11-10"),  # November's, less the credit note
        credit_note("CN-1", "500.00", issued_on="2026-11-20", invoice_id="N-1"),
        payment("P-1", "1000.00", received_on="2026-10-10", allocations={"S-1": "1000.00"}),
        payment("P-2", "500.00", received_on="2026-11-25", allocations={"O-1": "500.00"}),  # partial
    ]


def test_the_period_is_whole_calendar_months_at_a_month_end_and_days_otherwise() -> None:
    assert PeriodLength.parse("3m").ending(AS_OF) == Period(date(2026, 9, 1), AS_OF)  # 30 + 31 + 30 = 91 days
    assert PeriodLength.parse("3m").ending(AS_OF).days == 91
    assert PeriodLength.parse("90d").ending(AS_OF) == Period(date(2026, 9, 2), AS_OF)
    assert PeriodLength.parse("1m").ending(date(2026, 11, 20)) == Period(date(2026, 10, 21), date(2026, 11, 20))
    months = PeriodLength.parse("3m").months(AS_OF)
    assert [(m.first, m.days) for m in months] == [
        (date(2026, 11, 1), 30),
        (date(2026, 10, 1), 31),
        (date(2026, 9, 1), 30),
    ]
    for wrong in ("0m", "3", "m3", "3w", "61m"):
        with pytest.raises(ValueError, match="period"):
            PeriodLength.parse(wrong)


def test_simple_and_countback_dso_of_a_customer_with_a_partial_payment_and_a_credit_note() -> None:
    # Given September's 1,000 paid, October's 2,000 half a thousand paid, November's 3,000 less a 500 credit note
    state = fold(account())
    length = PeriodLength.parse("3m")
    # Then the receivables are 1,500 (October) + 2,500 (November) = 4,000
    assert state.balances() == {"EUR": Decimal("4000.00")}
    # And the sales of the period are 1,000 + 2,000 + 3,000 - 500 = 5,500
    assert sales(state, length.ending(AS_OF)) == {"EUR": Decimal("5500.00")}
    simple_report = dso_report(TENANT, [state], AS_OF, length, "simple")
    (row,) = simple_report.rows
    # Simple: 4,000 / 5,500 x 91 = 66.18... -> 66.2
    assert simple_report.dso(row) == Dso(Decimal("66.2"))
    # Countback: November's 2,500 do not cover 4,000: 30 days, 1,500 remain; October's 2,000 cover them:
    # 1,500 / 2,000 x 31 = 23.25 days; 30 + 23.25 = 53.25 -> 53.3
    countback_report = dso_report(TENANT, [state], AS_OF, length, "countback")
    assert countback_report.dso(countback_report.rows[0]) == Dso(Decimal("53.3"))
    assert row.monthly == [Decimal("2500.00"), Decimal("2000.00"), Decimal("1000.00")]


def test_no_sales_is_not_a_division() -> None:
    assert simple(Decimal("100"), Decimal(0), 91) == Dso(None)
    assert str(simple(Decimal("100"), Decimal(0), 91)) == "n/a"
    assert countback(Decimal("100"), [(Decimal(0), 30), (Decimal(0), 31)]) == Dso(None)
    # nothing owed: 0 days, whatever the sales
    assert simple(Decimal(0), Decimal("10"), 91) == Dso(Decimal("0.0"))


def test_countback_beyond_the_period_is_at_least_the_period() -> None:
    # 1,000 owed, 100 of sales each month of three: every month counted whole, and more remain
    result = countback(Decimal("1000"), [(Decimal("100"), 30), (Decimal("100"), 31), (Decimal("100"), 30)])
    assert result == Dso(Decimal("91.0"), capped=True)
    assert str(result) == ">= 91.0"


def test_a_month_of_credit_notes_only_is_counted_whole_and_adds_nothing_taken_off() -> None:
    # November: -50 (a credit note alone); October 400 covers the 300 owed: 30 + 300 / 400 x 31 = 53.25 -> 53.3
    assert countback(Decimal("300"), [(Decimal("-50"), 30), (Decimal("400"), 31)]) == Dso(Decimal("53.3"))


def test_cancelled_invoices_are_not_sales() -> None:
    from tests.factories import cancellation

    state = fold([invoice("I-1", "100.00", issue_date="2026-11-02"), cancellation("I-1")])
    assert sales(state, PeriodLength.parse("1m").ending(AS_OF)) == {}
