"""The PDFs of the letters relance rendered, as evidence: written once, read back, checked against the log's hash.

The bytes live in ``letters`` (one row per tenant and letter id, one letter per command: a command handled twice
finds its letter there and stores nothing new); the customer's stream holds ``letter.rendered`` with the same
SHA-256 and the posting and delivery facts. :func:`store` keeps the first bytes written for a command, as
``sent_messages`` does for e-mails; UPDATE and DELETE are refused by the database. :func:`verify` recomputes the hash
of the stored bytes and compares it with the one the log recorded, which is what an auditor does.

Every read names its tenant: a letter id alone never finds another tenant's letter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine, select

from shared.ledger.db import dialect_insert
from shared.ledger.hashing import utc
from shared.ledger.schema import letters

REMINDER = "reminder"  # a reminder level with the letter channel (the formal notice among them)
CONFIRMATION = "confirmation"  # a payment plan's written confirmation


@dataclass(frozen=True, slots=True)
class StoredLetter:
    tenant: str
    letter_id: str
    customer_id: str
    command_id: str
    kind: str
    sha256: str
    pages: int
    created_at: datetime
    pdf: bytes

    @property
    def intact(self) -> bool:
        """The stored bytes still hash to the hash stored beside them."""
        return hashlib.sha256(self.pdf).hexdigest() == self.sha256


def task_id(command_id: str) -> str:
    """The id of the ``send_letter`` task the notifier leaves with a letter (its fact id ``task/letter``): the fold
    closes it when the letter is posted."""
    return "ntf-" + hashlib.sha256(f"{command_id}\x1ftask/letter".encode()).hexdigest()[:40]


def letter_id(tenant: str, command_id: str) -> str:
    """The letter's id, the same for every rendering of one command: short enough to type (``L-`` and 16 hex)."""
    return "L-" + hashlib.sha256(f"{tenant}\x1f{command_id}".encode()).hexdigest()[:16].upper()


def store(
    engine: Engine,
    *,
    tenant: str,
    customer_id: str,
    command_id: str,
    kind: str,
    pdf: bytes,
    pages: int,
    at: datetime | None = None,
) -> StoredLetter:
    """Keep the command's letter unless one is kept already; returns what is kept (the first bytes win)."""
    row = {
        "tenant": tenant,
        "letter_id": letter_id(tenant, command_id),
        "customer_id": customer_id,
        "command_id": command_id,
        "kind": kind,
        "sha256": hashlib.sha256(pdf).hexdigest(),
        "pdf": pdf,
        "pages": pages,
        "created_at": at or datetime.now(UTC),
    }
    with engine.begin() as conn:
        conn.execute(dialect_insert(conn, letters).on_conflict_do_nothing(), [row])
        found = conn.execute(
            select(letters).where(letters.c.tenant == tenant, letters.c.command_id == command_id)
        ).mappings()
        kept = next(iter(found), None)
    if kept is None:  # pragma: no cover - the insert or an earlier one left a row
        raise RuntimeError(f"the letter of command {command_id} of {tenant} could not be stored")
    return _stored(kept)


def by_command(engine: Engine, tenant: str, command_id: str) -> StoredLetter | None:
    """The letter stored for a command, if any (a command handled again finds the one it rendered)."""
    with engine.connect() as conn:
        row = (
            conn.execute(select(letters).where(letters.c.tenant == tenant, letters.c.command_id == command_id))
            .mappings()
            .first()
        )
    return None if row is None else _stored(row)


def get(engine: Engine, tenant: str, letter_id: str) -> StoredLetter | None:
    """The tenant's letter with this id, or None (another tenant's letter is not found)."""
    with engine.connect() as conn:
        row = (
            conn.execute(select(letters).where(letters.c.tenant == tenant, letters.c.letter_id == letter_id))
            .mappings()
            .first()
        )
    return None if row is None else _stored(row)


def listed(
    engine: Engine, tenant: str, *, on: date | None = None, customer_id: str | None = None
) -> list[StoredLetter]:
    """The tenant's letters, oldest first: those rendered on a day (UTC), or a customer's; the PDFs are left empty
    (read one with :func:`get`)."""
    columns = [c for c in letters.c if c.name != "pdf"]
    query = select(*columns).where(letters.c.tenant == tenant)
    if on is not None:
        start = datetime.combine(on, time(0), tzinfo=UTC)
        query = query.where(letters.c.created_at >= start, letters.c.created_at < start + timedelta(days=1))
    if customer_id is not None:
        query = query.where(letters.c.customer_id == customer_id)
    query = query.order_by(letters.c.created_at, letters.c.customer_id, letters.c.letter_id)
    with engine.connect() as conn:
        return [_stored({**row, "pdf": b""}) for row in conn.execute(query).mappings()]


def read_all(engine: Engine, tenant: str, letter_ids: Sequence[str]) -> dict[str, StoredLetter]:
    """The tenant's letters with these ids, with their PDFs, by id."""
    if not letter_ids:
        return {}
    query = select(letters).where(letters.c.tenant == tenant, letters.c.letter_id.in_(list(letter_ids)))
    with engine.connect() as conn:
        return {row["letter_id"]: _stored(row) for row in conn.execute(query).mappings()}


def verify(letter: StoredLetter, recorded_sha256: str) -> bool:
    """Do the stored bytes still hash to what the log recorded?"""
    return letter.intact and letter.sha256 == recorded_sha256


def proof(letter: Mapping[str, Any]) -> str:
    """A letter's status in words, with its proof: "posted on D (tracking N)", "delivered on D"."""
    words = [letter["status"]]
    if letter.get("printed_on"):
        words.append(f"printed on {letter['printed_on']}")
    if letter.get("posted_on"):
        tracking = f", tracking {letter['tracking_number']}" if letter.get("tracking_number") else ""
        words.append(f"posted on {letter['posted_on']}{tracking}")
    if letter.get("delivered_on"):
        words.append(f"delivered on {letter['delivered_on']}")
    if letter.get("returned_on"):
        words.append(f"returned on {letter['returned_on']} ({letter.get('return_reason', '')})")
    return "; ".join(words)


def _stored(row: object) -> StoredLetter:
    r = dict(row)  # type: ignore[call-overload]  # a RowMapping, or the listing's dict
    return StoredLetter(
        tenant=r["tenant"],
        letter_id=r["letter_id"],
        customer_id=r["customer_id"],
        command_id=r["command_id"],
        kind=r["kind"],
        sha256=r["sha256"],
        pages=int(r["pages"]),
        created_at=utc(r["created_at"]),
        pdf=bytes(r["pdf"]),
    )
