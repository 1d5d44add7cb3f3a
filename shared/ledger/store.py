"""The event store: one append-only, hash-chained stream per (tenant, customer), projections kept in step.

Writing goes through :meth:`Ledger.record`, which takes many events for many customers and applies them in one
transaction: for each stream it locks the customer's projection row (in a fixed order, so concurrent writers queue
instead of deadlocking), folds the new events into the projected state, appends them with the next versions, and
saves the projection. The unique constraint on (tenant, customer_id, version) is the expected-version check: a
writer that lost a race fails on it and the whole transaction is retried with fresh state, so a stream never gets a
gap, a duplicate version or a lost event, however many processes append.

An ``event_id`` already in the log is a no-op. Each event's content fingerprint is kept beside it
(``event_fingerprints``), so that for the ERP's events (``Incoming.dedupe == "content"``) a redelivery is told from an
id reused for another event, which is rejected instead of silently dropped. Why the database refused a write (the
data, an outage, a lost race, a schema out of step) is read in :mod:`shared.ledger.refusal`.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy import Connection, Engine, select, text, tuple_
from sqlalchemy.exc import DBAPIError

from shared.ledger.bulk import insert_rows, update_rows, upsert_rows
from shared.ledger.db import dialect_insert
from shared.ledger.hashing import GENESIS, event_hash, fingerprint, utc
from shared.ledger.outbox import command_rows
from shared.ledger.refusal import Refusal, classify
from shared.ledger.schema import (
    credits,
    customer_balances,
    customer_state,
    event_fingerprints,
    events,
    invoice_balances,
    outbox,
)
from shared.ledger.state import Credit, CustomerState, Invoice

if TYPE_CHECKING:
    from shared.ledger.verify import VerifyReport

log = structlog.get_logger()

StreamKey = tuple[str, str]
EventKey = tuple[str, str]  # (tenant, event_id)
Known = dict[EventKey, str | None]  # event ids in the log (or applied earlier in the batch) -> their fingerprint
Status = Literal["applied", "duplicate", "rejected", "conflict"]


class LedgerError(Exception):
    """Base of the ledger's errors."""


class LedgerUnavailable(LedgerError):
    """The database cannot be reached or refused the work for a reason a retry may cure."""


class LedgerNeedsAttention(LedgerUnavailable):
    """The database refused the work for a reason that is neither the data nor an outage: a person must act.

    A schema out of step with the code (SQLSTATE 42P01 undefined table), a role without its grants (42501), a damaged
    database (XX001). Waiting alone does not cure it, but it is no message's fault either: the work is kept and
    retried with backoff, so it goes through once someone fixed the database.
    """


class LedgerRefused(LedgerError):
    """The database refused the data itself (a data exception, an integrity violation): retrying the same rows can
    never succeed, the caller must find the item that causes it and set it aside."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.describe())
        self.refusal = refusal


class LedgerConflict(LedgerError):
    """Concurrent writers kept colliding past the retry budget (should not happen with row locks)."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """An event to record in a customer's stream."""

    tenant: str
    customer_id: str
    event_id: str
    event_type: str
    data: dict[str, Any]
    occurred_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    # None: append whatever the stream's version. Else the stream must be at this version when the item comes;
    # once such an item of a batch fails, the batch's later items with an expected version for that stream fail too,
    # so a writer's decisions land all together or not at all.
    expected_version: int | None = None
    # What an event_id already in the log means. "id": a duplicate, whatever the content (relance's own events,
    # whose deterministic ids may come back with another trigger or timestamp). "content": a duplicate only if the
    # event says the same (type, customer, occurred_at, data: see hashing.fingerprint), else it is rejected as an
    # id reused for another event (the ERP's events: a second invoice under a used id must not vanish silently).
    dedupe: Literal["id", "content"] = "id"

    @property
    def stream(self) -> StreamKey:
        return (self.tenant, self.customer_id)

    @property
    def key(self) -> EventKey:
        return (self.tenant, self.event_id)

    def fingerprint(self) -> str:
        return fingerprint(
            event_type=self.event_type, customer_id=self.customer_id, occurred_at=self.occurred_at, data=self.data
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    reason: str = ""
    version: int | None = None


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    position: int
    tx_id: int | None
    tenant: str
    customer_id: str
    version: int
    event_id: str
    event_type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime
    prev_hash: str
    hash: str

    def hash_fields(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "customer_id": self.customer_id,
            "version": self.version,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "data": self.data,
            "metadata": self.metadata,
            "occurred_at": self.occurred_at,
            "recorded_at": self.recorded_at,
            "prev_hash": self.prev_hash,
        }


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a global reader stands: (tx_id, position) on PostgreSQL, position alone on SQLite."""

    tx_id: int = -1
    position: int = 0


@dataclass
class _StreamPlan:
    before: int  # the stream's version the plan is based on
    rows: list[dict[str, Any]] = field(default_factory=list)
    fingerprints: list[dict[str, Any]] = field(default_factory=list)  # event_fingerprints rows of the new events
    invoices: set[str] = field(default_factory=set)  # invoices the new events changed


@dataclass
class _Plan:
    """What a batch will write: decided before the streams are locked, checked after."""

    outcomes: list[Outcome]
    now: datetime
    streams: dict[StreamKey, _StreamPlan] = field(default_factory=dict)
    # Items whose event_id the batch already used, earlier, for another customer: index -> that earlier item.
    reused: dict[int, Incoming] = field(default_factory=dict)


class Ledger:
    def __init__(self, engine: Engine, *, max_attempts: int = 50, cache_size: int = 20000) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        self.cache_size = cache_size
        # Committed states by stream: a Ledger belongs to one thread (one per worker process).
        self._cache: OrderedDict[StreamKey, CustomerState] = OrderedDict()
        self._postgres = engine.dialect.name == "postgresql"

    # ------------------------------------------------------------------------------------------------ writing
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
        states = self._states(conn, keys, self._heads(conn, keys))
        plan = _Plan(outcomes=[Outcome("conflict")] * len(items), now=datetime.now(UTC), reused=_reused_across(items))
        known = self._known_event_ids(conn, items)
        for key in keys:
            self._plan_stream(conn, plan, key, states[key], items, by_stream[key], known)
        locked = self._lock_streams(conn, keys)
        moved = [key for key in keys if locked[key] != plan.streams[key].before]
        if moved:
            # Another writer appended to these streams meanwhile: work them out again, now that they are locked.
            log.debug("ledger.replan", streams=len(moved))
            fresh = _load_states(conn, [k for k in moved if locked[k] > 0])
            fresh.update({k: CustomerState(tenant=k[0], customer_id=k[1]) for k in moved if locked[k] == 0})
            moved_items = [items[i] for k in moved for i in by_stream[k]]
            known = self._known_event_ids(conn, moved_items)
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
            touched = [(states[k], plan.streams[k].invoices) for k in keys if plan.streams[k].rows]
            self._save_projections(conn, touched, plan.now)
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
            stream.invoices |= state.apply(
                item.event_type,
                item.data,
                utc(item.occurred_at).isoformat(),
                item.event_id,
                recorded_at=plan.now.isoformat(),
            )

    @staticmethod
    def _decide(state: CustomerState, item: Incoming, item_fingerprint: str, known: Known) -> Outcome:
        if item.key in known:
            stored = known[item.key]
            if item.dedupe == "content" and stored is not None and stored != item_fingerprint:
                return Outcome("rejected", _REUSED)
            return Outcome("duplicate", f"event_id {item.event_id} is already in the log")
        if item.expected_version is not None and item.expected_version != state.version:
            return Outcome("conflict", f"stream is at version {state.version}, expected {item.expected_version}")
        check = state.check(item.event_type, item.data)
        if check.verdict == "new":
            return Outcome("applied", version=state.version + 1)
        return Outcome(check.verdict, check.reason)

    def _heads(self, conn: Connection, keys: list[StreamKey]) -> dict[StreamKey, int]:
        """Current versions of the streams that exist, without locking them."""
        return self._lock_rows(conn, keys, lock=False)

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
        states.update(_load_states(conn, missing))
        return states

    def _lock_streams(self, conn: Connection, keys: list[StreamKey]) -> dict[StreamKey, int]:
        """Lock each stream's head row in key order (creating missing ones) and return the versions."""
        versions = self._lock_rows(conn, keys)
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
            versions.update(self._lock_rows(conn, new_keys))
        return versions

    def _lock_rows(self, conn: Connection, keys: list[StreamKey], *, lock: bool = True) -> dict[StreamKey, int]:
        versions: dict[StreamKey, int] = {}
        for tenant, customers in _by_tenant(keys):
            query = (
                select(customer_state.c.tenant, customer_state.c.customer_id, customer_state.c.version)
                .where(customer_state.c.tenant == tenant, customer_state.c.customer_id.in_(customers))
                .order_by(customer_state.c.tenant, customer_state.c.customer_id)
            )
            if lock and self._postgres:
                query = query.with_for_update()
            versions.update(((t, c), v) for t, c, v in conn.execute(query))
        return versions

    def _remember(self, states: Iterable[CustomerState]) -> None:
        for state in states:
            self._cache[(state.tenant, state.customer_id)] = state
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    @staticmethod
    def _known_event_ids(conn: Connection, items: Sequence[Incoming]) -> Known:
        """The items' event ids that the log holds, with their fingerprints (None for an event without one)."""
        known: Known = {}
        for tenant, event_ids in _by_tenant({i.key for i in items}):
            query = (
                select(events.c.event_id, event_fingerprints.c.fingerprint)
                .outerjoin(
                    event_fingerprints,
                    (event_fingerprints.c.tenant == events.c.tenant)
                    & (event_fingerprints.c.event_id == events.c.event_id),
                )
                .where(events.c.tenant == tenant, events.c.event_id.in_(event_ids))
            )
            known.update(((tenant, event_id), stored) for event_id, stored in conn.execute(query))
        return known

    def _save_projections(self, conn: Connection, touched: list[tuple[CustomerState, set[str]]], now: datetime) -> None:
        """Write what the batch changed: stream heads, snapshots now and then, invoices, credits, balances."""
        heads: list[dict[str, Any]] = []
        snapshots: list[dict[str, Any]] = []
        invoice_rows: list[dict[str, Any]] = []
        credit_rows: list[dict[str, Any]] = []
        balance_rows: list[dict[str, Any]] = []
        for state, invoice_ids in touched:
            key = {"tenant": state.tenant, "customer_id": state.customer_id}
            head = {**key, "version": state.version, "head_hash": state.head_hash}
            if state.snapshot_version == 0 or state.version - state.snapshot_version >= SNAPSHOT_EVERY:
                state.snapshot_version = state.version
                snapshots.append({**head, "snapshot_version": state.version, "state": state.to_json()})
            else:
                heads.append(head)
            for invoice_id in invoice_ids:
                invoice = state.invoices.get(invoice_id)
                if invoice is not None:
                    invoice_rows.append({**key, **_invoice_row(state, invoice)})
            for credit_key in state.changed_credits:
                credit = state.credits[credit_key]
                credit_rows.append({**key, **_credit_row(credit)})
            state.changed_credits.clear()
            balance_rows.extend({**key, **row, "version": state.version} for row in _balance_rows(state))
        update_rows(conn, customer_state, [{**h, "updated_at": now} for h in heads], STATE_KEY)
        update_rows(conn, customer_state, [{**s, "updated_at": now} for s in snapshots], STATE_KEY)
        upsert_rows(conn, invoice_balances, invoice_rows, ("tenant", "customer_id", "invoice_id"))
        upsert_rows(conn, credits, credit_rows, ("tenant", "customer_id", "credit_key"))
        upsert_rows(conn, customer_balances, balance_rows, ("tenant", "customer_id", "currency"))

    # ------------------------------------------------------------------------------------------------ reading
    def state(self, tenant: str, customer_id: str) -> CustomerState:
        """The customer's projected state as committed: the last snapshot and the events after it.

        A state this process committed and nobody appended to since is taken out of the process's cache instead of
        being loaded: the caller owns it from then on (the cache never hands out an object it may still change).
        """
        key = (tenant, customer_id)
        with self.engine.connect() as conn:
            version = self._heads(conn, [key]).get(key, 0)
            cached = self._cache.pop(key, None)
            if cached is not None and cached.version == version:
                return cached
            loaded = _load_states(conn, [key]) if version else {}
        return loaded.get(key) or CustomerState(tenant=tenant, customer_id=customer_id)

    def known_event_ids(self, tenant: str, event_ids: Iterable[str]) -> set[str]:
        """Which of these event ids the tenant's log already holds."""
        probe = [Incoming(tenant, "", event_id, "", {}, datetime.min) for event_id in event_ids]
        with self.engine.connect() as conn:
            return {event_id for _, event_id in self._known_event_ids(conn, probe)}

    def read_stream(self, tenant: str, customer_id: str, from_version: int = 1) -> list[RecordedEvent]:
        with self.engine.connect() as conn:
            result = conn.execute(
                select(events)
                .where(
                    events.c.tenant == tenant,
                    events.c.customer_id == customer_id,
                    events.c.version >= from_version,
                )
                .order_by(events.c.version)
            )
            return [_recorded(row) for row in result.mappings()]

    def fold(self, tenant: str, customer_id: str) -> CustomerState:
        """Rebuild a customer's state from the log alone (what an auditor's replay computes)."""
        state = CustomerState(tenant=tenant, customer_id=customer_id)
        for event in self.read_stream(tenant, customer_id):
            occurred, recorded = utc(event.occurred_at).isoformat(), event.recorded_at.isoformat()
            state.apply(event.event_type, event.data, occurred, event.event_id, recorded_at=recorded)
            state.version = event.version
            state.head_hash = event.hash
        return state

    def read_all(self, after: Cursor = Cursor(), limit: int = 1000) -> tuple[list[RecordedEvent], Cursor]:
        """Events after the cursor in an order no later commit can insert into.

        PostgreSQL: a bigserial is assigned at INSERT but becomes visible at COMMIT, so reading "position > N" can
        pass an event that commits later with a smaller position. Each row records the appending transaction's id;
        the reader orders by (tx_id, position) and stops below the oldest transaction still running
        (``pg_snapshot_xmin``), so every transaction it passes has finished. SQLite has one writer at a time, so
        positions are already in commit order.
        """
        with self.engine.connect() as conn:
            if self._postgres:
                query = (
                    select(events)
                    .where(tuple_(events.c.tx_id, events.c.position) > tuple_(after.tx_id, after.position))
                    .where(events.c.tx_id < text("pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
                    .order_by(events.c.tx_id, events.c.position)
                    .limit(limit)
                )
            else:
                query = select(events).where(events.c.position > after.position).order_by(events.c.position)
                query = query.limit(limit)
            batch = [_recorded(row) for row in conn.execute(query).mappings()]
        if not batch:
            return batch, after
        last = batch[-1]
        return batch, Cursor(tx_id=last.tx_id if last.tx_id is not None else -1, position=last.position)

    def iter_all(self, batch_size: int = 1000) -> Iterator[RecordedEvent]:
        cursor = Cursor()
        while True:
            batch, cursor = self.read_all(cursor, batch_size)
            if not batch:
                return
            yield from batch

    def streams(self, tenant: str | None = None) -> list[StreamKey]:
        with self.engine.connect() as conn:
            query = select(customer_state.c.tenant, customer_state.c.customer_id).where(customer_state.c.version > 0)
            if tenant is not None:
                query = query.where(customer_state.c.tenant == tenant)
            return [
                (t, c) for t, c in conn.execute(query.order_by(customer_state.c.tenant, customer_state.c.customer_id))
            ]

    def verify(self, tenant: str | None = None, customer_id: str | None = None) -> VerifyReport:
        """Check the log, the projections and the checkpoints (see :mod:`shared.ledger.verify`)."""
        from shared.ledger.verify import verify

        return verify(self.engine, tenant, customer_id)


# ---------------------------------------------------------------------------------------------------- helpers
SNAPSHOT_EVERY = 50  # events between two snapshots of a customer's state
STATE_KEY = ("tenant", "customer_id")
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


def _load_states(conn: Connection, keys: Sequence[StreamKey]) -> dict[StreamKey, CustomerState]:
    """States from their snapshots, brought up to date with the events recorded after each snapshot."""
    states: dict[StreamKey, CustomerState] = {}
    for tenant, customers in _by_tenant(keys):
        query = select(customer_state.c.customer_id, customer_state.c.snapshot_version, customer_state.c.state).where(
            customer_state.c.tenant == tenant, customer_state.c.customer_id.in_(customers)
        )
        for customer, snapshot_version, raw in conn.execute(query):
            state = CustomerState.from_json(raw) if raw else CustomerState(tenant=tenant, customer_id=customer)
            state.snapshot_version = snapshot_version
            states[(tenant, customer)] = state
        tail = (
            select(events.c.customer_id, events.c.version, events.c.event_type, events.c.data)
            .add_columns(events.c.occurred_at, events.c.hash, events.c.event_id, events.c.recorded_at)
            .join(
                customer_state,
                (customer_state.c.tenant == events.c.tenant) & (customer_state.c.customer_id == events.c.customer_id),
            )
            .where(customer_state.c.tenant == tenant, customer_state.c.customer_id.in_(customers))
            .where(events.c.version > customer_state.c.snapshot_version)
            .order_by(events.c.customer_id, events.c.version)
        )
        for customer, version, event_type, data, occurred_at, event_hash_, event_id, recorded_at in conn.execute(tail):
            state = states[(tenant, customer)]
            state.apply(
                event_type, data, utc(occurred_at).isoformat(), event_id, recorded_at=utc(recorded_at).isoformat()
            )
            state.version = version
            state.head_hash = event_hash_
    for state in states.values():
        state.changed_credits.clear()
    return states


def _invoice_row(state: CustomerState, invoice: Invoice) -> dict[str, Any]:
    return {
        "invoice_id": invoice.invoice_id,
        "number": invoice.number,
        "currency": invoice.currency,
        "amount": invoice.amount,
        "outstanding": invoice.outstanding,
        "issue_date": invoice.issue_date,
        "due_date": invoice.due_date,
        "status": invoice.status,
        "disputed": invoice.invoice_id in state.disputes,
    }


def _credit_row(credit: Credit) -> dict[str, Any]:
    return {
        "credit_key": credit.key,
        "kind": credit.kind,
        "currency": credit.currency,
        "amount": credit.amount,
        "received_on": credit.on,
        "unallocated": credit.free + sum(credit.earmarks.values(), Decimal(0)),
        "applied": {invoice_id: str(amount) for invoice_id, amount in credit.applied.items()},
    }


def _balance_rows(state: CustomerState) -> list[dict[str, Any]]:
    currencies = {i.currency for i in state.invoices.values()} | {c.currency for c in state.credits.values()}
    balances, unallocated = state.balances(), state.unallocated()
    open_counts: dict[str, int] = {}
    for invoice in state.invoices.values():
        if invoice.is_open:
            open_counts[invoice.currency] = open_counts.get(invoice.currency, 0) + 1
    return [
        {
            "currency": currency,
            "balance": balances.get(currency, Decimal(0)),
            "unallocated": unallocated.get(currency, Decimal(0)),
            "open_invoices": open_counts.get(currency, 0),
        }
        for currency in sorted(currencies)
    ]


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


def _recorded(row: Any) -> RecordedEvent:
    return RecordedEvent(
        position=row["position"],
        tx_id=row["tx_id"],
        tenant=row["tenant"],
        customer_id=row["customer_id"],
        version=row["version"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        data=row["data"],
        metadata=row["metadata"],
        occurred_at=utc(row["occurred_at"]),
        recorded_at=utc(row["recorded_at"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def _by_tenant(keys: Iterable[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """(tenant, second) pairs grouped by tenant, in sorted order, in chunks small enough for one IN list."""
    grouped: dict[str, list[str]] = {}
    for tenant, second in sorted(keys):
        grouped.setdefault(tenant, []).append(second)
    for tenant, values in grouped.items():
        for start in range(0, len(values), 5000):
            yield tenant, values[start : start + 5000]
