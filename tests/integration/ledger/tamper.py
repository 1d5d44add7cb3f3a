"""A ledger to tamper with, and an attacker with the database owner's rights: no trigger stops them.

The careful attacker of the threat model recomputes whatever relance would have computed: the hash chain, the head
row, the snapshot and the projections, using relance's own code. What remains to catch them is the checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, text, update

from services.notifier import evidence
from shared.contracts.events import parse
from shared.ledger.hashing import GENESIS, HASHED_FIELDS, event_hash
from shared.ledger.projections import save_projections
from shared.ledger.schema import (
    credits,
    customer_balances,
    customer_state,
    events,
    invoice_balances,
    outbox,
    sent_messages,
)
from shared.ledger.state import Changes, CustomerState
from shared.ledger.store import Incoming, Ledger
from tests.factories import CUSTOMER, T0, TENANT, credit_note, customer, incoming, invoice, payment

OTHER, THIRD = "C-0043", "C-0044"
MIME = b"From: billing@example.com\r\nTo: compta@martin.fr\r\nSubject: Rappel\r\n\r\nMontant du : 200,00 EUR\r\n"
PROTECTED = ("events", "sent_messages", "letters", "checkpoints")  # the tables whose triggers refuse UPDATE and DELETE
PROJECTIONS = (customer_state, invoice_balances, credits, customer_balances, outbox, sent_messages)


def books(ledger: Ledger) -> None:
    """Three customers; C-0042: INV-1 paid by P1, INV-2 (200.00) unpaid and reminded, with the reminder's bytes."""
    history = [
        customer("Boulangeries Martin SAS"),
        invoice("INV-1", "100.00", issue_date="2026-09-01"),
        invoice("INV-2", "200.00", issue_date="2026-10-01"),
        payment("P1", "100.00", allocations={"INV-1": "100.00"}),
    ]
    ledger.record([incoming(ev.at(T0 + timedelta(minutes=n))) for n, ev in enumerate(history)])
    ledger.record([incoming(ev, customer_id=OTHER) for ev in (invoice("INV-9", "50.00"), payment("P9", "20.00"))])
    ledger.record([incoming(credit_note("CN3", "10.00"), customer_id=THIRD)])
    reminder = {"reminder_id": "R-1", "level": "reminder_1", "currency": "EUR", "invoice_ids": ["INV-2"],
                "as_of": "2026-11-23T08:00:00Z"}  # fmt: skip
    block = {"block_id": "B-1", "reason": "overdue", "as_of": "2026-11-23T08:00:00Z"}
    now = datetime.now(UTC)
    ledger.record(
        [
            Incoming(TENANT, CUSTOMER, "esc-cmd-1", "reminder.requested", reminder, now),
            Incoming(TENANT, OTHER, "esc-block-1", "credit.blocked", block, now),
        ]
    )
    stored = evidence.store(
        ledger.engine, tenant=TENANT, customer_id=CUSTOMER, command_id="esc-cmd-1",
        message_id="<esc-cmd-1@mail.example.com>", mime=MIME,
    )  # fmt: skip
    facts = {"command_id": "esc-cmd-1", "message_id": stored.message_id, "sha256": stored.sha256}
    ledger.record(
        [
            Incoming(TENANT, CUSTOMER, "notif-sending-1", "reminder.sending", {**facts, "round": 1}, now),
            Incoming(TENANT, CUSTOMER, "notif-sent-1", "reminder.sent", {**facts, "smtp_reply": "250 OK"}, now),
        ]
    )


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
        state.apply(
            parse(row["event_type"], row["data"]), row["occurred_at"], row["event_id"], recorded_at=row["recorded_at"]
        )
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
    everything = Changes(frozenset(state.invoices), frozenset(state.credits))
    save_projections(conn, [(state, everything)], now)


def remove_stream(conn: Connection, tenant: str, customer_id: str) -> None:
    """Delete a stream from the log and every row kept beside it."""
    for table in (events, *PROJECTIONS):
        conn.execute(delete(table).where(of_stream(table, tenant, customer_id)))
