"""What goes into the event store and what comes out of it: the items to record, their outcomes, recorded events.

Plain frozen values, with no database in them, so that a service can build and read them without the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from shared.contracts.events import Event, RelanceEvent, parse
from shared.ledger.hashing import fingerprint

StreamKey = tuple[str, str]
EventKey = tuple[str, str]  # (tenant, event_id)
Status = Literal["applied", "duplicate", "rejected", "conflict"]


@dataclass(frozen=True, slots=True)
class Incoming:
    """An event to record in a customer's stream."""

    tenant: str
    customer_id: str
    event_id: str
    event_type: str
    data: dict[str, Any]
    occurred_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    # None: append whatever the stream's version. Else the stream must be at this version when the item comes;
    # once such an item of a batch fails, the batch's later items with an expected version for that stream fail too,
    # so a writer's decisions land all together or not at all.
    expected_version: int | None = None
    # What an event_id already in the log means. "id": a duplicate, whatever the content (relance's own events,
    # whose deterministic ids may come back with another trigger or timestamp). "content": a duplicate only if the
    # event says the same (type, customer, occurred_at, data: see hashing.fingerprint), else it is rejected as an
    # id reused for another event (the ERP's events: a second invoice under a used id must not vanish silently).
    dedupe: Literal["id", "content"] = "id"
    # The typed data, when the writer has it (else parsed from ``data`` where the state needs it); ``data`` is what
    # is written, and the two must say the same.
    event: Event | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls,
        event: RelanceEvent,
        *,
        stream: StreamKey,
        event_id: str,
        occurred_at: datetime,
        metadata: dict[str, Any],
        expected_version: int | None = None,
    ) -> Incoming:
        """One of relance's own events to record: its type and its written data are the event's, so they agree."""
        tenant, customer_id = stream
        return cls(
            tenant=tenant,
            customer_id=customer_id,
            event_id=event_id,
            event_type=event.TYPE,
            data=event.data(),
            occurred_at=occurred_at,
            metadata=metadata,
            expected_version=expected_version,
            event=event,
        )

    @property
    def stream(self) -> StreamKey:
        return (self.tenant, self.customer_id)

    @property
    def key(self) -> EventKey:
        return (self.tenant, self.event_id)

    def fingerprint(self) -> str:
        return fingerprint(
            event_type=self.event_type, customer_id=self.customer_id, occurred_at=self.occurred_at, data=self.data
        )

    def typed(self) -> Event:
        return self.event if self.event is not None else parse(self.event_type, self.data)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    reason: str = ""
    version: int | None = None


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    position: int
    tx_id: int | None
    tenant: str
    customer_id: str
    version: int
    event_id: str
    event_type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime
    prev_hash: str
    hash: str

    def hash_fields(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "customer_id": self.customer_id,
            "version": self.version,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "data": self.data,
            "metadata": self.metadata,
            "occurred_at": self.occurred_at,
            "recorded_at": self.recorded_at,
            "prev_hash": self.prev_hash,
        }


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a global reader stands: (tx_id, position) on PostgreSQL, position alone on SQLite."""

    tx_id: int = -1
    position: int = 0


LOG_START = Cursor()  # before the first event of the log
