"""The claims part of the fold: what is charged, claimed, paid and waived per invoice, and where free money goes."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal as D
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from shared.contracts import events
from shared.ledger.claims import INDEMNITY, INTEREST
from shared.ledger.state import CustomerState
from tests.factories import (
    Ev,
    Feed,
    assert_consistent,
    cancellation,
    dispute,
    fold,
    histories,
    invoice,
    payment,
)

META = {"policy": "standard", "policy_version": "v1", "as_of": "2026-03-22T09:00:00Z"}
INV1 = invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02")
INV2 = invoice("INV-2", "500.00", issue_date="2026-02-15", due_date="2026-03-15")


def fee(invoice_id: str, amount: str = "40.00", currency: str = "EUR", **extra: str) -> Ev:
    data = {"invoice_id": invoice_id, "currency": currency, "amount": amount, **extra, **META}
    return Ev(events.FeeCharged.TYPE, data, f"fee-{invoice_id}")


def interest(invoice_id: str, amount: str, through: str = "2026-03-22", currency: str = "EUR", **extra: str) -> Ev:
    data = {"invoice_id": invoice_id, "currency": currency, "amount": amount, "through": through, "days": 20}
    return Ev(events.InterestComputed.TYPE, {**data, **extra, **META}, f"interest-{invoice_id}-{through}-{amount}")


def fixed(invoice_id: str, amount: str, through: str, currency: str = "EUR") -> Ev:
    data = {"invoice_id": invoice_id, "currency": currency, "kind": "interest", "amount": amount, "through": through}
    return Ev(events.ClaimFixed.TYPE, {**data, "days": 23, **META}, f"fixed-{invoice_id}")


def claiming(
    invoice_id: str, currency: str = "EUR", actions: tuple[str, ...] = ("charge_interest", "charge_fee")
) -> Ev:
    data: dict[str, Any] = {
        "invoice_id": invoice_id,
        "currency": currency,
        "level": "formal-notice",
        "offset_days": 20,
        "skipped": [],
        "actions": list(actions),
        "channel": "letter",
        "due_date": "2026-03-02",
        "step_date": "2026-03-22",
        "reached_on": "2026-03-22",
        "outstanding": "1000.00",
        **META,
    }
    return Ev(events.LevelReached.TYPE, data, f"level-{invoice_id}")


def waived(invoice_id: str, kind: str, amount: str, currency: str = "EUR") -> Ev:
    data = {"invoice_id": invoice_id, "kind": kind, "currency": currency, "amount": amount}
    return Ev(events.ClaimWaived.TYPE, {**data, "reason": "goodwill", "author": "M. Durand"}, f"w-{invoice_id}-{kind}")


def claims(state: CustomerState, invoice_id: str) -> dict[str, tuple[str, str, str, str]]:
    """Per kind: charged, paid, waived, owed."""
    return {
        c.kind: (str(c.charged), str(c.allocated), str(c.waived), str(c.owed))
        for c in state.claims.of_invoice(invoice_id)
    }


# ---------------------------------------------------------------------------------------------------- allocation
def test_a_surplus_settles_the_claimed_claims_and_leaves_the_unclaimed_ones_owed() -> None:
    # Given INV-1 claimed at the formal notice (6.66 + 40.00) and INV-2 late, its indemnity not claimed yet
    history = [INV1, INV2, fee("INV-1"), interest("INV-1", "6.66"), claiming("INV-1"), fee("INV-2")]
    # When both principals are paid with 60.00 more, unallocated
    state = fold([*history, payment("P1", "1560.00", received_on="2026-03-25")])
    # Then the claimed claims took 46.66 (interest first), INV-2's indemnity took nothing, 13.34 is free credit
    assert claims(state, "INV-1") == {
        INTEREST: ("6.66", "6.66", "0", "0.00"),
        INDEMNITY: ("40.00", "40.00", "0", "0.00"),
    }
    assert claims(state, "INV-2") == {INDEMNITY: ("40.00", "0", "0", "40.00")}
    assert state.unallocated() == {"EUR": D("13.34")}
    assert state.claims_owed() == {"EUR": D("40.00")}
    # And the balance is principal alone: nothing open, the free credit
    assert state.balances() == {"EUR": D("-13.34")}
    assert_consistent(state)


def test_the_surplus_of_a_payment_goes_to_the_claims_of_the_invoices_it_pays_before_any_other_principal() -> None:
    # Given INV-1 claimed at the formal notice (6.66 + 40.00), and INV-2 open, not yet due
    later = invoice("INV-2", "500.00", issue_date="2026-03-20", due_date="2026-04-19")
    history = [INV1, later, fee("INV-1"), interest("INV-1", "6.66"), claiming("INV-1")]
    # When the customer pays exactly what the notice demanded, the ERP allocating the principal to INV-1
    state = fold([*history, payment("P1", "1046.66", received_on="2026-03-25", allocations={"INV-1": "1000.00"})])
    # Then the 46.66 over settles INV-1's claims, and INV-2 stays open in full, as the ERP's books show it
    assert claims(state, "INV-1") == {
        INTEREST: ("6.66", "6.66", "0", "0.00"),
        INDEMNITY: ("40.00", "40.00", "0", "0.00"),
    }
    assert state.invoices["INV-2"].outstanding == D("500.00") and state.unallocated() == {}
    assert_consistent(state)


def test_free_credit_meets_a_claim_whichever_comes_first() -> None:
    # Given the same claims and the same overpayment, the payment folded before or after the claims
    claims_first = [INV1, fee("INV-1"), interest("INV-1", "6.66"), claiming("INV-1"), payment("P1", "1046.66")]
    payment_first = [INV1, payment("P1", "1046.66"), fee("INV-1"), interest("INV-1", "6.66"), claiming("INV-1")]
    before, after = fold(claims_first), fold(payment_first)
    # Then the outcome is the same: the claims settled by P1, no free credit left
    assert (
        claims(before, "INV-1")
        == claims(after, "INV-1")
        == {
            INTEREST: ("6.66", "6.66", "0", "0.00"),
            INDEMNITY: ("40.00", "40.00", "0", "0.00"),
        }
    )
    assert before.unallocated() == after.unallocated() == {}


def test_a_later_invoice_never_takes_money_that_settled_a_claim() -> None:
    # Given a claimed claim settled by an overpayment
    state = fold([INV1, fee("INV-1"), claiming("INV-1"), payment("P1", "1040.00")])
    assert claims(state, "INV-1")[INDEMNITY][3] == "0.00"
    # When a new invoice arrives
    feed = Feed(state)
    feed.deliver([invoice("INV-3", "700.00", issue_date="2026-03-26", due_date="2026-04-25")])
    # Then it is fully open
    assert state.invoices["INV-3"].outstanding == D("700.00")


def test_claims_first_puts_unallocated_money_on_the_claims_before_principal_but_never_an_explicit_allocation() -> None:
    rule = {"allocation": "claims_first"}
    history = [INV1, fee("INV-1", **rule), interest("INV-1", "6.66", **rule), claiming("INV-1")]
    # When 600.00 arrives unallocated, and 100.00 allocated by the ERP to INV-1
    state = fold([*history, payment("P1", "600.00"), payment("P2", "100.00", allocations={"INV-1": "100.00"})])
    # Then P1 paid the claims first (46.66), the rest principal; P2 stands as the ERP allocated it
    assert claims(state, "INV-1") == {
        INTEREST: ("6.66", "6.66", "0", "0.00"),
        INDEMNITY: ("40.00", "40.00", "0", "0.00"),
    }
    assert state.invoices["INV-1"].allocations == {"payment:P1": D("553.34"), "payment:P2": D("100.00")}
    assert state.claims.allocation == "claims_first"


def test_a_figure_below_what_was_paid_gives_the_excess_back_to_the_credit() -> None:
    # Given 6.66 of interest settled by an overpayment
    state = fold(
        [INV1, interest("INV-1", "6.66"), claiming("INV-1", actions=("charge_interest",)), payment("P1", "1010.00")]
    )
    assert claims(state, "INV-1")[INTEREST] == ("6.66", "6.66", "0", "0.00")
    # When the interest is fixed lower (a payment dated back lowered the base)
    Feed(state).deliver([fixed("INV-1", "5.00", "2026-03-10")])
    # Then 1.66 goes back to P1's free credit
    assert claims(state, "INV-1")[INTEREST] == ("5.00", "5.00", "0", "0.00")
    assert state.unallocated() == {"EUR": D("5.00")}
    assert_consistent(state)


def test_a_fixed_interest_is_not_replaced_by_a_later_running_figure() -> None:
    state = fold([INV1, fixed("INV-1", "7.66", "2026-03-25"), interest("INV-1", "9.99", through="2026-04-01")])
    claim = state.claims.get("INV-1", INTEREST)
    assert claim is not None and (claim.charged, claim.through, claim.fixed) == (D("7.66"), date(2026, 3, 25), True)


def test_a_waiver_above_what_is_owed_gives_back_the_money_beyond_the_charge() -> None:
    state = fold([INV1, fee("INV-1"), claiming("INV-1"), payment("P1", "1030.00"), waived("INV-1", INDEMNITY, "15.00")])
    # 30.00 had settled the 40.00 indemnity; waiving 15.00 leaves 25.00 due, so 5.00 goes back to P1
    assert claims(state, "INV-1")[INDEMNITY] == ("40.00", "25.00", "15.00", "0.00")
    assert state.unallocated() == {"EUR": D("5.00")}


def test_a_cancelled_invoice_voids_its_claims_and_their_money_settles_again() -> None:
    history = [INV1, INV2, fee("INV-1"), claiming("INV-1"), payment("P1", "1540.00")]
    state = fold([*history, cancellation("INV-1")])
    # INV-1's 1,000.00 and 40.00 come back and pay INV-2 (500.00); 1,040.00 is free
    assert claims(state, "INV-1")[INDEMNITY] == ("40.00", "0", "0", "0")
    assert state.invoices["INV-2"].outstanding == D("0.00")
    assert state.unallocated() == {"EUR": D("1040.00")}
    assert_consistent(state)


def test_a_disputed_invoices_claims_take_no_money() -> None:
    state = fold([INV1, fee("INV-1"), claiming("INV-1"), dispute("INV-1"), payment("P1", "40.00")])
    assert claims(state, "INV-1")[INDEMNITY] == ("40.00", "0", "0", "40.00")
    assert state.unallocated() == {"EUR": D("40.00")}


# ---------------------------------------------------------------------------------------------------- snapshot
def test_the_claims_survive_a_snapshot_round_trip() -> None:
    state = fold(
        [
            INV1,
            fee("INV-1"),
            interest("INV-1", "6.66"),
            claiming("INV-1"),
            payment("P1", "1020.00"),
            waived("INV-1", INDEMNITY, "5.00"),
        ]
    )
    again = CustomerState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state and again.claims.all() == state.claims.all()
    # And the state read back keeps settling free money onto claims
    Feed(again).deliver([payment("P2", "50.00")])
    assert claims(again, "INV-1")[INDEMNITY] == ("40.00", "35.00", "5.00", "0.00")


def statement(reminder_id: str, *claimed: tuple[str, str, str]) -> Ev:
    """A claims statement asking for (invoice, kind, amount) claims."""
    data: dict[str, Any] = {
        "reminder_id": reminder_id,
        "level": events.CLAIMS_STATEMENT,
        "channel": "email",
        "copy_channels": [],
        "template": events.CLAIMS_STATEMENT,
        "language": "fr",
        "currency": "EUR",
        "invoice_ids": [],
        "lines": [],
        "totals": {"outstanding": "0", "interest": "0", "fees": "0", "claims": "0"},
        "claims": [
            {"invoice_id": i, "number": f"F-{i}", "kind": kind, "currency": "EUR", "amount": amount}
            for i, kind, amount in claimed
        ],
        **META,
    }
    return Ev(events.ReminderRequested.TYPE, data, reminder_id)


def test_the_message_that_first_asked_for_a_claim_is_kept_and_survives_a_snapshot() -> None:
    # Given the principal paid late, the claims owed, and a statement asking for the indemnity, then another both
    paid = payment("P1", "1000.00", allocations={"INV-1": "1000.00"})
    history = [INV1, fee("INV-1"), fixed("INV-1", "7.66", "2026-03-25"), claiming("INV-1"), paid]
    state = fold([*history, statement("R-1", ("INV-1", INDEMNITY, "40.00"))])
    # Then the indemnity is asked by R-1, the interest by none; what is owed does not change
    assert {c.kind: c.asked for c in state.claims.of_invoice("INV-1")} == {INTEREST: None, INDEMNITY: "R-1"}
    assert claims(state, "INV-1")[INDEMNITY] == ("40.00", "0", "0", "40.00")
    Feed(state).deliver([statement("R-2", ("INV-1", INTEREST, "7.66"), ("INV-1", INDEMNITY, "40.00"))])
    assert {c.kind: c.asked for c in state.claims.of_invoice("INV-1")} == {INTEREST: "R-2", INDEMNITY: "R-1"}
    # And a statement is a contact, not the currency's reminder, and tells no invoice anything
    assert state.reminded == {} and len(state.dunning.contacts) == 1 and state.escalations["INV-1"].notices == []
    # And the snapshot keeps it; one written before it existed reads as asked by none
    again = CustomerState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state and [c.asked for c in again.claims.all()] == ["R-2", "R-1"]
    raw = json.loads(json.dumps(state.to_json()))
    for by_kind in raw["claims"].values():
        for claim in by_kind.values():
            del claim["asked"]
    assert [c.asked for c in CustomerState.from_json(raw).claims.all()] == [None, None]


def test_a_snapshot_written_before_claims_gets_them_from_its_escalations() -> None:
    state = fold([INV1, fee("INV-1"), interest("INV-1", "6.66"), claiming("INV-1")])
    old = {k: v for k, v in json.loads(json.dumps(state.to_json())).items() if k not in ("claims", "claims_allocation")}
    again = CustomerState.from_json(old)
    assert again.claims == state.claims


# ---------------------------------------------------------------------------------------------------- property
@st.composite
def with_claims(draw: st.DrawFn) -> list[Ev]:
    """An ERP history with claim events on its invoices, all in one random order."""
    erp = draw(histories())
    ids = {e.data["invoice_id"]: e.data["currency"] for e in erp if e.event_type == "invoice.issued"}
    extra: list[Ev] = []
    places = {"EUR": 2, "JPY": 0, "KWD": 3}
    money = st.integers(min_value=0, max_value=20_000)
    for invoice_id, currency in ids.items():

        def amount(currency: str = currency) -> str:
            return str(D(draw(money)).scaleb(-places[currency]))

        if draw(st.booleans()):
            extra.append(fee(invoice_id, amount(), currency))
        for n in range(draw(st.integers(min_value=0, max_value=2))):
            extra.append(interest(invoice_id, amount(), f"2026-03-{10 + n}", currency))
        if draw(st.booleans()):
            extra.append(fixed(invoice_id, amount(), "2026-03-25", currency))
        if draw(st.integers(min_value=0, max_value=3)):
            extra.append(claiming(invoice_id, currency))
        if draw(st.booleans()):
            extra.append(waived(invoice_id, draw(st.sampled_from([INTEREST, INDEMNITY])), amount(), currency))
    for n, currency in enumerate(sorted(set(ids.values()))):
        if draw(st.booleans()):  # money beyond the principal, for the claims
            extra.append(payment(f"PX{n}", amount(currency), currency=currency, received_on="2026-03-30"))
    return list(draw(st.permutations([*erp, *extra])))


@settings(max_examples=150, deadline=None)
@given(with_claims())
def test_claims_owed_are_what_was_charged_less_what_was_paid_and_waived(history: list[Ev]) -> None:
    state = fold(history)
    assert_consistent(state)
    event("money on claims" if any(c.settled for c in state.claims.all()) else "no money on claims")
    # What each claim was charged and waived, read from the events alone
    charged: dict[tuple[str, str], D] = {}
    waivers: dict[tuple[str, str], D] = {}
    fixed_ids: set[str] = set()
    for ev in history:
        key_interest = (ev.data.get("invoice_id", ""), INTEREST)
        if ev.event_type == events.ClaimFixed.TYPE:
            charged[key_interest] = D(ev.data["amount"])
            fixed_ids.add(ev.data["invoice_id"])
        elif ev.event_type == events.InterestComputed.TYPE and ev.data["invoice_id"] not in fixed_ids:
            charged[key_interest] = D(ev.data["amount"])
        elif ev.event_type == events.FeeCharged.TYPE:
            charged[(ev.data["invoice_id"], INDEMNITY)] = D(ev.data["amount"])
        elif ev.event_type == events.ClaimWaived.TYPE:
            key = (ev.data["invoice_id"], ev.data["kind"])
            waivers[key] = waivers.get(key, D(0)) + D(ev.data["amount"])
    cancelled = {e.data["invoice_id"] for e in history if e.event_type == "invoice.cancelled"}
    # The money on claims, read from the credits: what they hold neither on invoices, free nor earmarked
    on_claims = sum(
        (
            c.amount - c.free - sum(c.earmarks.values(), D(0)) - sum(c.applied.values(), D(0))
            for c in state.credits.values()
        ),
        D(0),
    )
    assert on_claims == sum((claim.allocated for claim in state.claims.all()), D(0))
    for claim in state.claims.all():
        key = (claim.invoice_id, claim.kind)
        assert claim.charged == charged.get(key, D(0)) and claim.waived == waivers.get(key, D(0))
        expected = D(0) if claim.invoice_id in cancelled else max(D(0), claim.charged - claim.allocated - claim.waived)
        assert claim.owed == expected


def test_the_figures_per_currency_add_up_what_was_charged_paid_waived_and_owed() -> None:
    from shared.ledger.claims import Figures

    state = fold(
        [INV1, INV2, fee("INV-1"), interest("INV-1", "6.66"), claiming("INV-1"), fee("INV-2"), payment("P1", "1520.00")]
    )
    Feed(state).deliver([waived("INV-2", INDEMNITY, "10.00")])
    # 20.00 of the surplus on INV-1's interest (6.66) and indemnity (13.34 of 40.00); INV-2's indemnity 10.00 waived
    assert state.claims.figures() == {
        "EUR": Figures(charged=D("86.66"), paid=D("20.00"), waived=D("10.00"), owed=D("56.66"))
    }
    total = Figures()
    total += state.claims.figures()["EUR"]
    assert total == state.claims.figures()["EUR"]
