"""Ingest, independent of the broker: decode a batch of deliveries, append the valid ones, say what to reject.

The AMQP worker (:mod:`services.ingest.worker`) and the embedded demo's in-process queue both hand batches to
:class:`Ingestor`; it never acks or publishes itself. A delivery is only acknowledged by the adapter after
:meth:`Ingestor.process` returned, that is after the transaction that applied it committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from shared.contracts import jsonio
from shared.contracts.erp import ErpEvent, InvalidMessage, parse_event
from shared.ledger.store import Incoming, Ledger, LedgerRefused, Outcome

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as a broker handed it over."""

    body: bytes
    routing_key: str = ""
    message_id: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    tag: Any = None  # the broker's handle for acknowledging it


@dataclass(frozen=True, slots=True)
class Rejection:
    delivery: Delivery
    kind: str  # not_json | schema | unknown_event_type | oversize | business_rule | storage
    reason: str
    event_id: str | None = None
    tenant: str | None = None
    customer_id: str | None = None
    event_type: str | None = None  # when the message was a valid event (a business rule or the storage refused it)


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    applied_ids: list[str] = field(default_factory=list)  # event ids, for adapters that answer per message (HTTP)
    duplicate_ids: list[str] = field(default_factory=list)
    kinds: dict[tuple[str, str], int] = field(default_factory=dict)  # (event type, applied | duplicate) -> events

    def merge(self, other: BatchResult) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.rejections.extend(other.rejections)
        self.applied_ids.extend(other.applied_ids)
        self.duplicate_ids.extend(other.duplicate_ids)
        for key, count in other.kinds.items():
            self.kinds[key] = self.kinds.get(key, 0) + count

    def count(self, event_type: str, outcome: str) -> None:
        self.kinds[(event_type, outcome)] = self.kinds.get((event_type, outcome), 0) + 1


class Ingestor:
    def __init__(self, ledger: Ledger, *, max_message_bytes: int = 262144) -> None:
        self.ledger = ledger
        self.max_message_bytes = max_message_bytes

    def process(self, deliveries: Sequence[Delivery]) -> BatchResult:
        """Apply a batch in one transaction. Raises :class:`~shared.ledger.store.LedgerUnavailable` if it should be
        retried whole (:class:`~shared.ledger.store.LedgerNeedsAttention` when a person must fix the database)."""
        result = BatchResult()
        parsed: list[tuple[Delivery, ErpEvent]] = []
        for delivery in deliveries:
            try:
                event = parse_event(delivery.body, self.max_message_bytes, received_at=delivery.received_at)
                parsed.append((delivery, event))
            except InvalidMessage as exc:
                result.rejections.append(_rejected(delivery, exc.kind, exc.reason, _peek(delivery.body)))
        if parsed:
            result.merge(self._append(parsed))
        for rejection in result.rejections:
            log.warning(
                "ingest.rejected",
                kind=rejection.kind,
                reason=rejection.reason,
                event_id=rejection.event_id,
                tenant=rejection.tenant,
                customer=rejection.customer_id,
                routing_key=rejection.delivery.routing_key,
            )
        return result

    def _append(self, parsed: list[tuple[Delivery, ErpEvent]]) -> BatchResult:
        """Append, setting aside the messages whose data the database refuses (kind ``storage``).

        Only a refusal of the data (:class:`LedgerRefused`: SQLSTATE class 22 or 23) is pinned on messages: the
        batch is split until each culprit stands alone, so one bad message cannot hold back the others, even when
        every message of the batch is bad. An outage, or a database a person must fix (a schema out of step, a
        missing grant), raises :class:`LedgerUnavailable` and the whole batch is retried: no message is
        dead-lettered for a fault of the database's own.
        """
        try:
            outcomes = self.ledger.record([_incoming(d, e) for d, e in parsed])
        except LedgerRefused as exc:
            if len(parsed) == 1:
                delivery, event = parsed[0]
                reason = f"the database refused this message: {exc.refusal.describe()}"
                return BatchResult(rejections=[_rejected(delivery, "storage", reason, _ids(event), event.event_type)])
            middle = len(parsed) // 2
            result = self._append(parsed[:middle])
            result.merge(self._append(parsed[middle:]))
            return result
        return _tally(parsed, outcomes)


def _tally(parsed: list[tuple[Delivery, ErpEvent]], outcomes: list[Outcome]) -> BatchResult:
    result = BatchResult()
    for (delivery, event), outcome in zip(parsed, outcomes, strict=True):
        ids = _ids(event)
        if outcome.status == "applied":
            result.applied += 1
            result.applied_ids.append(event.event_id)
            result.count(event.event_type, "applied")
            log.debug("ingest.applied", event_type=event.event_type, version=outcome.version, **_log_ids(ids))
        elif outcome.status == "duplicate":
            result.duplicates += 1
            result.duplicate_ids.append(event.event_id)
            result.count(event.event_type, "duplicate")
            log.info("ingest.duplicate", reason=outcome.reason, **_log_ids(ids))
        else:
            result.rejections.append(_rejected(delivery, "business_rule", outcome.reason, ids, event.event_type))
    return result


def _incoming(delivery: Delivery, event: ErpEvent) -> Incoming:
    metadata = {
        "source": "erp",
        "received_at": delivery.received_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "message_id": delivery.message_id,
        "correlation_id": event.correlation_id or delivery.correlation_id,
        "causation_id": event.causation_id,
        "routing_key": delivery.routing_key or None,
    }
    return Incoming(
        tenant=event.tenant,
        customer_id=event.customer_id,
        event_id=event.event_id,
        event_type=event.event_type,
        data=event.data_json(),
        occurred_at=event.occurred_at,
        metadata={k: v for k, v in metadata.items() if v is not None},
        dedupe="content",  # an ERP reusing an event_id for another event is refused, not taken for a redelivery
        event=event.data,  # parsed once: the state folds the model, the log keeps its JSON
    )


def _ids(event: ErpEvent) -> tuple[str | None, str | None, str | None]:
    return (event.event_id, event.tenant, event.customer_id)


def _log_ids(ids: tuple[str | None, str | None, str | None]) -> dict[str, str | None]:
    return {"event_id": ids[0], "tenant": ids[1], "customer": ids[2]}


def _peek(body: bytes) -> tuple[str | None, str | None, str | None]:
    """Best-effort ids of an invalid message, for the log line and the dead-letter headers (never a duplicated one)."""
    raw = jsonio.fields_once(body)
    return tuple(  # type: ignore[return-value]
        str(raw[k])[:128] if isinstance(raw.get(k), str | int) else None for k in ("event_id", "tenant", "customer_id")
    )


def _rejected(
    delivery: Delivery,
    kind: str,
    reason: str,
    ids: tuple[str | None, str | None, str | None],
    event_type: str | None = None,
) -> Rejection:
    return Rejection(delivery, kind, reason, event_id=ids[0], tenant=ids[1], customer_id=ids[2], event_type=event_type)
