"""relance's own vocabulary: one model per event type, whose data is exactly what the log holds."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel

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


def _constructed(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """How a recorded event was read before parse built it itself: model_construct of the given fields, nested too."""

    def value(v: Any) -> Any:
        if isinstance(v, BaseModel) and type(v) in events._ORIGINALS:
            return construct(events._ORIGINALS[type(v)], v)
        return [value(item) for item in v] if isinstance(v, list) else v

    def construct(original: type[BaseModel], reading: BaseModel) -> BaseModel:
        given = reading.model_fields_set
        return original.model_construct(_fields_set=set(given), **{n: value(getattr(reading, n)) for n in given})

    return construct(model, events._recorded(model).model_validate(data))


def _same_object(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, BaseModel):
        assert a.model_fields_set == b.model_fields_set and list(vars(a)) == list(vars(b))
        assert (a.__pydantic_extra__, a.__pydantic_private__) == (b.__pydantic_extra__, b.__pydantic_private__)
        for name in vars(a):
            _same_object(vars(a)[name], vars(b)[name])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same_object(x, y)
    else:
        assert a == b


def test_a_recorded_event_is_read_into_the_object_model_construct_builds_from_its_given_fields() -> None:
    # Given relance's decisions (nested lines, absent optional fields), the ERP's events (absent lists), and a
    # decision of an older log that lacks a field the model now requires
    c = Customer()
    c.erp(date(2026, 2, 1), invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"))
    c.run(
        *days("2026-02-01", "2026-04-20"), erp={date(2026, 4, 3): [payment("P1", "1000.00", received_on="2026-04-03")]}
    )
    recorded = [(d.event_type, d.data) for ds in c.log.values() for d in ds]
    recorded += [
        ("invoice.issued", invoice("INV-2", "10.00", issue_date="2026-01-01", due_date="2026-02-01").data),
        ("payment.received", payment("P2", "10.00", received_on="2026-03-01").data),
        ("escalation.clock_ticked", {"as_of": "2026-03-01T08:00:00Z"}),
    ]
    assert events.ReminderRequested.TYPE in {event_type for event_type, _ in recorded}
    for event_type, data in recorded:
        # Then parse gives the very object model_construct of the given fields gives
        model = events.MODELS.get(event_type) or erp.DATA_MODELS[event_type]
        _same_object(events.parse(event_type, data), _constructed(model, data))
