"""Replay: rebuild every escalation decision from the ERP's events and the instants the clock was recorded at.

A decision is a pure function of (ledger state, policy, as-of instant), and every evaluation that decided anything,
or that a timer fired, left an ``escalation.clock_ticked`` event right after the state it read. So a log can be
checked without trusting anything relance did at the time: copy each stream's ERP events (and the facts other
services recorded, such as the notifier's evidence) into a fresh ledger, and at
each recorded tick evaluate the customer at the recorded ``as_of`` (never the wall clock). The decisions this
produces must be the recorded ones, event for event: same ids, same data, same metadata, same versions.

What is compared: every event's version, id, type, data, metadata and ``occurred_at``. Not compared: the time of
the append (``recorded_at``) and so the hash chain, which covers it; ``relance verify`` checks the chain itself.
Instants compare as instants, not as text: a log written when relance spelt UTC ``+00:00`` in a tick and in the
decisions' metadata replays without divergence under today's ``Z``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import structlog
from pydantic import ValidationError

from services.escalation.service import CLOCK_TICKED, PolicySource, Rules, Trigger, evaluate
from shared.contracts import events
from shared.contracts.erp import EVENT_TYPES
from shared.contracts.events import instant_text
from shared.ledger.hashing import utc
from shared.ledger.store import Incoming, Ledger, RecordedEvent

log = structlog.get_logger()

PolicyBooks = Callable[[str], PolicySource]
ERP_EVENTS = frozenset(EVENT_TYPES)


@dataclass(frozen=True, slots=True)
class Divergence:
    """The first place where a replayed stream differs from the recorded one."""

    tenant: str
    customer_id: str
    version: int
    recorded: str  # what the log holds at that version ("-" when nothing)
    replayed: str  # what the replay produced there ("-" when nothing)

    def __str__(self) -> str:
        where = f"{self.tenant}/{self.customer_id} v{self.version}"
        return f"{where}: recorded {self.recorded}, replay produced {self.replayed}"


@dataclass
class ReplayReport:
    streams: int = 0
    erp_events: int = 0  # copied from the source log
    ticks: int = 0  # recorded clock ticks the engine was driven by
    decisions: int = 0  # decisions the replay reproduced
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.divergences


def replay(
    source: Ledger,
    target: Ledger,
    policies: PolicyBooks,
    rules: Rules,
    *,
    tenant: str | None = None,
) -> ReplayReport:
    """Replay every stream of ``source`` (or one tenant's) into the empty ``target`` and compare the two.

    ``policies`` and ``rules`` must be the ones in force when the decisions were taken: a different policy shows up
    as a divergence (the decisions name the policy version they followed).
    """
    report = ReplayReport()
    for key_tenant, customer_id in source.streams(tenant):
        recorded = source.read_stream(key_tenant, customer_id)
        _replay_stream(recorded, target, policies(key_tenant), rules, report)
        divergence = first_divergence(recorded, target.read_stream(key_tenant, customer_id))
        if divergence is not None:
            report.divergences.append(divergence)
            log.warning("replay.diverged", divergence=str(divergence))
        report.streams += 1
    log.info(
        "replay.done",
        streams=report.streams,
        erp_events=report.erp_events,
        ticks=report.ticks,
        decisions=report.decisions,
        divergences=len(report.divergences),
    )
    return report


def _replay_stream(
    recorded: list[RecordedEvent], target: Ledger, policy: PolicySource, rules: Rules, report: ReplayReport
) -> None:
    pending: list[Incoming] = []  # ERP events since the last tick, appended together
    for event in recorded:
        if event.event_type in ERP_EVENTS or is_service_fact(event):
            pending.append(_copy(event))
            continue
        if event.event_type != CLOCK_TICKED:
            continue  # a decision: the tick before it reproduces it
        _flush(target, pending, report)
        tick = events.ClockTicked.model_validate(event.data)
        as_of = utc(tick.as_of)
        trigger = cast(Trigger, tick.trigger)
        result = evaluate(target, policy, event.tenant, event.customer_id, as_of, rules=rules, trigger=trigger)
        report.ticks += 1
        report.decisions += len(result.applied)
    _flush(target, pending, report)


def is_service_fact(event: RecordedEvent) -> bool:
    """A fact another service recorded (the notifier's evidence, the webhook's dead letters): an input, copied as is.

    Those services mark their events with ``metadata.source``; the engine's decisions carry their policy instead.
    """
    return "source" in event.metadata and "policy_version" not in event.metadata


def _flush(target: Ledger, pending: list[Incoming], report: ReplayReport) -> None:
    if pending:
        target.record(pending)
        report.erp_events += len(pending)
        pending.clear()


def _copy(event: RecordedEvent) -> Incoming:
    return Incoming(
        tenant=event.tenant,
        customer_id=event.customer_id,
        event_id=event.event_id,
        event_type=event.event_type,
        data=event.data,
        occurred_at=event.occurred_at,
        metadata=event.metadata,
    )


FIELDS = ("version", "event_id", "event_type", "data", "metadata", "occurred_at")


def signature(event: RecordedEvent) -> tuple[Any, ...]:
    """What a replay must reproduce of an event: everything but the instant of the append and the hashes.

    relance's own events and the decisions' metadata are compared in today's spelling of their instants.
    """
    return (event.version, event.event_id, event.event_type, _data(event), _metadata(event), utc(event.occurred_at))


def _data(event: RecordedEvent) -> Any:
    """relance's own event in today's spelling of its instants; any other event (or a malformed one) as it is."""
    model = events.MODELS.get(event.event_type)
    if model is None:
        return event.data
    try:
        return model.model_validate(event.data).data()
    except ValidationError:
        return event.data


def _metadata(event: RecordedEvent) -> dict[str, Any]:
    metadata = dict(event.metadata)
    if isinstance(metadata.get("as_of"), str):
        metadata["as_of"] = instant_text(datetime.fromisoformat(metadata["as_of"]))
    return metadata


def first_divergence(recorded: list[RecordedEvent], replayed: list[RecordedEvent]) -> Divergence | None:
    """The first version at which the two streams differ, None when they are the same."""
    for n in range(max(len(recorded), len(replayed))):
        left = recorded[n] if n < len(recorded) else None
        right = replayed[n] if n < len(replayed) else None
        if left is not None and right is not None and signature(left) == signature(right):
            continue
        some = left or right
        assert some is not None
        return Divergence(some.tenant, some.customer_id, n + 1, _describe(left, right), _describe(right, left))
    return None


def _describe(event: RecordedEvent | None, other: RecordedEvent | None) -> str:
    if event is None:
        return "-"
    text = f"{event.event_type} {event.event_id}"
    if other is not None and (event.event_type, event.event_id) == (other.event_type, other.event_id):
        differing = {
            name: mine
            for name, mine, theirs in zip(FIELDS, signature(event), signature(other), strict=True)
            if mine != theirs
        }
        text += f" with {differing}"
    return text
