"""The notifier's reads and writes in the ledger database: evidence of sent reminders, facts, the send budget.

The bytes live in ``sent_messages`` (written once; UPDATE and DELETE are refused by the database), the facts in the
customer's stream (``reminder.sending`` / ``reminder.sent`` / ...). :func:`verify` recomputes the hash of the stored
bytes and compares it with the one the log recorded, which is what an auditor does.

:func:`take_slot` keeps the tenant's rate limit (:mod:`services.notifier.rules`) for every notifier worker at once:
each tenant has one row in ``send_budget`` counting the messages of the current minute (UTC), taken with single
conditional statements, so two workers can never both take the last slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, String, any_, bindparam, case, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from shared.ledger.db import dialect_insert, is_postgres
from shared.ledger.hashing import utc
from shared.ledger.reader import load_states
from shared.ledger.records import StreamKey
from shared.ledger.schema import events, send_budget, sent_messages
from shared.ledger.state import CustomerState


@dataclass(frozen=True, slots=True)
class StoredMessage:
    tenant: str
    customer_id: str
    command_id: str
    message_id: str
    sha256: str
    mime: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Fact:
    event_id: str
    event_type: str
    data: dict[str, Any]
    recorded_at: datetime


def store(
    engine: Engine, *, tenant: str, customer_id: str, command_id: str, message_id: str, mime: bytes
) -> StoredMessage:
    """Keep the bytes of the command's message, unless some are kept already; returns what is kept.

    The first bytes stored for a command win: a later attempt sends those, never a rebuild (whose Date would differ),
    so every attempt of one reminder carries the same bytes and the same hash.
    """
    command = {"tenant": tenant, "customer_id": customer_id, "command_id": command_id}
    [kept] = store_all(engine, [(command, message_id, mime)])
    if isinstance(kept, RuntimeError):
        raise kept
    return kept


def store_all(
    engine: Engine, messages: Sequence[tuple[Mapping[str, Any], str, bytes]]
) -> list[StoredMessage | RuntimeError]:
    """:func:`store` for many commands' (command, Message-ID, bytes) in one transaction; what is kept, in order.

    A Message-ID already kept for another command (which should never happen) is a RuntimeError in its place.
    """
    if not messages:
        return []
    at = datetime.now(UTC)
    rows = [
        {
            "tenant": command["tenant"],
            "message_id": message_id,
            "customer_id": command["customer_id"],
            "command_id": command["command_id"],
            "sha256": hashlib.sha256(mime).hexdigest(),
            "mime": mime,
            "created_at": at,
        }
        for command, message_id, mime in messages
    ]
    kept: dict[tuple[str, str], StoredMessage] = {}
    with engine.begin() as conn:
        conn.execute(dialect_insert(conn, sent_messages).on_conflict_do_nothing(), rows)
        for tenant in sorted({row["tenant"] for row in rows}):
            ids = [row["command_id"] for row in rows if row["tenant"] == tenant]
            query = select(sent_messages).where(sent_messages.c.tenant == tenant, sent_messages.c.command_id.in_(ids))
            kept.update(((tenant, found.command_id), found) for found in map(_stored, conn.execute(query).mappings()))
    return [
        kept.get((row["tenant"], row["command_id"]))
        or RuntimeError(f"Message-ID {row['message_id']} is stored for another command than {row['command_id']}")
        for row in rows
    ]


def by_command(engine: Engine, tenant: str, command_id: str) -> StoredMessage | None:
    return _one(engine, sent_messages.c.tenant == tenant, sent_messages.c.command_id == command_id)


def by_message_id(engine: Engine, message_id: str, tenant: str | None = None) -> StoredMessage | None:
    found = with_message_id(engine, message_id, tenant)
    return found[0] if found else None


def with_message_id(engine: Engine, message_id: str, tenant: str | None = None) -> list[StoredMessage]:
    """The stored messages with this Message-ID (one per tenant at most), written with or without angle brackets."""
    message_id = f"<{message_id.strip().removeprefix('<').removesuffix('>')}>"
    where = [sent_messages.c.message_id == message_id]
    if tenant is not None:
        where.append(sent_messages.c.tenant == tenant)
    query = select(sent_messages).where(*where).order_by(sent_messages.c.tenant)
    with engine.connect() as conn:
        return [_stored(row) for row in conn.execute(query).mappings()]


def facts(engine: Engine, tenant: str, event_ids: Iterable[str]) -> dict[str, Fact]:
    """Which of these events the tenant's log holds, by event id."""
    wanted = list(event_ids)
    # PostgreSQL: the ids as one array parameter (a batch looks for thousands; as many parameters, the statement
    # would take longer to write and parse than to run).
    among = events.c.event_id == any_(bindparam("ids", wanted, type_=ARRAY(String)))
    query = select(events.c.event_id, events.c.event_type, events.c.data, events.c.recorded_at).where(
        events.c.tenant == tenant, among if is_postgres(engine) else events.c.event_id.in_(wanted)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {row.event_id: Fact(row.event_id, row.event_type, row.data, utc(row.recorded_at)) for row in rows}


def states(engine: Engine, keys: Iterable[StreamKey]) -> dict[StreamKey, CustomerState]:
    """The customers' states as committed now, read together (a customer unknown to the ledger: an empty state)."""
    wanted = sorted(set(keys))
    with engine.connect() as conn:
        loaded = load_states(conn, wanted) if wanted else {}
    return {key: loaded.get(key) or CustomerState(tenant=key[0], customer_id=key[1]) for key in wanted}


def verify(stored: StoredMessage, recorded_sha256: str) -> bool:
    """Do the stored bytes still hash to what the log recorded?"""
    return hashlib.sha256(stored.mime).hexdigest() == recorded_sha256 == stored.sha256


def _one(engine: Engine, *where: Any) -> StoredMessage | None:
    with engine.connect() as conn:
        row = conn.execute(select(sent_messages).where(*where)).mappings().first()
    return None if row is None else _stored(row)


def _stored(row: Any) -> StoredMessage:
    return StoredMessage(
        tenant=row["tenant"],
        customer_id=row["customer_id"],
        command_id=row["command_id"],
        message_id=row["message_id"],
        sha256=row["sha256"],
        mime=bytes(row["mime"]),
        created_at=utc(row["created_at"]),
    )


def take_slot(engine: Engine, tenant: str, limit: int, now: datetime) -> float:
    """Count one message against the tenant's budget of this minute: 0.0 if it may go now, else seconds to wait."""
    if limit <= 0:
        return 0.0
    window = now.replace(second=0, microsecond=0)
    row = send_budget.c
    with engine.begin() as conn:
        counted = conn.execute(
            update(send_budget)
            .where(row.tenant == tenant, or_(row.window_start != window, row.sent < limit))
            .values(sent=case((row.window_start == window, row.sent + 1), else_=1), window_start=window)
        ).rowcount
        if counted:
            return 0.0
        created = conn.execute(
            dialect_insert(conn, send_budget)
            .values(tenant=tenant, window_start=window, sent=1)
            .on_conflict_do_nothing()
            .returning(row.tenant)
        ).first()
    if created is not None:
        return 0.0
    return max(0.05, (window + timedelta(minutes=1) - now).total_seconds())
