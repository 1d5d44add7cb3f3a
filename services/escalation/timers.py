"""Durable timers ("look at this customer again on 2 December at 08:00").

They live in the ledger database, never in the broker: a timer survives restarts and weeks of waiting, which a
broker's delayed message does not (it is held unacknowledged in a consumer's memory, and RabbitMQ redelivers what
stays unacknowledged past its ``consumer_timeout``, 30 minutes by default).

Timers: one row per customer, the next instant something is due. A worker claims due rows with
``FOR UPDATE SKIP LOCKED`` and pushes their ``due_at`` one lease ahead in the same statement, so two workers never
fire the same timer, and a worker that dies mid-evaluation leaves a timer that fires again when the lease ends.
Each row remembers the stream version its due time was computed from: a slower evaluation of an older state never
overwrites the timer a newer one set.

The worker's other durable state, where it stands in the event log, is :mod:`services.escalation.cursor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, case, delete, select, tuple_, update

from shared.ledger.db import dialect_insert
from shared.ledger.hashing import utc
from shared.ledger.schema import timers


@dataclass(frozen=True, slots=True)
class Timer:
    tenant: str
    customer_id: str
    due_at: datetime
    version: int


Due = tuple[str, str, "datetime | None", int]  # (tenant, customer_id, next due instant or None, stream version)


class Timers:
    """The timers table; the statements that set timers are built once and run for many customers at a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        insert = dialect_insert(engine, timers)
        self._set = insert.on_conflict_do_update(
            index_elements=["tenant", "customer_id"],
            set_={
                "due_at": insert.excluded.due_at,
                "version": insert.excluded.version,
                "updated_at": insert.excluded.updated_at,
            },
            where=timers.c.version <= insert.excluded.version,
        )
        self._clear = delete(timers).where(
            timers.c.tenant == bindparam("k_tenant"),
            timers.c.customer_id == bindparam("k_customer"),
            timers.c.version <= bindparam("k_version"),
        )
        earliest = case((timers.c.due_at < insert.excluded.due_at, timers.c.due_at), else_=insert.excluded.due_at)
        self._retry = insert.on_conflict_do_update(
            index_elements=["tenant", "customer_id"],
            set_={"due_at": earliest, "updated_at": insert.excluded.updated_at},
        )

    def set(self, tenant: str, customer_id: str, due_at: datetime | None, version: int, now: datetime) -> None:
        """The customer's next due instant as computed from stream ``version`` (None: nothing is due, no timer).

        Ignored if the row holds a due time computed from a later version.
        """
        with self.engine.begin() as conn:
            self.set_many(conn, [(tenant, customer_id, due_at, version)], now)

    def set_many(self, conn: Connection, due: Sequence[Due], now: datetime) -> None:
        """:meth:`set` for many customers, in the caller's transaction: one statement per kind, in key order."""
        ordered = sorted(due, key=lambda d: (d[0], d[1]))
        rows = [
            {"tenant": t, "customer_id": c, "due_at": utc(at), "version": v, "updated_at": now}
            for t, c, at, v in ordered
            if at is not None
        ]
        cleared = [{"k_tenant": t, "k_customer": c, "k_version": v} for t, c, at, v in ordered if at is None]
        if rows:
            conn.execute(self._set, rows)
        if cleared:
            conn.execute(self._clear, cleared)

    def retry_at(self, tenant: str, customer_id: str, at: datetime, now: datetime) -> None:
        """Make sure the customer is looked at again by ``at`` (an earlier timer stays as it is)."""
        with self.engine.begin() as conn:
            self.retry_many(conn, [(tenant, customer_id)], at, now)

    def retry_many(self, conn: Connection, keys: Sequence[tuple[str, str]], at: datetime, now: datetime) -> None:
        """:meth:`retry_at` for many customers, in the caller's transaction."""
        if keys:
            rows = [
                {"tenant": t, "customer_id": c, "due_at": utc(at), "version": -1, "updated_at": now}
                for t, c in sorted(keys)
            ]
            conn.execute(self._retry, rows)

    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[Timer]:
        """Take up to ``limit`` timers due at ``now``, earliest first; each is pushed to ``now + lease`` meanwhile."""
        due = (
            select(timers.c.tenant, timers.c.customer_id)
            .where(timers.c.due_at <= now)
            .order_by(timers.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self.engine.begin() as conn:
            rows = conn.execute(
                update(timers)
                .where(tuple_(timers.c.tenant, timers.c.customer_id).in_(due))
                .values(due_at=now + lease, updated_at=now)
                .returning(timers.c.tenant, timers.c.customer_id, timers.c.version)
            ).all()
        return sorted(
            (Timer(tenant=t, customer_id=c, due_at=now, version=v) for t, c, v in rows),
            key=lambda timer: (timer.tenant, timer.customer_id),
        )

    def get(self, tenant: str, customer_id: str) -> Timer | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(timers.c.due_at, timers.c.version).where(
                    timers.c.tenant == tenant, timers.c.customer_id == customer_id
                )
            ).one_or_none()
        return None if row is None else Timer(tenant, customer_id, utc(row[0]), row[1])

    def all(self, tenant: str | None = None) -> list[Timer]:
        query = select(timers.c.tenant, timers.c.customer_id, timers.c.due_at, timers.c.version)
        if tenant is not None:
            query = query.where(timers.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [Timer(t, c, utc(d), v) for t, c, d, v in conn.execute(query.order_by(timers.c.due_at))]
