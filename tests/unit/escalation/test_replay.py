"""Comparing a replayed stream with the recorded one: what must match, what may differ, how a difference is told.

The replay itself runs on real databases (tests/integration/escalation/test_replay.py); here, only the comparison.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from services.escalation.replay import Difference, Divergence, first_divergence, short
from shared.ledger.store import RecordedEvent

AT = datetime(2026, 3, 22, 9, tzinfo=UTC)


def event(version: int, event_id: str, event_type: str = "reminder.requested", **data: str) -> RecordedEvent:
    return RecordedEvent(
        position=version,
        tx_id=100 + version,
        tenant="acme-fr",
        customer_id="C-1",
        version=version,
        event_id=event_id,
        event_type=event_type,
        data=data or {"level": "reminder-1"},
        metadata={"as_of": AT.isoformat(), "policy_version": "v1"},
        occurred_at=AT,
        recorded_at=AT + timedelta(seconds=version),
        prev_hash=f"h{version - 1}",
        hash=f"h{version}",
    )


RECORDED = [event(1, "inv-1", "invoice.issued"), event(2, "tick-1", "escalation.clock_ticked"), event(3, "esc-1")]


def test_the_same_events_appended_at_another_time_in_another_database_are_the_same_stream() -> None:
    # Given the same events, appended later, by other transactions, so with other positions, times and hashes
    replayed = [
        replace(e, position=e.position + 50, tx_id=9, recorded_at=e.recorded_at + timedelta(days=400), hash="x")
        for e in RECORDED
    ]
    # Then nothing differs that a replay must reproduce
    assert first_divergence(RECORDED, replayed) is None


def test_a_decision_with_other_data_is_named_with_its_version_and_what_differs() -> None:
    replayed = [*RECORDED[:2], event(3, "esc-1", level="formal-notice")]
    divergence = first_divergence(RECORDED, replayed)
    assert divergence == Divergence(
        "acme-fr",
        "C-1",
        3,
        "reminder.requested esc-1",
        "reminder.requested esc-1",
        (Difference("data.level", '"reminder-1"', '"formal-notice"'),),
    )
    assert str(divergence) == "acme-fr/C-1 v3: reminder.requested esc-1, recorded and replayed differ in data.level"


def test_every_differing_field_is_named_with_both_values_and_a_long_value_is_shortened() -> None:
    # Given a replayed decision of another type and id, other data keys, metadata and instant
    long = "x" * 200
    other = replace(
        event(3, "esc-2", "fee.charged", level="reminder-1", note=long),
        metadata={"as_of": AT.isoformat(), "policy_version": "v2"},
        occurred_at=AT + timedelta(days=1),
    )
    divergence = first_divergence(RECORDED, [*RECORDED[:2], other])
    assert divergence is not None
    fields = {d.field: (d.recorded, d.replayed) for d in divergence.differences}
    assert list(fields) == [
        "event_type",
        "event_id",
        "data.note",
        "metadata.policy_version",
        "occurred_at",
    ]
    assert fields["event_type"] == ('"reminder.requested"', '"fee.charged"')
    assert fields["metadata.policy_version"] == ('"v1"', '"v2"')
    assert fields["data.note"][0] == "-" and fields["data.note"][1].endswith("…")
    assert len(fields["data.note"][1]) == 60
    assert fields["occurred_at"] == ("2026-03-22T09:00:00Z", "2026-03-23T09:00:00Z")
    assert short({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_a_decision_missing_or_extra_in_the_replay_is_a_divergence() -> None:
    missing = first_divergence(RECORDED, RECORDED[:2])
    assert missing is not None and (missing.version, missing.recorded, missing.replayed) == (
        3,
        "reminder.requested esc-1",
        "-",
    )
    assert missing.differences == (Difference("event", "reminder.requested esc-1", "-"),)
    assert str(missing) == "acme-fr/C-1 v3: recorded reminder.requested esc-1, replay produced -"
    extra = first_divergence(RECORDED, [*RECORDED, event(4, "esc-2")])
    assert extra is not None and (extra.version, extra.recorded, extra.replayed) == (4, "-", "reminder.requested esc-2")


def test_the_same_decisions_in_another_order_or_at_another_instant_are_not_the_same_stream() -> None:
    swapped = [RECORDED[0], replace(RECORDED[2], version=2), replace(RECORDED[1], version=3)]
    assert first_divergence(RECORDED, swapped) is not None
    later = [*RECORDED[:2], replace(RECORDED[2], occurred_at=AT + timedelta(hours=1))]
    divergence = first_divergence(RECORDED, later)
    assert divergence is not None and [d.field for d in divergence.differences] == ["occurred_at"]


def test_instants_written_with_an_offset_compare_equal_to_the_same_instants_written_with_z() -> None:
    # Given a tick and a decision recorded when relance spelt UTC "+00:00", replayed today with "Z"
    recorded = [
        replace(event(2, "tick-1", "escalation.clock_ticked"), data={"as_of": AT.isoformat(), "trigger": "timer"}),
        replace(RECORDED[2], metadata={"as_of": AT.isoformat(), "policy_version": "v1"}),
    ]
    z = AT.isoformat().replace("+00:00", "Z")
    replayed = [
        replace(recorded[0], data={"as_of": z, "trigger": "timer"}),
        replace(recorded[1], metadata={"as_of": z, "policy_version": "v1"}),
    ]
    # Then they are the same stream; another instant is not
    assert first_divergence(recorded, replayed) is None
    later = replace(replayed[0], data={"as_of": (AT + timedelta(seconds=1)).isoformat(), "trigger": "timer"})
    assert first_divergence(recorded, [later, replayed[1]]) is not None
