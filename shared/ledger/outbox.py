"""The outbox: commands to the ERP and to other services, written in the transaction of the events that cause them.

:meth:`shared.ledger.writer.Writer.record` calls :func:`command_rows` on the events it appends and inserts the rows
in the same transaction, so a command exists exactly when its cause does (a rollback removes both). The relay
(:mod:`services.relay.worker`) publishes the rows afterwards and marks them published.

A command's id is the ``event_id`` of the event that caused it: deterministic, so the receiver can deduplicate the
redeliveries that at-least-once relaying allows. Its payload is the envelope below plus the causing event's data::

    {"command_id": "...", "command": "erp.credit_block", "tenant": "acme-fr", "customer_id": "C-0042",
     "occurred_at": "2026-12-01T08:00:00+00:00", "sequence": 17, ...the event's data (block_id, reason, ...)}

``sequence`` is the causing event's version in the customer's stream: it only grows, so a receiver can tell a late
duplicate of an older command (a block redelivered after the unblock) from a newer one.

The commands (:data:`shared.contracts.events.COMMANDS`): ``erp.credit_block`` / ``erp.credit_unblock`` from
``credit.blocked`` / ``credit.unblocked``, ``erp.collection_handover`` from ``collection.handed_over`` (the invoices
handed over to collection, with the file's figures), all three for the ERP; ``notifier.send_reminder`` from
``reminder.requested``, for relance's notifier; ``erp.credit_limit_change`` from ``credit_limit.approved`` and
``notifier.send_confirmation`` from ``payment_plan.confirmation_requested``.

People's actions the ERP must know (:data:`shared.contracts.events.ACTION_COMMANDS`): a promise, a dispute, its
resolution or a payment plan recorded by a person is the ERP's own event type, whose metadata ``source`` is one of
:data:`~shared.contracts.events.PEOPLE_SOURCES`; it causes ``erp.promise_to_pay``, ``erp.dispute_opened``,
``erp.dispute_resolved`` or ``erp.payment_plan``, with the person's ``author`` in the payload. The same event types
coming from the ERP itself (``source`` ``erp``) write nothing: the ERP is never told what it said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, or_, select, update
from sqlalchemy.orm import aliased

from shared.contracts import events
from shared.ledger.hashing import utc
from shared.ledger.schema import outbox

# event type appended to the ledger -> command written to the outbox (its AMQP routing key): one table for relance
COMMANDS = events.COMMANDS
# the ERP's event types a person may record -> the command that tells the ERP (only for a person's: see command_kind)
ACTION_COMMANDS = events.ACTION_COMMANDS
KINDS: tuple[str, ...] = tuple(dict.fromkeys([*COMMANDS.values(), *ACTION_COMMANDS.values()]))
"""Every command kind the outbox may hold."""
ENVELOPE = ("command_id", "command", "tenant", "customer_id", "occurred_at", "sequence")


@dataclass(frozen=True, slots=True)
class Command:
    """An outbox row: what the relay and the webhook deliver, and what ``relance outbox`` shows."""

    id: int
    tenant: str
    customer_id: str
    command_id: str
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime | None = None  # after a failed delivery: not before then
    dead_at: datetime | None = None  # an adapter gave up on it
    last_error: str | None = None
    published_at: datetime | None = None


def may_cause_command(event_type: str) -> bool:
    """Whether an event of this type causes a command, at least when a person recorded it."""
    return event_type in COMMANDS or event_type in ACTION_COMMANDS


def command_kind(event_type: str, metadata: dict[str, Any] | None) -> str | None:
    """The command an appended event causes, if any: relance's own events by type; the ERP's event types only when a
    person recorded them (``metadata["source"]`` one of :data:`~shared.contracts.events.PEOPLE_SOURCES`)."""
    kind = COMMANDS.get(event_type)
    if kind is not None:
        return kind
    action = ACTION_COMMANDS.get(event_type)
    if action is not None and isinstance(metadata, dict) and metadata.get("source") in events.PEOPLE_SOURCES:
        return action
    return None


def command_rows(event_rows: Sequence[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Outbox rows for the appended events that cause a command, in the order of the events (each row as the writer
    inserts it: its ``metadata`` says who recorded it, see :func:`command_kind`)."""
    rows = []
    for event in event_rows:
        metadata = event.get("metadata")
        kind = command_kind(event["event_type"], metadata)
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
        if kind in ACTION_COMMANDS.values() and isinstance(metadata, dict) and "author" not in data:
            data["author"] = metadata.get("author")  # who recorded it in relance (the ERP's event type has no author)
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


def claim(
    conn: Connection, limit: int, kinds: Sequence[str] | None = None, now: datetime | None = None
) -> list[Command]:
    """Lock up to ``limit`` pending commands of ``kinds``: each customer's oldest one, skipping locked rows.

    Only a customer's oldest pending command (among ``kinds``) is eligible, so two relays never publish a customer's
    commands out of order (an unblock overtaking its block): while one relay holds a customer's first command, the
    others see it pending and leave the customer's later ones alone. A customer's commands are written under the
    lock of its stream, so their ids are in commit order. A command waiting for its ``next_attempt_at`` (after a
    failed delivery) is not eligible before then, and still holds back the customer's later ones. Must run inside a
    transaction; the locks last until it ends.
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
    due = or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= (now or datetime.now(UTC)))
    query = query.where(due, ~exists().where(before))
    query = query.order_by(outbox.c.id).limit(limit).with_for_update(skip_locked=True, of=outbox)
    return [_command(row) for row in conn.execute(query).mappings()]


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


def retry_later(conn: Connection, id_: int, error: str, at: datetime) -> None:
    """Record a failed delivery attempt: the row stays pending, not eligible before ``at``."""
    conn.execute(
        update(outbox)
        .where(outbox.c.id == id_)
        .values(attempts=outbox.c.attempts + 1, last_error=error, next_attempt_at=at)
    )


def mark_dead(conn: Connection, id_: int, error: str, now: datetime) -> None:
    """Record the last failed attempt and give up: the row is no longer pending (see :func:`rearm`)."""
    conn.execute(
        update(outbox)
        .where(outbox.c.id == id_)
        .values(attempts=outbox.c.attempts + 1, last_error=error, dead_at=now, next_attempt_at=None)
    )


def family(kind: str) -> str:
    """The destination a command kind belongs to (``erp``, ``notifier``): order is kept per customer and family."""
    return kind.split(".", 1)[0]


def families() -> dict[str, tuple[str, ...]]:
    """Command kinds grouped by destination (``erp``, ``notifier``): order is kept, and a stall confined, per family."""
    grouped: dict[str, list[str]] = {}
    for kind in KINDS:
        grouped.setdefault(family(kind), []).append(kind)
    return {name: tuple(kinds) for name, kinds in grouped.items()}


class RearmRefused(Exception):
    """A dead command that must not, or need not, be sent again; the message says why."""


def undelivered(conn: Connection, *, dead: bool, tenant: str | None = None, limit: int = 1000) -> list[Command]:
    """The pending commands (``dead=False``) or the dead-lettered ones (``dead=True``), oldest first."""
    query = select(outbox).where(outbox.c.published_at.is_(None))
    query = query.where(outbox.c.dead_at.is_not(None) if dead else outbox.c.dead_at.is_(None))
    if tenant is not None:
        query = query.where(outbox.c.tenant == tenant)
    return [_command(row) for row in conn.execute(query.order_by(outbox.c.id).limit(limit)).mappings()]


def rearm(conn: Connection, command_id: str, tenant: str | None = None) -> Command:
    """Make a dead-lettered command pending again (attempts reset), unless a later one of its family went out.

    Re-sending a customer's block after its unblock was delivered would block the customer again in the ERP, so a
    command is re-armed only while no later command of the same customer and family was delivered. The later rows
    are locked first: a delivery in progress (its row locked by a worker) is waited for, then seen. Must run inside a
    transaction.
    """
    query = select(outbox).where(outbox.c.command_id == command_id)
    if tenant is not None:
        query = query.where(outbox.c.tenant == tenant)
    found = [_command(row) for row in conn.execute(query.with_for_update()).mappings()]
    if not found:
        raise RearmRefused(f"no command {command_id!r} in the outbox" + (f" of tenant {tenant!r}" if tenant else ""))
    if len(found) > 1:
        tenants = ", ".join(sorted(r.tenant for r in found))
        raise RearmRefused(f"command {command_id!r} exists in several tenants ({tenants}): name one with --tenant")
    row = found[0]
    if row.published_at is not None:
        raise RearmRefused(f"command {command_id} ({row.kind}) was delivered at {row.published_at.isoformat()}")
    if row.dead_at is None:
        raise RearmRefused(f"command {command_id} ({row.kind}) is not dead-lettered: it is still pending")
    kinds = families()[family(row.kind)]
    later = (
        select(outbox)
        .where(
            outbox.c.tenant == row.tenant,
            outbox.c.customer_id == row.customer_id,
            outbox.c.kind.in_(kinds),
            outbox.c.id > row.id,
        )
        .order_by(outbox.c.id)
        .with_for_update()
    )
    for other in (_command(r) for r in conn.execute(later).mappings()):
        if other.published_at is not None:
            raise RearmRefused(
                f"command {command_id} ({row.kind}) must not be sent again: a later {family(row.kind)} command of "
                f"customer {row.customer_id}, {other.command_id} ({other.kind}), was delivered at "
                f"{other.published_at.isoformat()}, and the ERP would apply the older one after it. "
                "Do by hand whatever the ERP still needs"
            )
    conn.execute(update(outbox).where(outbox.c.id == row.id).values(dead_at=None, next_attempt_at=None, attempts=0))
    return row


def _command(row: Any) -> Command:
    def moment(name: str) -> datetime | None:
        return None if row[name] is None else utc(row[name])

    return Command(
        id=row["id"],
        tenant=row["tenant"],
        customer_id=row["customer_id"],
        command_id=row["command_id"],
        kind=row["kind"],
        payload=row["payload"],
        created_at=utc(row["created_at"]),
        attempts=row["attempts"],
        next_attempt_at=moment("next_attempt_at"),
        dead_at=moment("dead_at"),
        last_error=row["last_error"],
        published_at=moment("published_at"),
    )


def pending(conn: Connection, tenant: str | None = None) -> list[tuple[str, str]]:
    """(tenant, command_id) of the commands not yet published, oldest first."""
    query = select(outbox.c.tenant, outbox.c.command_id).where(
        outbox.c.published_at.is_(None), outbox.c.dead_at.is_(None)
    )
    if tenant is not None:
        query = query.where(outbox.c.tenant == tenant)
    return [(t, c) for t, c in conn.execute(query.order_by(outbox.c.id))]
