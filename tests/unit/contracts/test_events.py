"""relance's own vocabulary: one model per event type, whose data is exactly what the log holds."""

from __future__ import annotations

from datetime import UTC, date, datetime

from shared.contracts import erp, events
from shared.ledger.outbox import COMMANDS
from tests.factories import invoice, payment
from tests.unit.escalation.test_engine import Customer, days


def test_every_type_relance_writes_is_named_once_and_the_outbox_table_knows_only_those() -> None:
    types = [model.TYPE for model in events.MODELS.values()]
    assert len(types) == len(set(types)) == len(events.MODELS)
    assert not set(types) & set(erp.EVENT_TYPES)
    assert COMMANDS is events.COMMANDS and set(COMMANDS) <= set(types)
    assert set(events.REMINDER_OUTCOMES) <= set(types)


def test_the_engine_s_decisions_read_back_from_the_log_give_the_same_data_and_the_same_model() -> None:
    # Given a customer taken up the whole ladder, blocked, then paying
    c = Customer()
    c.erp(date(2026, 2, 1), invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"))
    c.run(
        *days("2026-02-01", "2026-04-20"), erp={date(2026, 4, 3): [payment("P1", "1000.00", received_on="2026-04-03")]}
    )
    decisions = [d for ds in c.log.values() for d in ds]
    assert {d.event_type for d in decisions} >= {
        events.LevelReached.TYPE,
        events.ReminderRequested.TYPE,
        events.InterestComputed.TYPE,
        events.FeeCharged.TYPE,
        events.CreditBlocked.TYPE,
        events.CreditUnblocked.TYPE,
    }
    for decision in decisions:
        # Then the data written parses back, strictly and as recorded, into the event the engine decided
        model = events.MODELS[decision.event_type]
        assert model.model_validate(decision.data) == decision.event
        assert events.parse(decision.event_type, decision.data) == decision.event
        assert events.parse(decision.event_type, decision.data).data() == decision.data  # type: ignore[union-attr]


def test_an_instant_is_written_with_z_and_read_in_either_spelling_as_the_same_instant() -> None:
    moment = datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert events.instant_text(moment) == "2026-12-01T08:00:00Z"
    old = events.ClockTicked.model_validate({"as_of": "2026-12-01T08:00:00+00:00", "trigger": "timer"})
    new = events.ClockTicked.model_validate({"as_of": "2026-12-01T08:00:00Z", "trigger": "timer"})
    assert old == new and old.data() == {"as_of": "2026-12-01T08:00:00Z", "trigger": "timer"}


def test_a_recorded_erp_event_the_contract_now_refuses_is_still_read_and_written_back_unchanged() -> None:
    # Given an invoice recorded before the contract bounded dates
    data = invoice("INV-9", "10.00", issue_date="2026-01-01", due_date="9999-12-31").data
    # Then the fold can read it, and its data is what the log holds
    event = events.parse("invoice.issued", data)
    assert isinstance(event, erp.InvoiceIssued) and event.due_date == date(9999, 12, 31)
    assert events.data_of(event) == data


def test_a_fact_of_an_unknown_type_is_kept_as_it_is() -> None:
    event = events.parse("escalation.retired_fact", {"any": "thing"})
    assert event == events.Unknown("escalation.retired_fact", {"any": "thing"})
    assert events.type_of(event) == "escalation.retired_fact"
