"""The hash chain of a stream: each event's hash covers its canonical form and its predecessor's hash."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


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
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event_hash(**fields: Any) -> str:
    return hashlib.sha256(canonical(**fields)).hexdigest()
