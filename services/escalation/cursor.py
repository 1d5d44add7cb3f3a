"""The escalation worker's log cursor: where the worker following the event log stands, kept in the ledger database.

One row of the ``cursors`` table per named reader: the position (a :class:`~shared.ledger.store.Cursor`, the
transaction id and position of the last event read, as ``Ledger.read_all`` takes and returns it) and a lease. One
process at a time holds the lease, renewed by each :meth:`CursorLease.advance`; the others get None from
:meth:`CursorLease.acquire` until the holder releases it (on stop) or the lease lapses (the holder died); then
one takes over from the stored position. A holder whose lease lapsed and was taken learns it from ``advance``
(False) and stores nothing.

A position is stored only after the events up to it were handled, so events a holder did not finish are read again
by the next one: at least once, which evaluation's deterministic decision ids make harmless.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, or_, select, update

from shared.ledger.db import dialect_insert
from shared.ledger.records import LOG_START, Cursor
from shared.ledger.schema import cursors


class CursorLease:
    """A named global reader's position, held by one process at a time (others wait for the lease to lapse)."""

    def __init__(self, engine: Engine, name: str, holder: str, lease: timedelta) -> None:
        self.engine = engine
        self.name = name
        self.holder = holder
        self.lease = lease

    def acquire(self, now: datetime) -> Cursor | None:
        """The cursor if this process holds (or just took) the lease, else None."""
        with self.engine.begin() as conn:
            conn.execute(
                dialect_insert(conn, cursors)
                .values(name=self.name, tx_id=-1, position=0, holder=None, lease_until=None, updated_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            row = conn.execute(
                update(cursors)
                .where(cursors.c.name == self.name)
                .where(
                    or_(
                        cursors.c.holder.is_(None),
                        cursors.c.holder == self.holder,
                        cursors.c.lease_until < now,
                    )
                )
                .values(holder=self.holder, lease_until=now + self.lease)
                .returning(cursors.c.tx_id, cursors.c.position)
            ).one_or_none()
        return None if row is None else Cursor(tx_id=row[0], position=row[1])

    def advance(self, cursor: Cursor, now: datetime) -> bool:
        """Store the new position if this process still holds the lease (False: another took over)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(cursors)
                .where(cursors.c.name == self.name, cursors.c.holder == self.holder)
                .values(tx_id=cursor.tx_id, position=cursor.position, lease_until=now + self.lease, updated_at=now)
            )
        return bool(result.rowcount)

    def release(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(cursors)
                .where(cursors.c.name == self.name, cursors.c.holder == self.holder)
                .values(holder=None, lease_until=None)
            )

    def position(self) -> Cursor:
        with self.engine.connect() as conn:
            row = conn.execute(select(cursors.c.tx_id, cursors.c.position).where(cursors.c.name == self.name)).first()
        return LOG_START if row is None else Cursor(tx_id=row[0], position=row[1])
