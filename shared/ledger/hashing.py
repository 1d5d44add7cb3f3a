"""The hash chain of a stream: each event's hash covers its canonical form and its predecessor's hash.

Also each event's content fingerprint, which tells a redelivery (same ``event_id``, same content: a harmless
duplicate) from an ``event_id`` reused for another event.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS = "0" * 64
# The columns of an event its hash covers, in the order of :func:`canonical`'s arguments.
HASHED_FIELDS = (
    "tenant",
    "customer_id",
    "version",
    "event_id",
    "event_type",
    "data",
    "metadata",
    "occurred_at",
    "recorded_at",
    "prev_hash",
)


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything relance stores is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def canonical(
    *,
    tenant: str,
    customer_id: str,
    version: int,
    event_id: str,
    event_type: str,
    data: Any,
    metadata: Any,
    occurred_at: datetime,
    recorded_at: datetime,
    prev_hash: str,
) -> bytes:
    document = {
        "tenant": tenant,
        "customer_id": customer_id,
        "version": version,
        "event_id": event_id,
        "event_type": event_type,
        "data": data,
        "metadata": metadata,
        "occurred_at": utc(occurred_at).isoformat(timespec="microseconds"),
        "recorded_at": utc(recorded_at).isoformat(timespec="microseconds"),
        "prev_hash": prev_hash,
    }
    # Keys sorted, no white space, UTF-8 unescaped: byte for byte what json.dumps(sort_keys=True,
    # separators=(",", ":"), ensure_ascii=False) writes, at a fraction of the cost.
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def event_hash(**fields: Any) -> str:
    return hashlib.sha256(canonical(**fields)).hexdigest()


def fingerprint(*, event_type: str, customer_id: str, occurred_at: datetime, data: Any) -> str:
    """SHA-256 of what an event says: its type, customer, instant and data, in canonical form.

    Not the tenant (ids are per tenant already), not the ``event_id`` (the thing being checked), not the metadata
    (transport facts such as the AMQP message id, the routing key or when it was received, which differ between two
    deliveries of one event). ``data`` is the data as the ledger stores it (the contract's normalised form), so this
    can be recomputed from the log at any time. Stored fingerprints depend on this definition: never change it.
    """
    document = {
        "event_type": event_type,
        "customer_id": customer_id,
        "occurred_at": utc(occurred_at).isoformat(timespec="microseconds"),
        "data": data,
    }
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()
