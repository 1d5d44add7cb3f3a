"""Properties of the fold: whatever the order and the repetitions, a customer's balances come out the same.

A broker redelivers and reorders; several ingest workers interleave. The ledger must reach the same balance per
currency as the fold of the unique events in their natural order, and that balance must be the plain arithmetic:
invoiced and not cancelled, less every payment and credit note.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.ledger.state import CustomerState
from tests.factories import Ev, Feed, assert_consistent, deliveries, expected_balances, fold, histories

PROPERTY = settings(max_examples=300, deadline=None)


@PROPERTY
@given(st.data())
def test_any_order_and_duplication_yields_the_balances_of_the_unique_events(data: st.DataObject) -> None:
    # Given a customer's unique events and the same events delivered in any order, some of them again
    events: list[Ev] = data.draw(histories(), label="events")
    delivered = data.draw(deliveries(events), label="delivered")
    # When each is folded
    canonical = fold(events)
    shuffled = fold(delivered)
    # Then the balances per currency agree, and agree with the arithmetic on the unique events
    assert shuffled.balances() == canonical.balances() == expected_balances(events)
    # And both states are internally consistent
    assert_consistent(canonical)
    assert_consistent(shuffled)


@PROPERTY
@given(st.data())
def test_no_consistent_event_is_ever_rejected_and_each_is_applied_at_most_once(data: st.DataObject) -> None:
    events: list[Ev] = data.draw(histories(), label="events")
    delivered = data.draw(deliveries(events), label="delivered")
    feed = Feed(CustomerState(tenant="t", customer_id="c"))
    verdicts = feed.deliver(delivered)
    assert "rejected" not in verdicts
    applied = [ev.event_id for ev, verdict in zip(delivered, verdicts, strict=True) if verdict == "new"]
    assert len(applied) == len(set(applied))
    # Every money or identity event is applied exactly once (a resolution that overtakes its dispute is the one
    # known exception: see test_state.py)
    must_apply = {ev.event_id for ev in events if ev.event_type != "invoice.dispute_resolved"}
    assert must_apply <= set(applied)


@PROPERTY
@given(st.data())
def test_balances_are_the_same_after_every_prefix_whatever_the_batches(data: st.DataObject) -> None:
    # Given deliveries folded one by one, checking after each step
    events: list[Ev] = data.draw(histories(max_invoices=4), label="events")
    delivered = data.draw(deliveries(events), label="delivered")
    feed = Feed(CustomerState(tenant="t", customer_id="c"))
    seen: dict[str, Ev] = {}
    for ev in delivered:
        feed.deliver([ev])
        seen[ev.event_id] = ev
        # Then at every step the state is consistent and its balance is that of the distinct events seen so far
        assert_consistent(feed.state)
        assert _without_zero(feed.state.balances()) == _without_zero(expected_balances(seen.values()))


def test_the_generator_covers_the_interesting_cases() -> None:
    # A property over trivial histories would prove nothing: make sure the strategy reaches the hard cases.
    seen: set[str] = set()

    @settings(max_examples=300, deadline=None)
    @given(histories())
    def collect(events: list[Ev]) -> None:
        types = {e.event_type for e in events}
        seen.update(types)
        if any(e.data.get("allocations") for e in events):
            seen.add("explicit allocation")
        if any(e.event_type == "credit_note.issued" and "invoice_id" in e.data for e in events):
            seen.add("credit note for an invoice")
        if len({e.data.get("currency") for e in events if "currency" in e.data}) == 2:
            seen.add("two currencies")

    collect()
    assert seen >= {
        "invoice.issued",
        "payment.received",
        "credit_note.issued",
        "invoice.cancelled",
        "invoice.disputed",
        "invoice.dispute_resolved",
        "explicit allocation",
        "credit note for an invoice",
        "two currencies",
    }


def _without_zero(balances: Mapping[str, object]) -> dict[str, object]:
    return {c: v for c, v in balances.items() if v != 0}
