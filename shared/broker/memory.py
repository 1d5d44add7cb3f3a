"""An in-process queue with the delivery semantics of a RabbitMQ queue and its dead-letter queue.

Used by ``relance demo`` and by tests, so code written against a broker's contract (take a window of deliveries,
process them, then ack or dead-letter each one) runs with no server. Like RabbitMQ, a delivery stays unacknowledged
until it is acked, rejected or dead-lettered; :meth:`MemoryQueue.recover` puts the unacknowledged ones back at the
head of the queue, flagged as redelivered, which is what a broker does when a consumer dies mid-batch.
Single-threaded by design: the demo's consumer and publisher share one thread.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

REASON_HEADER = "x-relance-reason"
KIND_HEADER = "x-relance-kind"


class UnknownDelivery(KeyError):
    """A tag that is not (or no longer) an unacknowledged delivery of this queue."""


@dataclass(frozen=True, slots=True)
class Message:
    body: bytes
    routing_key: str = ""
    message_id: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    tag: int = 0
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Message
    kind: str
    reason: str


class MemoryQueue:
    """One queue, one dead-letter queue, delivery tags and acknowledgements."""

    def __init__(self, name: str = "relance.ingest") -> None:
        self.name = name
        self._ready: deque[Message] = deque()
        self._unacked: dict[int, Message] = {}
        self._tags = itertools.count(1)
        self.dead_letters: list[DeadLetter] = []
        self.published = 0
        self.acked = 0

    def publish(
        self,
        body: bytes,
        *,
        routing_key: str = "",
        message_id: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        self._ready.append(
            Message(body, routing_key, message_id, correlation_id, dict(headers or {}), tag=0, redelivered=False)
        )
        self.published += 1

    def get(self, max_count: int) -> list[Message]:
        """Hand over up to ``max_count`` messages; each stays unacknowledged until settled."""
        batch: list[Message] = []
        while self._ready and len(batch) < max_count:
            message = replace(self._ready.popleft(), tag=next(self._tags))
            self._unacked[message.tag] = message
            batch.append(message)
        return batch

    def ack(self, tag: int) -> None:
        self._settle(tag)
        self.acked += 1

    def dead_letter(self, tag: int, kind: str, reason: str) -> None:
        """Move the delivery to the dead-letter queue with the reason in its headers, as the AMQP worker does."""
        message = self._settle(tag)
        headers = {**message.headers, KIND_HEADER: kind, REASON_HEADER: reason}
        self.dead_letters.append(DeadLetter(replace(message, headers=headers), kind, reason))

    def recover(self) -> int:
        """Requeue every unacknowledged delivery (a consumer died or a batch must be retried whole)."""
        pending = sorted(self._unacked.values(), key=lambda m: m.tag, reverse=True)
        self._unacked.clear()
        for message in pending:
            self._ready.appendleft(replace(message, redelivered=True))
        return len(pending)

    def _settle(self, tag: int) -> Message:
        try:
            return self._unacked.pop(tag)
        except KeyError:
            raise UnknownDelivery(f"delivery tag {tag} is not unacknowledged on {self.name}") from None

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def unacked(self) -> int:
        return len(self._unacked)
