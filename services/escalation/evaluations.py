"""What each customer's last complete evaluation saw, so that a sweep skips the customers for whom nothing changed.

The engine is a pure function of (state, policy, rate table, instant), and :func:`~services.escalation.engine.next_due`
names the first instant after an evaluation at which deciding again may find something new (early, never late). So
after an evaluation at ``as_of`` that recorded its decisions and left the stream at version *v*, deciding again on
that same state before its next due instant finds nothing new. One row per customer keeps that: *v*, ``as_of``, the
next due instant (None: nothing is due) and the *basis*, a digest of everything else the decisions depend on (the
tenant's policy book, the rate table, the engine's code; :func:`services.escalation.service.basis_of`).

**The skip rule.** A sweep at instant *t* under basis *b* skips a customer, without loading its state or deciding,
exactly when all of these hold:

1. the customer has an evaluation row, and its stream is still at the row's version (nothing appended since: no ERP
   event, no person's action, no decision of another worker);
2. the row's basis is *b* (the same policy book, rate table and engine code);
3. the row's ``as_of`` is at or before *t* (a backfill to an earlier instant is decided);
4. *t* is before the row's next due instant, or nothing is due (no level, contact day or claim falls due between the
   evaluation and *t*);
5. the customer's timer agrees with the row: the timer set from the same version at the same due instant, or no
   timer when nothing is due (a claimed timer, a retry after a failure or a timer set by hand is decided).

A row is written only by an evaluation that completed: its decisions landed (none was refused) and the state its next
due instant was computed from is the one its own appends left. A customer whose evaluation fails loses its row, so the
next sweep decides it again. Timers that fire are never skipped (they are due), nor are customers the log follower
evaluates (their stream moved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, and_, bindparam, delete, or_, select

from shared.ledger.db import by_tenant, dialect_insert
from shared.ledger.hashing import utc
from shared.ledger.records import StreamKey
from shared.ledger.schema import customer_state, evaluations, timers


@dataclass(frozen=True, slots=True)
class Seen:
    """One customer's complete evaluation: at ``as_of``, stream ``version``, under ``basis``; next due ``next_due``."""

    tenant: str
    customer_id: str
    version: int
    as_of: datetime
    next_due: datetime | None
    basis: str


class Evaluations:
    """The rows of :mod:`services.escalation.evaluations`, written in the caller's transaction beside the timers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        insert = dialect_insert(engine, evaluations)
        self._upsert = insert.on_conflict_do_update(
            index_elements=["tenant", "customer_id"],
            set_={name: insert.excluded[name] for name in ("version", "as_of", "next_due", "basis", "updated_at")},
            where=evaluations.c.version <= insert.excluded.version,
        )
        self._forget = delete(evaluations).where(
            evaluations.c.tenant == bindparam("k_tenant"), evaluations.c.customer_id == bindparam("k_customer")
        )

    def unchanged(self, tenant: str, customer_ids: Sequence[str], at: datetime, basis: str) -> dict[str, Seen]:
        """Those of the tenant's customers the skip rule (see the module's doc) lets a sweep at ``at`` skip."""
        at = utc(at)
        e, s, t = evaluations.c, customer_state.c, timers.c
        found: dict[str, Seen] = {}
        with self.engine.connect() as conn:
            for _, chunk in by_tenant((tenant, c) for c in customer_ids):
                query = (
                    select(e.customer_id, e.version, e.as_of, e.next_due)
                    .join(customer_state, and_(s.tenant == e.tenant, s.customer_id == e.customer_id))
                    .outerjoin(timers, and_(t.tenant == e.tenant, t.customer_id == e.customer_id))
                    .where(e.tenant == tenant, e.customer_id.in_(chunk), s.version == e.version)
                    .where(e.basis == basis, e.as_of <= at)
                    .where(
                        or_(
                            and_(e.next_due.is_(None), t.customer_id.is_(None)),
                            and_(e.next_due > at, t.due_at == e.next_due, t.version == e.version),
                        )
                    )
                )
                for customer_id, version, as_of, next_due in conn.execute(query):
                    due = None if next_due is None else utc(next_due)
                    found[customer_id] = Seen(tenant, customer_id, version, utc(as_of), due, basis)
        return found

    def record(self, conn: Connection, seen: Sequence[Seen], now: datetime) -> None:
        """Keep these evaluations (a row computed from an older version than the stored one is ignored)."""
        if not seen:
            return
        rows = [
            {
                "tenant": s.tenant,
                "customer_id": s.customer_id,
                "version": s.version,
                "as_of": utc(s.as_of),
                "next_due": None if s.next_due is None else utc(s.next_due),
                "basis": s.basis,
                "updated_at": now,
            }
            for s in sorted(seen, key=lambda s: (s.tenant, s.customer_id))
        ]
        conn.execute(self._upsert, rows)

    def forget(self, conn: Connection, keys: Sequence[StreamKey]) -> None:
        """Drop these customers' rows: their next sweep decides them again."""
        if keys:
            conn.execute(self._forget, [{"k_tenant": t, "k_customer": c} for t, c in sorted(keys)])
