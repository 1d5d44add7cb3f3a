"""The outbox: commands to the ERP and to other services, written in the transaction of the events that cause them.

:meth:`shared.ledger.store.Ledger.record` calls :func:`command_rows` on the events it appends and inserts the rows
in the same transaction, so a command exists exactly when its cause does (a rollback removes both). The relay
(:mod:`shared.relay`) publishes the rows afterwards and marks them published.

A command's id is the ``event_id`` of the event that caused it: deterministic, so the receiver can deduplicate the
redeliveries that at-least-once relaying allows. Its payload is the envelope below plus the causing event's data::

    {"command_id": "...", "command": "erp.credit_block", "tenant": "acme-fr", "customer_id": "C-0042",
     "occurred_at": "2026-12-01T08:00:00+00:00", "sequence": 17, ...the event's data (block_id, reason, ...)}

``sequence`` is the causing event's version in the customer's stream: it only grows, so a receiver can tell a late
duplicate of an older command (a block redelivered after the unblock) from a newer one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, select, update
from sqlalchemy.orm import aliased

from shared.ledger.hashing import utc
from shared.ledger.schema import outbox

# event type appended to the ledger -> command written to the outbox (its AMQP routing key)
COMMANDS: dict[str, str] = {
    "credit.blocked": "erp.credit_block",
    "credit.unblocked": "erp.credit_unblock",
    "reminder.requested": "notifier.send_reminder",
}
ENVELOPE = ("command_id", "command", "tenant", "customer_id", "occurred_at", "sequence")


@dataclass(frozen=True, slots=True)
class Command:
    """An outbox row as the relay sees it."""

    id: int
    tenant: str
    customer_id: str
    command_id: str
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int


def command_rows(event_rows: Sequence[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Outbox rows for the appended events that cause a command, in the order of the events."""
    rows = []
    for event in event_rows:
        kind = COMMANDS.get(event["event_type"])
        if kind is None:
            continue
        envelope = {
            "command_id": event["event_id"],
            "command": kind,
            "tenant": event["tenant"],
            "customer_id": event["customer_id"],
            "occurred_at": utc(event["occurred_at"]).isoformat(),
            "sequence": event["version"],
        }
        data = {k: v for k, v in event["data"].items() if k not in envelope}
        rows.append(
            {
                "tenant": event["tenant"],
                "customer_id": event["customer_id"],
                "command_id": event["event_id"],
                "kind": kind,
                "payload": {**envelope, **data},
                "created_at": now,
                "attempts": 0,
            }
        )
    return rows


def claim(conn: Connection, limit: int, kinds: Sequence[str] | None = None) -> list[Command]:
    """Lock up to ``limit`` pending commands of ``kinds``: each customer's oldest one, skipping locked rows.

    Only a customer's oldest pending command (among ``kinds``) is eligible, so two relays never publish a customer's
    commands out of order (an unblock overtaking its block): while one relay holds a customer's first command, the
    others see it pending and leave the customer's later ones alone. A customer's commands are written under the
    lock of its stream, so their ids are in commit order. Must run inside a transaction; the locks last until it ends.
    """
    earlier = aliased(outbox)
    before = and_(
        earlier.c.tenant == outbox.c.tenant,
        earlier.c.customer_id == outbox.c.customer_id,
        earlier.c.published_at.is_(None),
        earlier.c.dead_at.is_(None),
        earlier.c.id < outbox.c.id,
    )
    query = select(outbox).where(outbox.c.published_at.is_(None), outbox.c.dead_at.is_(None))
    if kinds is not None:
        query = query.where(outbox.c.kind.in_(list(kinds)))
        before = and_(before, earlier.c.kind.in_(list(kinds)))
    query = query.where(~exists().where(before))
    query = query.order_by(outbox.c.id).limit(limit).with_for_update(skip_locked=True, of=outbox)
    return [
        Command(
            id=row["id"],
            tenant=row["tenant"],
            customer_id=row["customer_id"],
            command_id=row["command_id"],
            kind=row["kind"],
            payload=row["payload"],
            created_at=utc(row["created_at"]),
            attempts=row["attempts"],
        )
        for row in conn.execute(query).mappings()
    ]


def mark_published(conn: Connection, ids: Sequence[int], now: datetime | None = None) -> None:
    if ids:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(list(ids)))
            .values(published_at=now or datetime.now(UTC), attempts=outbox.c.attempts + 1)
        )


def count_attempt(conn: Connection, ids: Sequence[int]) -> None:
    """Record a failed publishing attempt (the rows stay pending)."""
    if ids:
        conn.execute(update(outbox).where(outbox.c.id.in_(list(ids))).values(attempts=outbox.c.attempts + 1))


def pending(conn: Connection, tenant: str | None = None) -> list[tuple[str, str]]:
    """(tenant, command_id) of the commands not yet published, oldest first."""
    query = select(outbox.c.tenant, outbox.c.command_id).where(
        outbox.c.published_at.is_(None), outbox.c.dead_at.is_(None)
    )
    if tenant is not None:
        query = query.where(outbox.c.tenant == tenant)
    return [(t, c) for t, c in conn.execute(query.order_by(outbox.c.id))]
