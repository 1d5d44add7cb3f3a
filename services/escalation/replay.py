"""Replay: rebuild every escalation decision from the ERP's events and the instants the clock was recorded at.

A decision is a pure function of (ledger state, policy, as-of instant), and every evaluation that decided anything,
or that a timer fired, left an ``escalation.clock_ticked`` event right after the state it read. So a log can be
checked without trusting anything relance did at the time: take each stream's ERP events (and the facts other
services recorded, such as the notifier's evidence), and at each recorded tick let the engine decide at the recorded
``as_of`` (never the wall clock) on the state they fold into. The decisions this produces must be the recorded ones,
event for event: same ids, same data, same metadata, same versions.

By default (``target=None``) this happens in memory, in one streamed pass over the log in stream order on one
snapshot (:mod:`shared.ledger.scan`): each stream is folded as the ledger folds it (the same checks, each copied event
capped at the instant the source recorded it, as the original fold was), the engine's decisions at a tick are
chained after it exactly as :func:`services.escalation.service.evaluate` records them (the tick when one is due,
decisions the stream already holds skipped), and the stream is compared as it ends. Nothing is written. With a
``target`` ledger (an empty database), the streams are written into it through the ledger's own write path instead,
one evaluation at a time, for whoever wants the replayed log itself. Either way a tenant's streams, or one stream
alone (``customer``), can be replayed; the progress is told to a callback, or without one logged
(``replay.progress``) every :data:`PROGRESS_SECONDS`.

What is compared: every event's version, id, type, data, metadata and ``occurred_at``. Not compared: the time of
the append (``recorded_at``) and so the hash chain, which covers it; ``relance verify`` checks the chain itself.
Instants compare as instants, not as text: a log written when relance spelt UTC ``+00:00`` in a tick and in the
decisions' metadata replays without divergence under today's ``Z``. A divergence names the stream, its first
differing version and what differs there, field by field (:class:`Difference`): the type, the event id, each data
and metadata key with its recorded and replayed values, ``occurred_at``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import structlog
from pydantic import ValidationError
from sqlalchemy import Connection, func, select

from services.escalation.service import (
    CLOCK_TICKED,
    PolicySource,
    Rules,
    Trigger,
    decision_items,
    evaluate,
    tick_event_id,
)
from shared.contracts import events
from shared.contracts.erp import EVENT_TYPES
from shared.contracts.events import instant_text, parse
from shared.ledger.hashing import utc
from shared.ledger.reader import recorded_event
from shared.ledger.scan import STREAMED, Scope, read_only, scoped
from shared.ledger.schema import events as log_table
from shared.ledger.state import CustomerState
from shared.ledger.store import Incoming, Ledger, RecordedEvent

log = structlog.get_logger()

PolicyBooks = Callable[[str], PolicySource]
Progress = Callable[[int, int], None]  # (events read, events in all)
ERP_EVENTS = frozenset(EVENT_TYPES)
PROGRESS_SECONDS = 10.0  # between two replay.progress log lines


VALUE_WIDTH = 60  # characters of a value shown in a difference, beyond which it is shortened with "…"


@dataclass(frozen=True, slots=True)
class Difference:
    """One field that differs between a recorded event and the replayed one, each value as short JSON text.

    ``field`` is ``event`` (one side has no event at that version), ``event_type``, ``event_id``, ``occurred_at``,
    ``data.<key>`` or ``metadata.<key>``; a value absent on one side is ``-``.
    """

    field: str
    recorded: str
    replayed: str


@dataclass(frozen=True, slots=True)
class Divergence:
    """The first place where a replayed stream differs from the recorded one."""

    tenant: str
    customer_id: str
    version: int
    recorded: str  # what the log holds at that version: "<type> <event id>" ("-" when nothing)
    replayed: str  # what the replay produced there ("-" when nothing)
    differences: tuple[Difference, ...] = ()

    def headline(self) -> str:
        """The stream, the version, and the event recorded and replayed there, in one line."""
        where = f"{self.tenant}/{self.customer_id} v{self.version}"
        if self.recorded == self.replayed:
            return f"{where}: {self.recorded}, recorded and replayed differ"
        return f"{where}: recorded {self.recorded}, replay produced {self.replayed}"

    def __str__(self) -> str:
        fields = [d.field for d in self.differences if d.field != "event"]
        return self.headline() + (f" in {', '.join(fields)}" if fields else "")


@dataclass
class ReplayReport:
    events: int = 0  # read from the source log
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
    target: Ledger | None,
    policies: PolicyBooks,
    rules: Rules,
    *,
    tenant: str | None = None,
    customer: str | None = None,
    progress: Progress | None = None,
) -> ReplayReport:
    """Replay every stream of ``source`` (or one tenant's, or with ``customer`` one stream) and compare each with the
    recorded one.

    ``target`` None: in memory, one streamed pass (see the module's doc). A ledger: into that empty ledger.
    ``policies`` and ``rules`` must be the ones in force when the decisions were taken: a different policy shows up
    as a divergence (the decisions name the policy version they followed). ``progress`` is told, after each stream,
    how many events were read of how many; without it, that is logged every :data:`PROGRESS_SECONDS`.
    """
    if customer is not None and tenant is None:
        raise ValueError("a customer's stream is replayed within its tenant: give the tenant too")
    scope = (tenant, customer)
    if target is None:
        report = _replay_in_memory(source, policies, rules, scope, progress)
    else:
        report = _replay_into(source, target, policies, rules, scope, progress)
    log.info(
        "replay.done",
        events=report.events,
        streams=report.streams,
        erp_events=report.erp_events,
        ticks=report.ticks,
        decisions=report.decisions,
        divergences=len(report.divergences),
    )
    return report


# ---------------------------------------------------------------------------------------------------- in memory
class _Pace:
    """After each stream: tell the caller how far the pass is, or if there is none (no terminal to show it on), log
    it every :data:`PROGRESS_SECONDS` (``replay.progress``)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.progress = progress
        self.started = self.shown = time.monotonic()

    def stream_done(self, report: ReplayReport) -> None:
        if self.progress is not None:
            self.progress(report.events, self.total)
            return
        now = time.monotonic()
        if now - self.shown >= PROGRESS_SECONDS:
            self.shown = now
            rate = report.events / (now - self.started) if now > self.started else 0.0
            log.info(
                "replay.progress",
                streams=report.streams,
                events=report.events,
                of=self.total,
                events_per_second=round(rate),
            )


def _count(conn: Connection, scope: Scope) -> int:
    return int(conn.execute(scoped(select(func.count()).select_from(log_table), log_table, scope)).scalar_one())


def _replay_in_memory(
    source: Ledger, policies: PolicyBooks, rules: Rules, scope: Scope, progress: Progress | None
) -> ReplayReport:
    report = ReplayReport()
    books: dict[str, PolicySource] = {}
    with read_only(source.engine) as conn:
        pace = _Pace(_count(conn, scope), progress)
        query = scoped(select(log_table), log_table, scope).order_by(
            log_table.c.tenant, log_table.c.customer_id, log_table.c.version
        )
        rows = conn.execute(query, execution_options=STREAMED).mappings()
        for recorded in _streams(recorded_event(row) for row in rows):
            first = recorded[0]
            book = books.get(first.tenant)
            if book is None:
                book = books[first.tenant] = policies(first.tenant)
            divergence = _replay_stream_in_memory(recorded, book, rules, report)
            _done(report, recorded, divergence)
            pace.stream_done(report)
    return report


def _done(report: ReplayReport, recorded: list[RecordedEvent], divergence: Divergence | None) -> None:
    if divergence is not None:
        report.divergences.append(divergence)
        log.warning("replay.diverged", divergence=str(divergence))
    report.streams += 1
    report.events += len(recorded)


def _streams(rows: Iterator[RecordedEvent]) -> Iterator[list[RecordedEvent]]:
    """The rows of a pass in stream order, one stream at a time."""
    stream: list[RecordedEvent] = []
    for event in rows:
        if stream and (event.tenant, event.customer_id) != (stream[0].tenant, stream[0].customer_id):
            yield stream
            stream = []
        stream.append(event)
    if stream:
        yield stream


@dataclass
class _Replayed:
    """One stream as the replay writes it, in memory: its state, the ids it holds, and its events so far."""

    state: CustomerState
    event_ids: set[str] = field(default_factory=set)
    events: list[RecordedEvent] = field(default_factory=list)

    def append(self, item: Incoming, recorded_at: datetime) -> bool:
        """What the ledger does with one item: skip a known id or an event the state refuses, else fold it in."""
        if item.event_id in self.event_ids:
            return False
        typed = item.typed()
        if self.state.check(typed).verdict != "new":
            return False
        state = self.state
        self.state.apply(typed, item.occurred_at, item.event_id, recorded_at=recorded_at)
        state.version += 1
        self.event_ids.add(item.event_id)
        self.events.append(
            RecordedEvent(
                position=0,
                tx_id=None,
                tenant=item.tenant,
                customer_id=item.customer_id,
                version=state.version,
                event_id=item.event_id,
                event_type=item.event_type,
                data=item.data,
                metadata=item.metadata,
                occurred_at=utc(item.occurred_at),
                recorded_at=recorded_at,
                prev_hash="",
                hash="",
            )
        )
        return True


def _replay_stream_in_memory(
    recorded: list[RecordedEvent], policies: PolicySource, rules: Rules, report: ReplayReport
) -> Divergence | None:
    first = recorded[0]
    stream = _Replayed(CustomerState(tenant=first.tenant, customer_id=first.customer_id))
    for event in recorded:
        if event.event_type in ERP_EVENTS or is_service_fact(event):
            stream.append(_copy(event, typed=True), event.recorded_at)
            report.erp_events += 1
            continue
        if event.event_type != CLOCK_TICKED:
            continue  # a decision: the tick before it reproduces it
        tick = events.ClockTicked.model_validate(event.data)
        as_of = utc(tick.as_of)
        trigger = cast(Trigger, tick.trigger)
        state = stream.state
        policy = policies.for_customer(state.profile)
        decisions = list(rules.decide(state, policy, as_of, rules.rates))
        tick_id = tick_event_id(state.tenant, state.customer_id, as_of, state.version)
        fresh = [d for d in decisions if d.event_id not in stream.event_ids]
        with_tick = bool(fresh or trigger == "timer") and tick_id not in stream.event_ids
        items = decision_items(state, policy, fresh, as_of, trigger, tick_id if with_tick else None)
        for item in items:
            if stream.append(item, as_of) and item.event_id != tick_id:
                report.decisions += 1
        report.ticks += 1
    return first_divergence(recorded, stream.events)


# ---------------------------------------------------------------------------------------------------- into a ledger
def _replay_into(
    source: Ledger, target: Ledger, policies: PolicyBooks, rules: Rules, scope: Scope, progress: Progress | None
) -> ReplayReport:
    report = ReplayReport()
    tenant, customer = scope
    keys = [k for k in source.streams(tenant) if customer is None or k[1] == customer]
    with source.engine.connect() as conn:
        pace = _Pace(_count(conn, scope), progress)
    for key_tenant, customer_id in keys:
        recorded = source.read_stream(key_tenant, customer_id)
        _replay_stream(recorded, target, policies(key_tenant), rules, report)
        _done(report, recorded, first_divergence(recorded, target.read_stream(key_tenant, customer_id)))
        pace.stream_done(report)
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


def _copy(event: RecordedEvent, *, typed: bool = False) -> Incoming:
    return Incoming(
        tenant=event.tenant,
        customer_id=event.customer_id,
        event_id=event.event_id,
        event_type=event.event_type,
        data=event.data,
        occurred_at=event.occurred_at,
        metadata=event.metadata,
        event=parse(event.event_type, event.data) if typed else None,
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


def _as_written(event: RecordedEvent) -> tuple[Any, ...]:
    """What :func:`signature` reads, as it is written: the same written form is the same signature."""
    return (event.version, event.event_id, event.event_type, event.data, event.metadata, event.occurred_at)


def _same(left: RecordedEvent, right: RecordedEvent) -> bool:
    return signature(left) == signature(right)


def first_divergence(recorded: list[RecordedEvent], replayed: list[RecordedEvent]) -> Divergence | None:
    """The first version at which the two streams differ, None when they are the same."""
    for n in range(max(len(recorded), len(replayed))):
        left = recorded[n] if n < len(recorded) else None
        right = replayed[n] if n < len(replayed) else None
        if left is not None and right is not None and (_as_written(left) == _as_written(right) or _same(left, right)):
            continue
        some = left or right
        assert some is not None
        return Divergence(
            some.tenant, some.customer_id, n + 1, _describe(left), _describe(right), differences(left, right)
        )
    return None


def _describe(event: RecordedEvent | None) -> str:
    return "-" if event is None else f"{event.event_type} {event.event_id}"


def differences(recorded: RecordedEvent | None, replayed: RecordedEvent | None) -> tuple[Difference, ...]:
    """What differs between two events at one version, field by field, in the order a reader checks them."""
    if recorded is None or replayed is None:
        return (Difference("event", _describe(recorded), _describe(replayed)),)
    found: list[Difference] = []
    mine = dict(zip(FIELDS, signature(recorded), strict=True))
    theirs = dict(zip(FIELDS, signature(replayed), strict=True))
    for name in ("event_type", "event_id"):
        if mine[name] != theirs[name]:
            found.append(Difference(name, short(mine[name]), short(theirs[name])))
    for name in ("data", "metadata"):
        left, right = mine[name], theirs[name]
        if left == right:
            continue
        if not isinstance(left, dict) or not isinstance(right, dict):
            found.append(Difference(name, short(left), short(right)))
            continue
        for key in sorted(set(left) | set(right)):
            if left.get(key, _ABSENT) != right.get(key, _ABSENT):
                found.append(Difference(f"{name}.{key}", short(left.get(key, _ABSENT)), short(right.get(key, _ABSENT))))
    if mine["occurred_at"] != theirs["occurred_at"]:
        found.append(Difference("occurred_at", short(mine["occurred_at"]), short(theirs["occurred_at"])))
    return tuple(found)


_ABSENT = object()


def short(value: Any, width: int = VALUE_WIDTH) -> str:
    """A value as compact JSON text ("-" when absent), shortened to ``width`` characters."""
    if value is _ABSENT:
        return "-"
    if isinstance(value, datetime):
        text = instant_text(value)
    else:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"
