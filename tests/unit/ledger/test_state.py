"""A customer's ledger as a pure fold: allocation of payments and credit notes, out-of-order input, identity rules."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

from shared.ledger.state import CustomerState
from tests.factories import (
    T0,
    Ev,
    Feed,
    cancellation,
    credit_note,
    customer,
    dispute,
    dispute_resolved,
    expected_balances,
    fold,
    invoice,
    payment,
    typed,
)

# INV-1 is older (falls due first) than INV-2, which is older than INV-3.
INV1 = invoice("INV-1", "100.00", issue_date="2026-09-01")
INV2 = invoice("INV-2", "200.00", issue_date="2026-10-01")
INV3 = invoice("INV-3", "50.00", issue_date="2026-11-01")


def outstanding(state: CustomerState) -> dict[str, D]:
    return {i.invoice_id: i.outstanding for i in state.invoices.values()}


# ---------------------------------------------------------------------------------------------------- out of order
def test_a_payment_before_any_invoice_waits_as_credit_then_pays_the_invoice_when_it_arrives() -> None:
    # Given a payment with no allocation and no invoice yet
    state = fold([payment("P1", "100.00")])
    assert state.unallocated() == {"EUR": D("100.00")}
    assert state.balances() == {"EUR": D("-100.00")}
    # When the invoice arrives
    Feed(state).deliver([invoice("INV-1", "150.00")])
    # Then the credit is applied to it and nothing is left unallocated
    assert outstanding(state) == {"INV-1": D("50.00")}
    assert state.invoices["INV-1"].allocations == {"payment:P1": D("100.00")}
    assert state.unallocated() == {}
    assert state.balances() == {"EUR": D("50.00")}


def test_a_payment_allocated_to_an_unknown_invoice_is_earmarked_for_it_not_spent_on_another() -> None:
    # Given a payment explicitly allocated to INV-2, which the ledger does not know yet
    state = fold([payment("P1", "200.00", allocations={"INV-2": "200.00"})])
    assert state.unallocated() == {"EUR": D("200.00")}
    # When an older invoice INV-1 arrives first
    Feed(state).deliver([INV1])
    # Then the earmarked money is not spent on it
    assert outstanding(state) == {"INV-1": D("100.00")}
    assert state.balances() == {"EUR": D("-100.00")}
    # And when INV-2 arrives, the money goes to INV-2
    Feed(state).deliver([INV2])
    assert outstanding(state) == {"INV-1": D("100.00"), "INV-2": D("0.00")}
    assert state.invoices["INV-2"].status == "paid"
    assert state.balances() == {"EUR": D("100.00")}


def test_a_cancellation_before_its_invoice_makes_the_invoice_arrive_cancelled() -> None:
    state = fold([cancellation("INV-1"), INV1])
    assert state.invoices["INV-1"].status == "cancelled"
    assert state.open_invoices() == []
    assert state.balances() == {}


# ---------------------------------------------------------------------------------------------------- allocation
def test_a_payment_without_allocation_pays_the_oldest_open_invoices_first() -> None:
    state = fold([INV2, INV1, INV3, payment("P1", "250.00")])
    assert outstanding(state) == {"INV-1": D("0.00"), "INV-2": D("50.00"), "INV-3": D("50.00")}
    assert state.balances() == {"EUR": D("100.00")}


def test_explicit_allocations_are_honoured_and_the_rest_goes_oldest_first() -> None:
    # Given three open invoices
    state = fold([INV1, INV2, INV3])
    # When a payment of 120 names INV-3 for 50 and INV-2 for 40, leaving 30 unallocated
    Feed(state).deliver([payment("P1", "120.00", allocations={"INV-3": "50.00", "INV-2": "40.00"})])
    # Then the named invoices get their amounts and the remaining 30 goes to the oldest, INV-1
    assert outstanding(state) == {"INV-1": D("70.00"), "INV-2": D("160.00"), "INV-3": D("0.00")}
    assert state.credits["payment:P1"].applied == {"INV-3": D("50.00"), "INV-2": D("40.00"), "INV-1": D("30.00")}


def test_an_allocation_larger_than_the_invoice_leaves_the_surplus_as_free_credit() -> None:
    state = fold([INV3, INV1, payment("P1", "80.00", allocations={"INV-3": "80.00"})])
    # INV-3 takes its 50, the surplus 30 goes to the oldest open invoice
    assert outstanding(state) == {"INV-1": D("70.00"), "INV-3": D("0.00")}
    assert state.unallocated() == {}


def test_an_overpayment_stays_as_credit_and_pays_the_next_invoice() -> None:
    # Given an invoice of 100 paid with 130
    state = fold([INV1, payment("P1", "130.00")])
    # Then it is paid and 30 waits as the customer's credit
    assert state.invoices["INV-1"].status == "paid"
    assert state.unallocated() == {"EUR": D("30.00")}
    assert state.balances() == {"EUR": D("-30.00")}
    # When the next invoice arrives, the credit is applied to it
    Feed(state).deliver([INV3])
    assert outstanding(state) == {"INV-1": D("0.00"), "INV-3": D("20.00")}
    assert state.unallocated() == {}
    assert state.balances() == {"EUR": D("20.00")}


def test_a_credit_note_against_an_invoice_reduces_that_invoice_only() -> None:
    state = fold([INV1, INV2, credit_note("CN1", "30.00", invoice_id="INV-2")])
    assert outstanding(state) == {"INV-1": D("100.00"), "INV-2": D("170.00")}
    assert state.invoices["INV-2"].allocations == {"credit_note:CN1": D("30.00")}


def test_a_credit_note_without_invoice_is_general_credit_applied_oldest_first() -> None:
    state = fold([INV2, INV1, credit_note("CN1", "130.00")])
    assert outstanding(state) == {"INV-1": D("0.00"), "INV-2": D("170.00")}
    assert state.balances() == {"EUR": D("170.00")}


def test_a_credit_note_for_an_invoice_not_yet_known_waits_for_it() -> None:
    state = fold([credit_note("CN1", "30.00", invoice_id="INV-2"), INV1, INV2])
    assert outstanding(state) == {"INV-1": D("100.00"), "INV-2": D("170.00")}


def test_cancelling_a_paid_invoice_returns_its_money_to_free_credit_for_the_other_invoices() -> None:
    # Given INV-1 fully paid and INV-2 open
    state = fold([INV1, INV2, payment("P1", "100.00", allocations={"INV-1": "100.00"})])
    assert outstanding(state) == {"INV-1": D("0.00"), "INV-2": D("200.00")}
    # When INV-1 is cancelled
    Feed(state).deliver([cancellation("INV-1")])
    # Then the payment's 100 moves to INV-2 and INV-1 no longer counts
    assert state.invoices["INV-1"].status == "cancelled"
    assert state.invoices["INV-1"].allocations == {}
    assert state.credits["payment:P1"].applied == {"INV-2": D("100.00")}
    assert state.balances() == {"EUR": D("100.00")}


def test_cancelling_the_only_invoice_leaves_its_payment_as_unallocated_credit() -> None:
    state = fold([INV1, payment("P1", "60.00"), cancellation("INV-1")])
    assert state.unallocated() == {"EUR": D("60.00")}
    assert state.balances() == {"EUR": D("-60.00")}


def test_a_disputed_invoice_is_skipped_by_oldest_first_allocation_until_resolved() -> None:
    # Given the oldest invoice is disputed
    state = fold([INV1, INV2, dispute("INV-1"), payment("P1", "250.00")])
    # Then the payment goes to INV-2 and the rest waits, although INV-1 is older
    assert outstanding(state) == {"INV-1": D("100.00"), "INV-2": D("0.00")}
    assert state.unallocated() == {"EUR": D("50.00")}
    # When the dispute is resolved, the waiting credit is applied to INV-1
    Feed(state).deliver([dispute_resolved("INV-1")])
    assert outstanding(state) == {"INV-1": D("50.00"), "INV-2": D("0.00")}
    assert state.unallocated() == {}


def test_an_explicit_allocation_to_a_disputed_invoice_is_honoured() -> None:
    state = fold([INV1, dispute("INV-1"), payment("P1", "40.00", allocations={"INV-1": "40.00"})])
    assert outstanding(state) == {"INV-1": D("60.00")}


def test_currencies_are_never_mixed() -> None:
    # Given a EUR invoice and a USD payment without allocation
    state = fold([INV1, invoice("INV-U", "70.00", currency="USD"), payment("P1", "500.00", currency="USD")])
    # Then the USD money pays only the USD invoice
    assert outstanding(state) == {"INV-1": D("100.00"), "INV-U": D("0.00")}
    assert state.balances() == {"EUR": D("100.00"), "USD": D("-430.00")}


def test_an_allocation_to_an_invoice_in_another_currency_is_rejected_with_a_reason() -> None:
    state = fold([INV1])
    check = state.check(typed(payment("P1", "10.00", currency="USD", allocations={"INV-1": "10"})))
    assert check.verdict == "rejected"
    assert "INV-1" in check.reason and "USD" in check.reason and "EUR" in check.reason


def test_overdue_counts_open_invoices_past_their_due_date_only() -> None:
    # INV-1 due 2026-10-01, INV-2 due 2026-10-31, INV-3 due 2026-12-01
    state = fold([INV1, INV2, INV3, payment("P1", "30.00")])
    assert state.overdue(date(2026, 10, 1)) == {}
    assert state.overdue(date(2026, 11, 15)) == {"EUR": D("270.00")}
    assert state.overdue(date(2027, 1, 1)) == {"EUR": D("320.00")}


# ---------------------------------------------------------------------------------------------------- identity
def test_the_same_invoice_issued_twice_with_the_same_content_is_a_duplicate() -> None:
    state = fold([INV1])
    # A redelivery from the ERP under another event_id, same content
    check = state.check(typed(INV1.with_id("erp-resend-1")))
    assert check.verdict == "duplicate"
    assert "INV-1" in check.reason


def test_the_same_invoice_issued_again_with_different_content_is_rejected_with_a_reason() -> None:
    # Given INV-1 issued for 100.00
    state = fold([INV1])
    # When the ERP sends INV-1 again for 120.00
    check = state.check(typed(invoice("INV-1", "120.00", issue_date="2026-09-01")))
    # Then it is rejected, the reason names the invoice and what is already recorded, and the state is unchanged
    assert check.verdict == "rejected"
    assert "INV-1" in check.reason and "different content" in check.reason and "100.00" in check.reason
    assert state.invoices["INV-1"].amount == D("100.00")


def test_a_reused_payment_id_with_another_amount_is_rejected() -> None:
    state = fold([payment("P1", "10.00")])
    check = state.check(typed(payment("P1", "11.00")))
    assert check.verdict == "rejected" and "P1" in check.reason


def test_a_repeated_cancellation_or_dispute_is_a_duplicate_not_a_second_effect() -> None:
    state = fold([INV1, cancellation("INV-1"), dispute("INV-2")])
    assert state.check(typed(cancellation("INV-1"))).verdict == "duplicate"
    assert state.check(typed(dispute("INV-2"))).verdict == "duplicate"


def test_the_latest_customer_profile_wins_whatever_the_arrival_order() -> None:
    older = customer("Old Name").at(INV1.occurred_at.replace(month=1))
    newer = customer("New Name").at(INV1.occurred_at.replace(month=2))
    assert fold([older, newer]).profile["name"] == "New Name"  # type: ignore[index]
    assert fold([newer, older]).profile["name"] == "New Name"  # type: ignore[index]


# ---------------------------------------------------------------------------------------------------- skewed clocks
def arrive(state: CustomerState, ev: Ev, occurred_at: datetime, recorded_at: datetime) -> None:
    """Apply an event the way the ledger does: with the instant it claims and the instant it was recorded."""
    assert state.check(typed(ev)).verdict == "new"
    state.apply(typed(ev), occurred_at, ev.event_id, recorded_at=recorded_at)


def test_a_profile_stated_in_2099_does_not_pin_the_profile_for_good() -> None:
    # Given a customer update from an ERP whose clock says 2099, received on 2 November 2026
    state = CustomerState(tenant="acme-fr", customer_id="C-0042")
    arrive(state, customer("Skewed Clock SAS"), datetime(2099, 1, 1, tzinfo=UTC), T0)
    # When a correct update arrives three days later
    arrive(state, customer("Martin SAS"), T0 + timedelta(days=3), T0 + timedelta(days=3))
    # Then the later statement wins
    assert state.profile is not None and state.profile["name"] == "Martin SAS"
    # And a late-arriving older statement still loses to it, as before
    arrive(state, customer("Older Name"), T0 + timedelta(days=1), T0 + timedelta(days=4))
    assert state.profile["name"] == "Martin SAS"


def test_a_dispute_dated_2099_is_closed_by_its_resolution() -> None:
    # Given a dispute stamped 2099 by a skewed ERP clock, received on 2 November 2026
    state = fold([INV1])
    arrive(state, dispute("INV-1"), datetime(2099, 6, 1, tzinfo=UTC), T0)
    assert "INV-1" in state.disputes
    # When its resolution arrives a week later with a correct clock
    arrive(state, dispute_resolved("INV-1"), T0 + timedelta(days=7), T0 + timedelta(days=7))
    # Then the invoice is no longer disputed
    assert "INV-1" not in state.disputes


def test_a_state_already_pinned_by_an_older_version_is_released_by_the_next_statement() -> None:
    # Given a snapshot folded before instants were capped: its profile is dated 2099
    state = fold([customer("Skewed Clock SAS").at(datetime(2099, 1, 1, tzinfo=UTC))])
    pinned = CustomerState.from_json(json.loads(json.dumps(state.to_json())))
    assert pinned.profile_at is not None and pinned.profile_at.startswith("2099")
    # When a correct update is recorded now
    arrive(pinned, customer("Martin SAS"), T0, T0)
    # Then it replaces the pinned profile
    assert pinned.profile is not None and pinned.profile["name"] == "Martin SAS"


# ---------------------------------------------------------------------------------------------------- snapshot
def test_a_snapshot_round_trips_through_json_to_an_equal_state() -> None:
    # Given a state touching every part: profile, earmarks, allocations, cancellation, dispute, two currencies
    events = [
        customer("Martin SAS"),
        payment("P0", "25.00", allocations={"INV-9": "25.00"}),
        INV1,
        INV2,
        invoice("INV-U", "70.00", currency="USD"),
        payment("P1", "130.00", allocations={"INV-2": "30.00"}),
        credit_note("CN1", "10.00", invoice_id="INV-2"),
        cancellation("INV-1"),
        dispute("INV-2"),
        payment("P2", "0.50", currency="USD"),
    ]
    state = fold(events)
    # When it is saved as JSON text and loaded back
    loaded = CustomerState.from_json(json.loads(json.dumps(state.to_json())))
    # Then it is equal, field by field, and reads the same
    assert loaded == state
    assert loaded.to_json() == state.to_json()
    assert loaded.balances() == state.balances() == expected_balances(events)
    # And it folds the next event exactly as the original does
    Feed(loaded).deliver([INV3])
    Feed(state).deliver([INV3])
    assert loaded == state


def test_a_dispute_resolution_that_overtakes_its_dispute_still_closes_it() -> None:
    opened = dispute("INV-1").at(INV1.occurred_at.replace(month=3))
    closed = dispute_resolved("INV-1").at(INV1.occurred_at.replace(month=4))
    state = fold([INV1, closed, opened])
    assert "INV-1" not in state.disputes
    # And in the natural order the result is the same, while a later dispute reopens it
    assert "INV-1" not in fold([INV1, opened, closed]).disputes
    reopened = dispute("INV-1").at(INV1.occurred_at.replace(month=5))
    assert "INV-1" in fold([INV1, closed, reopened, opened]).disputes
