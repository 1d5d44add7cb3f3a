"""The aged balance, worked by hand: every bucket, a dispute, a partial payment, a credit note, unapplied credit."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from services.reports.aging import aged_balance, bucket_of, customer_rows
from tests.factories import CUSTOMER, TENANT, Ev, credit_note, customer, dispute, fold, invoice, payment

AS_OF = date(2026, 11, 30)


def due(invoice_id: str, amount: str, due_on: str, currency: str = "EUR") -> Ev:
    day = date.fromisoformat(due_on)
    return invoice(invoice_id, amount, currency=currency, issue_date=day - timedelta(days=30), due_date=day)


def book() -> list[Ev]:
    return [
        customer("Tuilerie Dupont", segment="sme"),
        due("I-1", "100.00", "2026-12-10"),  # due in 10 days: not yet due
        due("I-2", "200.00", "2026-11-20"),  # 30 Nov - 20 Nov = 10 days late
        due("I-3", "300.00", "2026-10-15"),  # 16 + 30 = 46 days late
        due("I-4", "400.00", "2026-09-10"),  # 20 + 31 + 30 = 81 days late
        due("I-5", "500.00", "2026-07-01"),  # 30 + 31 + 30 + 31 + 30 = 152 days late
        due("I-6", "600.00", "2026-10-01"),  # disputed below: apart from the buckets
        dispute("I-6"),
        payment("P-1", "150.00", received_on="2026-11-05", allocations={"I-5": "150.00"}),  # partial: 350 left
        credit_note("CN-1", "50.00", issued_on="2026-11-06", invoice_id="I-4"),  # 350 left
        payment("P-2", "80.00", received_on="2026-11-07", allocations={"I-99": "80.00"}),  # an invoice not yet known
    ]


def test_each_invoice_falls_in_its_bucket_and_the_dispute_and_the_unapplied_credit_stand_apart() -> None:
    # Given the customer's book above, as of 30 November
    state = fold(book())
    # When its aged balance is read
    (row,) = customer_rows(state, AS_OF).values()
    # Then each invoice is in the bucket of its days past due, what was paid or credited taken off
    assert row.buckets == [
        Decimal("100.00"),
        Decimal("200.00"),
        Decimal("300.00"),
        Decimal("350.00"),
        Decimal("350.00"),
    ]
    assert row.principal == Decimal("1300.00")  # 100 + 200 + 300 + (400 - 50) + (500 - 150)
    # And the disputed invoice is in its own column, the earmarked payment is unapplied credit
    assert row.disputed == Decimal("600.00")
    assert row.unapplied == Decimal("80.00")
    # And the net is what was invoiced less every payment and credit note: 2100 - 150 - 50 - 80
    assert row.net == Decimal("1820.00") == state.balances()["EUR"]
    assert (row.interest, row.fees) == (Decimal(0), Decimal(0))


def test_the_boundaries_of_the_buckets() -> None:
    # due today is not late; 30 days late is in 1-30, 31 in 31-60, 90 in 61-90, 91 over 90
    assert [bucket_of(d) for d in (-5, 0, 1, 30, 31, 60, 61, 90, 91)] == [0, 0, 1, 1, 2, 2, 3, 3, 4]


def test_totals_per_currency_never_mix_currencies_and_rows_group_by_segment() -> None:
    # Given two customers in EUR, one of which also owes in USD
    first = fold(book())
    second = fold(
        [
            customer("Acme Inc", segment="key_account"),
            due("U-1", "70.00", "2026-11-29", "USD"),
            due("E-1", "30.00", "2026-11-01"),
        ],
        customer_id="C-0043",
    )
    # When the aged balance is grouped by segment
    balance = aged_balance(TENANT, [first, second], AS_OF, "segment")
    # Then each currency has its own rows and totals
    assert {(r.key, r.currency) for r in balance.rows} == {
        ("sme", "EUR"),
        ("key_account", "EUR"),
        ("key_account", "USD"),
    }
    assert balance.totals["USD"].principal == Decimal("70.00")
    assert balance.totals["USD"].buckets[1] == Decimal("70.00")  # one day late
    assert balance.totals["EUR"].principal == Decimal("1330.00")  # 1300 + 30
    assert balance.totals["EUR"].buckets[1] == Decimal("230.00")  # I-2's 200 and E-1's 30 (29 days late)
    assert balance.totals["EUR"].customers == {CUSTOMER, "C-0043"}


def test_another_tenants_state_is_refused() -> None:
    other = fold([due("I-1", "1.00", "2026-11-01")], tenant="other")
    with pytest.raises(ValueError, match="tenant 'other'"):
        aged_balance(TENANT, [other], AS_OF)
