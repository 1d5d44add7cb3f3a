"""Writing the event store: :meth:`Writer.record` appends many events for many customers in one transaction.

For each stream it locks the customer's head row (in a fixed order, so concurrent writers queue instead of
deadlocking), folds the new events into the projected state, appends them with the next versions, and saves the
projections (:mod:`shared.ledger.projections`). The unique constraint on (tenant, customer_id, version) is the
expected-version check: a writer that lost a race fails on it and the whole transaction is retried with fresh state,
so a stream never gets a gap, a duplicate version or a lost event, however many processes append.

An ``event_id`` already in the log is a no-op. Each event's content fingerprint is kept beside it
(``event_fingerprints``), so that for the ERP's events (``Incoming.dedupe == "content"``) a redelivery is told from an
id reused for another event, which is rejected instead of silently dropped. Why the database refused a write (the
data, an outage, a lost race, a schema out of step) is read in :mod:`shared.ledger.refusal`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError

from shared.ledger.bulk import insert_rows
from shared.ledger.cache import StateCache
from shared.ledger.db import dialect_insert
from shared.ledger.errors import LedgerConflict, LedgerNeedsAttention, LedgerRefused, LedgerUnavailable
from shared.ledger.hashing import GENESIS, event_hash, utc
from shared.ledger.lookup import heads, known_in_log
from shared.ledger.outbox import command_rows
from shared.ledger.projections import save_projections
from shared.ledger.reader import Known, load_states
from shared.ledger.records import EventKey, Incoming, Outcome, StreamKey
from shared.ledger.refusal import classify
from shared.ledger.schema import customer_state, event_fingerprints, events, outbox
from shared.ledger.state import Changes, CustomerState

log = structlog.get_logger()


@dataclass
class _StreamPlan:
    before: int  # the stream's version the plan is based on
    rows: list[dict[str, Any]] = field(default_factory=list)
    fingerprints: list[dict[str, Any]] = field(default_factory=list)  # event_fingerprints rows of the new events
    changes: Changes = field(default_factory=Changes)  # invoices and credits the new events changed


@dataclass
class _Plan:
    """What a batch will write: decided before the streams are locked, checked after."""

    outcomes: list[Outcome]
    now: datetime
    streams: dict[StreamKey, _StreamPlan] = field(default_factory=dict)
    # Items whose event_id the batch already used, earlier, for another customer: index -> that earlier item.
    reused: dict[int, Incoming] = field(default_factory=dict)


class Writer:
    """Appends to the log and keeps the projections in step; the states it commits go to the cache it shares with
    the :class:`~shared.ledger.reader.Reader` of the same :class:`~shared.ledger.store.Ledger`."""

    def __init__(
        self,
        engine: Engine,
        cache: StateCache,
        *,
        max_attempts: int = 50,
    ) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        # Committed states by stream, shared with the reader: a Ledger belongs to one thread (one per worker process).
        self._cache = cache

    def record(self, items: Sequence[Incoming], *, conn: Connection | None = None) -> list[Outcome]:
        """Apply the items in one transaction; outcomes in the items' order. Retries lost races itself.

        Raises :class:`LedgerUnavailable` during an outage, :class:`LedgerNeedsAttention` when the database is not
        in a state to take the work (see :mod:`shared.ledger.refusal`), and :class:`LedgerRefused` when it refused
        the rows themselves: then some item can never be written as it is, and the caller must set it aside.

        With ``conn``, the items are appended inside the caller's transaction instead, so they commit or roll back
        with whatever else it writes (an outbox row marked dead with the events saying so). A lost race then fails
        the caller's transaction, which the caller retries whole; the states are not cached, since it may still roll
        back.
        """
        if conn is not None:
            return self._record(conn, items)[0]
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.engine.begin() as conn:
                    outcomes, states = self._record(conn, items)
                self._remember(states)
                return outcomes
            except DBAPIError as exc:
                refusal = classify(exc)
                if refusal.cause == "outage":
                    raise LedgerUnavailable(refusal.describe()) from exc
                if refusal.cause == "attention":
                    raise LedgerNeedsAttention(refusal.describe()) from exc
                if refusal.cause == "data":
                    raise LedgerRefused(refusal) from exc
                if attempt >= self.max_attempts:
                    raise LedgerConflict(f"gave up after {attempt} attempts: {exc.orig}") from exc
                log.info("ledger.retry_conflict", attempt=attempt, error=type(exc.orig).__name__)
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))

    def _record(self, conn: Connection, items: Sequence[Incoming]) -> tuple[list[Outcome], list[CustomerState]]:
        """Decide and fold the batch first, lock its streams only to check and write.

        The Python work (checks, folding, hashing, building rows) happens before any lock is taken, so workers whose
        batches share customers overlap instead of queueing. Once the stream rows are locked, their versions must
        still be those the work was based on; if another writer appended meanwhile, the batch is worked out again
        under the locks from fresh state.
        """
        by_stream: dict[StreamKey, list[int]] = {}
        for index, item in enumerate(items):
            by_stream.setdefault(item.stream, []).append(index)
        keys = sorted(by_stream)
        states = self._states(conn, keys, heads(conn, keys))
        plan = _Plan(outcomes=[Outcome("conflict")] * len(items), now=datetime.now(UTC), reused=_reused_across(items))
        known = known_in_log(conn, items)
        for key in keys:
            self._plan_stream(conn, plan, key, states[key], items, by_stream[key], known)
        locked = self._lock_streams(conn, keys)
        moved = [key for key in keys if locked[key] != plan.streams[key].before]
        if moved:
            # Another writer appended to these streams meanwhile: work them out again, now that they are locked.
            log.info("ledger.replan", streams=len(moved))
            fresh = load_states(conn, [k for k in moved if locked[k] > 0])
            fresh.update({k: CustomerState(tenant=k[0], customer_id=k[1]) for k in moved if locked[k] == 0})
            moved_items = [items[i] for k in moved for i in by_stream[k]]
            known = known_in_log(conn, moved_items)
            # The streams that did not move keep their plan: the ids they append count as known to the others.
            known.update(
                ((f["tenant"], f["event_id"]), f["fingerprint"])
                for key in keys
                if key not in moved
                for f in plan.streams[key].fingerprints
            )
            for key in moved:
                states[key] = fresh[key]
                self._plan_stream(conn, plan, key, fresh[key], items, by_stream[key], known)
        rows = [row for key in keys for row in plan.streams[key].rows]
        if rows:
            insert_rows(conn, events, rows)
            insert_rows(conn, event_fingerprints, [f for key in keys for f in plan.streams[key].fingerprints])
            insert_rows(conn, outbox, command_rows(rows, plan.now))  # commands commit or roll back with their cause
            touched = [(states[k], plan.streams[k].changes) for k in keys if plan.streams[k].rows]
            save_projections(conn, touched, plan.now)
        return plan.outcomes, list(states.values())

    def _plan_stream(
        self,
        conn: Connection,
        plan: _Plan,
        key: StreamKey,
        state: CustomerState,
        batch: Sequence[Incoming],
        indexes: list[int],
        known: Known,
    ) -> None:
        stream = plan.streams[key] = _StreamPlan(before=state.version)
        broken = False  # an item with an expected version did not apply: later ones of the stream must not either
        applied: dict[EventKey, Incoming] = {}  # this stream's items applied so far, to say what a reused id changed
        for index in indexes:
            item = batch[index]
            item_fingerprint = item.fingerprint()
            first = plan.reused.get(index)
            if first is not None:
                outcome = Outcome("rejected", _reuse_reason(conn, item, first))
            else:
                outcome = self._decide(state, item, item_fingerprint, known)
                if outcome.reason == _REUSED:
                    outcome = Outcome("rejected", _reuse_reason(conn, item, applied.get(item.key)))
            if broken and item.expected_version is not None and outcome.status == "applied":
                outcome = Outcome("conflict", "an earlier item of the batch for this stream was not applied")
            if item.expected_version is not None and outcome.status in ("conflict", "rejected"):
                broken = True
            plan.outcomes[index] = outcome
            if outcome.status != "applied":
                continue
            known[item.key] = item_fingerprint
            applied[item.key] = item
            row = _row(state, item, plan.now)
            stream.rows.append(row)
            stream.fingerprints.append(_fingerprint_row(item, item_fingerprint))
            state.version = row["version"]
            state.head_hash = row["hash"]
            stream.changes |= state.apply(item.typed(), item.occurred_at, item.event_id, recorded_at=plan.now)

    @staticmethod
    def _decide(state: CustomerState, item: Incoming, item_fingerprint: str, known: Known) -> Outcome:
        if item.key in known:
            stored = known[item.key]
            if item.dedupe == "content" and stored is not None and stored != item_fingerprint:
                return Outcome("rejected", _REUSED)
            return Outcome("duplicate", f"event_id {item.event_id} is already in the log")
        if item.expected_version is not None and item.expected_version != state.version:
            return Outcome("conflict", f"stream is at version {state.version}, expected {item.expected_version}")
        check = state.check(item.typed())
        if check.verdict == "new":
            return Outcome("applied", version=state.version + 1)
        return Outcome(check.verdict, check.reason)

    def _states(
        self, conn: Connection, keys: list[StreamKey], versions: dict[StreamKey, int]
    ) -> dict[StreamKey, CustomerState]:
        """States of the streams: from this process's cache when still current, else snapshot plus tail."""
        states: dict[StreamKey, CustomerState] = {}
        missing: list[StreamKey] = []
        for key in keys:
            cached = self._cache.pop(key, None)
            version = versions.get(key, 0)
            if cached is not None and cached.version == version:
                states[key] = cached
            elif version == 0:
                states[key] = CustomerState(tenant=key[0], customer_id=key[1])
            else:
                missing.append(key)
        states.update(load_states(conn, missing))
        return states

    def _lock_streams(self, conn: Connection, keys: list[StreamKey]) -> dict[StreamKey, int]:
        """Lock each stream's head row in key order (creating missing ones) and return the versions."""
        versions = heads(conn, keys, lock=True)
        new_keys = [key for key in keys if key not in versions]
        if new_keys:
            now = datetime.now(UTC)
            placeholders = [
                {
                    "tenant": t,
                    "customer_id": c,
                    "version": 0,
                    "head_hash": GENESIS,
                    "snapshot_version": 0,
                    "state": {},
                    "updated_at": now,
                }
                for t, c in new_keys
            ]
            statement = dialect_insert(conn, customer_state).on_conflict_do_nothing()
            conn.execute(statement.returning(customer_state.c.version), placeholders)
            versions.update(heads(conn, new_keys, lock=True))
        return versions

    def _remember(self, states: Iterable[CustomerState]) -> None:
        for state in states:
            self._cache.remember(state)


_REUSED = "event_id reused for another event"  # placeholder reason, replaced by _reuse_reason's


def _reused_across(items: Sequence[Incoming]) -> dict[int, Incoming]:
    """Items whose event_id an earlier item of the batch used for another customer: the first message wins.

    Streams are planned one after the other in key order, not in message order; without this, the later message
    could be applied and the earlier one refused whenever its customer sorts first.
    """
    first: dict[EventKey, Incoming] = {}
    reused: dict[int, Incoming] = {}
    for index, item in enumerate(items):
        seen = first.setdefault(item.key, item)
        if seen is not item and item.dedupe == "content" and seen.customer_id != item.customer_id:
            reused[index] = seen
    return reused


def _fingerprint_row(item: Incoming, item_fingerprint: str) -> dict[str, Any]:
    return {"tenant": item.tenant, "event_id": item.event_id, "fingerprint": item_fingerprint}


def _reuse_reason(conn: Connection, item: Incoming, earlier: Incoming | None) -> str:
    """Why an event_id seen before with other content is refused, naming what differs (never the values)."""
    if earlier is None:
        row = conn.execute(
            select(events.c.event_type, events.c.customer_id, events.c.occurred_at, events.c.data).where(
                events.c.tenant == item.tenant, events.c.event_id == item.event_id
            )
        ).one_or_none()
        before = None if row is None else (row.event_type, row.customer_id, utc(row.occurred_at), row.data)
    else:
        before = (earlier.event_type, earlier.customer_id, utc(earlier.occurred_at), earlier.data)
    differs = []
    if before is not None:
        now = (item.event_type, item.customer_id, utc(item.occurred_at), item.data)
        names = ("event_type", "customer_id", "occurred_at")
        differs = [name for name, a, b in zip(names, before[:3], now[:3], strict=True) if a != b]
        differs += [f"data.{k}" for k in sorted(set(before[3]) | set(now[3])) if before[3].get(k) != now[3].get(k)]
    what = f" (this message differs in {', '.join(differs)})" if differs else ""
    return (
        f"event_id {item.event_id} is already used by another event{what}: an event_id names one event; "
        "send a new event under a new event_id, and a redelivery unchanged"
    )


def _row(state: CustomerState, item: Incoming, now: datetime) -> dict[str, Any]:
    version = state.version + 1
    fields = {
        "tenant": item.tenant,
        "customer_id": item.customer_id,
        "version": version,
        "event_id": item.event_id,
        "event_type": item.event_type,
        "data": item.data,
        "metadata": item.metadata,
        "occurred_at": utc(item.occurred_at),
        "recorded_at": now,
        "prev_hash": state.head_hash,
    }
    return {**fields, "hash": event_hash(**fields)}
