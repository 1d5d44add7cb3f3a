"""An attacker with the database owner's rights, for the tamper tests: no trigger stops them, relance's code helps.

The careful attacker of the threat model recomputes whatever relance would have computed: the hash chain, the head
row, the snapshot and the projections, using relance's own code. What remains to catch them is the checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, text, update

from shared.ledger.hashing import GENESIS, HASHED_FIELDS, event_hash
from shared.ledger.schema import (
    credits,
    customer_balances,
    customer_state,
    events,
    invoice_balances,
    outbox,
    sent_messages,
)
from shared.ledger.state import CustomerState
from shared.ledger.store import Ledger

PROTECTED = ("events", "sent_messages", "checkpoints")  # the tables whose triggers refuse UPDATE and DELETE
PROJECTIONS = (customer_state, invoice_balances, credits, customer_balances, outbox, sent_messages)


@contextmanager
def attacker(engine: Engine) -> Iterator[Connection]:
    """A transaction of someone who dropped the append-only triggers, as the owner of the tables can."""
    with engine.begin() as conn:
        for table in PROTECTED:
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"))
            else:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only_update"))
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only_delete"))
        yield conn


def of_stream(table: Any, tenant: str, customer_id: str) -> Any:
    return (table.c.tenant == tenant) & (table.c.customer_id == customer_id)


def at_version(tenant: str, customer_id: str, version: int) -> Any:
    return of_stream(events, tenant, customer_id) & (events.c.version == version)


def rows(conn: Connection, tenant: str, customer_id: str) -> list[dict[str, Any]]:
    query = select(events).where(of_stream(events, tenant, customer_id)).order_by(events.c.version)
    return [dict(r) for r in conn.execute(query).mappings()]


def rechain(conn: Connection, tenant: str, customer_id: str, changes: dict[int, dict[str, Any]]) -> None:
    """Rewrite events of a stream in place (``changes``: version -> new column values) and recompute every hash
    from the first changed version on, keeping positions and transaction ids: a tail rewrite no chain can see."""
    previous = GENESIS
    for row in rows(conn, tenant, customer_id):
        row.update(changes.get(row["version"], {}))
        fields = {k: row[k] for k in HASHED_FIELDS}
        fields["prev_hash"] = previous
        digest = event_hash(**fields)
        conn.execute(
            update(events)
            .where(events.c.position == row["position"])
            .values(
                **{k: v for k, v in fields.items() if k in changes.get(row["version"], {})},
                prev_hash=previous,
                hash=digest,
            )
        )
        previous = digest


def append(
    conn: Connection,
    tenant: str,
    customer_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    recorded_at: datetime | None = None,
    event_id: str = "forged-1",
    **placement: Any,
) -> None:
    """Append an event with a correct chain by plain INSERT (``placement``: an explicit position or tx_id)."""
    existing = rows(conn, tenant, customer_id)
    fields = {
        "tenant": tenant,
        "customer_id": customer_id,
        "version": len(existing) + 1,
        "event_id": event_id,
        "event_type": event_type,
        "data": data,
        "metadata": {},
        "occurred_at": datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        "recorded_at": recorded_at or datetime.now(UTC),
        "prev_hash": existing[-1]["hash"] if existing else GENESIS,
    }
    conn.execute(events.insert().values(**fields, hash=event_hash(**fields), **placement))


def recompute_projections(ledger: Ledger, conn: Connection, tenant: str, customer_id: str) -> None:
    """Write the head row, a fresh snapshot and every projection row exactly as relance would from the log now."""
    state = CustomerState(tenant=tenant, customer_id=customer_id)
    for row in rows(conn, tenant, customer_id):
        state.apply(row["event_type"], row["data"], row["occurred_at"].astimezone(UTC).isoformat(), row["event_id"])
        state.version, state.head_hash = row["version"], row["hash"]
    for table in (customer_state, invoice_balances, credits, customer_balances):
        conn.execute(delete(table).where(of_stream(table, tenant, customer_id)))
    now = datetime.now(UTC)
    conn.execute(
        customer_state.insert().values(
            tenant=tenant,
            customer_id=customer_id,
            version=state.version,
            head_hash=state.head_hash,
            snapshot_version=state.version,
            state=state.to_json(),
            updated_at=now,
        )
    )
    state.snapshot_version = state.version  # the head row was just written with the snapshot
    state.changed_credits = set(state.credits)
    ledger._save_projections(conn, [(state, set(state.invoices))], now)


def remove_stream(conn: Connection, tenant: str, customer_id: str) -> None:
    """Delete a stream from the log and every row kept beside it."""
    for table in (events, *PROJECTIONS):
        conn.execute(delete(table).where(of_stream(table, tenant, customer_id)))
