"""Reading the event store: a customer's state, a stream, the whole log in commit order.

The queries the writer shares are here too (stream versions, known event ids, states loaded from their snapshots),
so that every SELECT the store sends on the log and its head rows is found in one module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, String, any_, bindparam, or_, select, text, tuple_
from sqlalchemy.dialects.postgresql import ARRAY

from shared.contracts.events import parse
from shared.ledger import snapshot
from shared.ledger.cache import StateCache
from shared.ledger.db import by_tenant, has_row_locks, is_postgres
from shared.ledger.hashing import utc
from shared.ledger.records import LOG_START, Cursor, EventKey, Incoming, RecordedEvent, StreamKey
from shared.ledger.schema import customer_state, event_fingerprints, events
from shared.ledger.state import CustomerState

Known = dict[EventKey, str | None]  # event ids in the log (or applied earlier in the batch) -> their fingerprint


class Reader:
    """Reads what is committed; never writes, never locks."""

    def __init__(self, engine: Engine, cache: StateCache) -> None:
        self.engine = engine
        # Committed states by stream, shared with the writer that fills it: see state() and states().
        self._cache = cache

    def state(self, tenant: str, customer_id: str) -> CustomerState:
        """The customer's projected state as committed: the last snapshot and the events after it.

        A state this process committed and nobody appended to since is taken out of the process's cache instead of
        being loaded: the caller owns it from then on (the cache never hands out an object it may still change).
        """
        key = (tenant, customer_id)
        with self.engine.connect() as conn:
            version = heads(conn, [key]).get(key, 0)
            cached: CustomerState | None = self._cache.pop(key, None)
            if cached is not None and cached.version == version:
                return cached
            loaded = load_states(conn, [key]) if version else {}
        return loaded.get(key) or CustomerState(tenant=tenant, customer_id=customer_id)

    def states(self, keys: Sequence[StreamKey]) -> dict[StreamKey, CustomerState]:
        """Many customers' committed states, in one connection and three queries whatever their number: the head
        versions, then the snapshots and the events after them (:func:`load_states`) of those not in the cache.

        Unlike :meth:`state`, the states stay in the process's cache, shared with the writer, so that recording
        decisions taken from them does not load them again: the caller only reads them, and a state whose stream is
        recorded to afterwards is the writer's to change (read it again after recording).
        """
        states: dict[StreamKey, CustomerState] = {}
        with self.engine.connect() as conn:
            versions = heads(conn, keys)
            missing: list[StreamKey] = []
            for key in dict.fromkeys(keys):
                version = versions.get(key, 0)
                cached = self._cache.get(key)
                if cached is not None and cached.version == version:
                    states[key] = cached
                elif version:
                    missing.append(key)
                else:
                    states[key] = CustomerState(tenant=key[0], customer_id=key[1])
            loaded = load_states(conn, missing) if missing else {}
        for state in loaded.values():
            self._cache.remember(state)
        states.update(loaded)
        return states

    def known_event_ids(self, tenant: str, event_ids: Iterable[str]) -> set[str]:
        """Which of these event ids the tenant's log already holds."""
        known: set[str] = set()
        with self.engine.connect() as conn:
            for _, chunk in by_tenant((tenant, event_id) for event_id in set(event_ids)):
                # PostgreSQL: the ids as one array parameter, not one placeholder each (thousands in a batch)
                among = (
                    events.c.event_id == any_(bindparam("ids", chunk, type_=ARRAY(String)))
                    if is_postgres(conn)
                    else events.c.event_id.in_(chunk)
                )
                known.update(conn.execute(select(events.c.event_id).where(events.c.tenant == tenant, among)).scalars())
        return known

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
            return [recorded_event(row) for row in result.mappings()]

    def fold(self, tenant: str, customer_id: str) -> CustomerState:
        """Rebuild a customer's state from the log alone (what an auditor's replay computes)."""
        state = CustomerState(tenant=tenant, customer_id=customer_id)
        for event in self.read_stream(tenant, customer_id):
            state.apply(
                parse(event.event_type, event.data), event.occurred_at, event.event_id, recorded_at=event.recorded_at
            )
            state.version = event.version
            state.head_hash = event.hash
        return state

    def read_all(self, after: Cursor = LOG_START, limit: int = 1000) -> tuple[list[RecordedEvent], Cursor]:
        """Events after the cursor in an order no later commit can insert into.

        PostgreSQL: a bigserial is assigned at INSERT but becomes visible at COMMIT, so reading "position > N" can
        pass an event that commits later with a smaller position. Each row records the appending transaction's id;
        the reader orders by (tx_id, position) and stops below the oldest transaction still running
        (``pg_snapshot_xmin``), so every transaction it passes has finished. SQLite has one writer at a time, so
        positions are already in commit order.
        """
        with self.engine.connect() as conn:
            if is_postgres(conn):
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
            batch = [recorded_event(row) for row in conn.execute(query).mappings()]
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


def heads(conn: Connection, keys: Sequence[StreamKey], *, lock: bool = False) -> dict[StreamKey, int]:
    """The current versions of those streams that exist. With ``lock`` (the writer's), their head rows are locked, in
    key order, until the transaction ends, where the database has row locks (:func:`~shared.ledger.db.has_row_locks`).
    """
    versions: dict[StreamKey, int] = {}
    for tenant, customers in by_tenant(keys):
        query = (
            select(customer_state.c.tenant, customer_state.c.customer_id, customer_state.c.version)
            .where(customer_state.c.tenant == tenant, customer_state.c.customer_id.in_(customers))
            .order_by(customer_state.c.tenant, customer_state.c.customer_id)
        )
        if lock and has_row_locks(conn):
            query = query.with_for_update()
        versions.update(((t, c), v) for t, c, v in conn.execute(query))
    return versions


def known_in_log(conn: Connection, items: Sequence[Incoming]) -> Known:
    """The items' event ids that the log holds, with their fingerprints (None for an event without one)."""
    known: Known = {}
    for tenant, event_ids in by_tenant({i.key for i in items}):
        query = (
            select(events.c.event_id, event_fingerprints.c.fingerprint)
            .outerjoin(
                event_fingerprints,
                (event_fingerprints.c.tenant == events.c.tenant) & (event_fingerprints.c.event_id == events.c.event_id),
            )
            .where(events.c.tenant == tenant, events.c.event_id.in_(event_ids))
        )
        known.update(((tenant, event_id), stored) for event_id, stored in conn.execute(query))
    return known


def load_states(conn: Connection, keys: Sequence[StreamKey]) -> dict[StreamKey, CustomerState]:
    """States from their snapshots, brought up to date with the events recorded after each snapshot.

    A snapshot written before the customer's contacts were kept (:func:`shared.ledger.snapshot.predates_contacts`)
    is set aside: that stream is folded from its first event.
    """
    states: dict[StreamKey, CustomerState] = {}
    for tenant, customers in by_tenant(keys):
        refold: list[str] = []
        query = select(customer_state.c.customer_id, customer_state.c.snapshot_version, customer_state.c.state).where(
            customer_state.c.tenant == tenant, customer_state.c.customer_id.in_(customers)
        )
        for customer, snapshot_version, raw in conn.execute(query):
            if raw and snapshot.predates_contacts(raw):
                raw, snapshot_version = None, 0
                refold.append(customer)
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
            .where(
                or_(events.c.version > customer_state.c.snapshot_version, events.c.customer_id.in_(refold))
                if refold
                else events.c.version > customer_state.c.snapshot_version
            )
            .order_by(events.c.customer_id, events.c.version)
        )
        for customer, version, event_type, data, occurred_at, event_hash_, event_id, recorded_at in conn.execute(tail):
            state = states[(tenant, customer)]
            state.apply(parse(event_type, data), occurred_at, event_id, recorded_at=recorded_at)
            state.version = version
            state.head_hash = event_hash_
    return states


def recorded_event(row: Any) -> RecordedEvent:
    """A row of the ``events`` table (as a mapping) as the event it records, its instants in UTC."""
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
