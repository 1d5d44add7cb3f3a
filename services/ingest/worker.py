"""``relance worker ingest``: consume ERP events from RabbitMQ with pika and apply them to the ledger in batches.

The loop, on one thread with one connection (pika is not thread-safe):

1. consume with a prefetch window, collecting deliveries into a :class:`~services.ingest.batching.Batcher`;
2. when a batch is full or its oldest message has waited ``ingest_batch_ms``, hand it to
   :meth:`Ingestor.process`, which applies the valid events in one transaction and commits;
3. publish each rejected message, unchanged, to the dead-letter queue with the reason in its headers, and wait
   for the broker's confirms;
4. only then ack the whole batch at once (``multiple=True`` on its last delivery tag).

A crash anywhere before step 4 leaves the batch unacked, so RabbitMQ redelivers it, and the ledger ignores the
event ids it already holds: at-least-once in, exactly-once effect. That also makes any number of workers side by
side safe. A database outage keeps the batch unacked and retries it with backoff while the AMQP connection stays
alive; a lost broker connection is re-opened with backoff. SIGTERM or SIGINT finishes the current batch, acks it and
closes.

With ``ingest_partitions`` > 1 the worker consumes partition queues instead (:mod:`services.ingest.partitions`): each
on a channel of its own, as the queue's only consumer (it holds the partition's lock,
:func:`shared.broker.queues.take_lock`, and consumes exclusively), so no other worker applies that partition's
customers meanwhile. Every ``REBALANCE_SECONDS`` it counts
the live workers and takes free partitions up to its fair share, or gives back those above it: it first applies and
acks everything it holds, then closes the partition's channel, so whatever the broker still sent it is requeued, in
order, before the next worker can consume the partition. A killed worker's partitions come back the same way (the
broker requeues what was unacked when the connection drops) and are taken by the others at their next rebalance.
Beside the worker runs a :class:`~services.ingest.router.Router`, which fills the partitions from the ingest queue.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
import structlog
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker
from pika.spec import Basic, BasicProperties
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from services.ingest.batching import Batcher
from services.ingest.errors import IngestError
from services.ingest.partitions import fair_share
from services.ingest.router import Router
from services.ingest.service import BatchResult, Delivery, Ingestor, Rejection
from services.ingest.topology import ROUTING_KEY_HEADER, declare_topology, partition_queue, workers_queue
from shared.broker import amqp, queues
from shared.config import Settings
from shared.ledger.store import Ledger, LedgerConflict, LedgerNeedsAttention, LedgerUnavailable
from shared.logging import DATABASE_AVAILABLE, DATABASE_UNAVAILABLE
from shared.observability.gauges import QueueDepth
from shared.observability.metrics import IngestMetrics
from shared.observability.telemetry import Telemetry
from shared.runtime import Backoff, run_worker

log = structlog.get_logger()

PROGRESS_EVERY_SECONDS = 10.0
REBALANCE_SECONDS = 1.0  # how often a worker of partitions compares what it holds with its fair share
_TICK = 0.5  # longest time between two looks at the stop flag
_MAX_HEADER_CHARS = 4000
_ACCESS_REFUSED = 403  # another worker consumes the partition

Tag = tuple[BlockingChannel, int]  # a delivery's channel and its delivery tag there


class _Stopping(IngestError):
    """Stop was requested while a batch could not be applied: leave it unacked for another worker."""


@dataclass
class Totals:
    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0

    @property
    def messages(self) -> int:
        return self.applied + self.duplicates + self.rejected


def run(settings: Settings, *, stop: threading.Event | None = None) -> int:
    """Run one ingest worker until SIGTERM/SIGINT (or until ``stop`` is set); returns the exit status."""
    telemetry = Telemetry.of(settings, IngestMetrics(), broker=True)

    def start(engine: Engine, stop: threading.Event) -> int:
        ledger = Ledger(engine, cache_bytes=settings.state_cache_mb * 1024 * 1024)
        ingestor = Ingestor(ledger, max_message_bytes=settings.max_message_bytes)
        queues = [settings.ingest_queue]
        if settings.ingest_partitions > 1:
            queues += [partition_queue(settings, n) for n in range(settings.ingest_partitions)]
        telemetry.refresh(QueueDepth(settings, telemetry.metrics, queues))
        if settings.ingest_partitions == 1:
            return IngestWorker(settings, ingestor, stop, telemetry=telemetry).run()
        router = threading.Thread(target=amqp.stay_connected, args=(Router(settings, stop),), name="ingest-router")
        router.start()
        try:
            return IngestWorker(settings, ingestor, stop, telemetry=telemetry).run()
        finally:
            stop.set()
            router.join()

    return run_worker(settings, "ingest", stop, start, telemetry)


class IngestWorker(amqp.Session):
    """The consume → apply → dead-letter → ack loop around one AMQP connection (re-opened when lost)."""

    service = "ingest"

    def __init__(
        self,
        settings: Settings,
        ingestor: Ingestor,
        stop: threading.Event,
        *,
        telemetry: Telemetry[IngestMetrics] | None = None,
    ) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.stop = stop
        telemetry = telemetry or Telemetry.offline(IngestMetrics())
        self.metrics = telemetry.metrics
        self.health = telemetry.health
        self.health.totals = lambda: vars(self.totals)
        # A batch can never hold more than the prefetch window: the broker would not send the rest.
        self.batcher: Batcher[Delivery] = Batcher(
            min(settings.ingest_batch_size, settings.ingest_prefetch), settings.ingest_batch_ms / 1000
        )
        self.totals = Totals()
        self._connection: BlockingConnection | None = None
        self._consume_channel: BlockingChannel | None = None
        self._publish_channel: BlockingChannel | None = None
        self._probe_channel: BlockingChannel | None = None
        self._held: dict[int, BlockingChannel] = {}  # partitions this worker consumes, by number
        self._locks: dict[int, BlockingChannel] = {}  # the channel of each held partition's lock
        self._rebalance_at = 0.0
        self._properties: dict[Tag, BasicProperties] = {}
        self._cancelled = False
        self._ledger_backoff = Backoff(settings.retry_max_seconds)
        self._progress_at = time.monotonic()
        self._progress_totals = Totals()

    # ------------------------------------------------------------------------------------------------ lifecycle
    def run(self) -> int:
        log.info(
            "ingest.worker_started",
            queue=self.settings.ingest_queue,
            exchange=self.settings.events_exchange,
            prefetch=self.settings.ingest_prefetch,
            batch_size=self.batcher.max_size,
            batch_ms=self.settings.ingest_batch_ms,
            partitions=self.settings.ingest_partitions,
        )
        amqp.stay_connected(self)
        log.info("ingest.worker_stopped", **vars(self.totals))  # batches, applied, duplicates, rejected
        return 0

    # ------------------------------------------------------------------------------------------------ connection
    def work_done(self) -> int:
        return self.totals.batches

    def serve(self) -> None:
        try:
            self._consume()
        except _Stopping:
            log.warning("ingest.stopped_with_unapplied_batch", unacked=len(self.batcher))

    def forget(self) -> dict[str, object]:
        # Whatever was delivered but not acked goes back to the queue when the connection goes away.
        dropped = len(self.batcher.clear())
        self._properties.clear()
        self._held.clear()
        self._locks.clear()
        return {"unacked_dropped": dropped}

    def connect(self) -> None:
        self._cancelled = False
        connection = amqp.connect(self.settings, "ingest")
        self._connection = connection
        declare_topology(connection, self.settings)
        self._publish_channel = connection.channel()
        self._publish_channel.confirm_delivery()
        channel = connection.channel()
        channel.add_on_cancel_callback(self._on_cancel)
        self._consume_channel = channel
        if self.settings.ingest_partitions == 1:
            channel.basic_qos(prefetch_count=self.settings.ingest_prefetch)
            channel.basic_consume(self.settings.ingest_queue, on_message_callback=self._on_message)
            return
        # Partitions: this channel only says "one more worker" (its queue never holds a message).
        channel.basic_consume(workers_queue(self.settings), on_message_callback=self._on_message)
        self._probe_channel = connection.channel()
        self._held = {}
        self._locks = {}
        # The first look waits a round, so that workers started together are counted before any takes a share.
        self._rebalance_at = time.monotonic() + REBALANCE_SECONDS

    def disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self._consume_channel = self._publish_channel = self._probe_channel = None
        self._held = {}
        self._locks = {}
        amqp.close_connection("ingest", connection)

    # ------------------------------------------------------------------------------------------------ partitions
    def _rebalance(self) -> None:
        """Hold a fair share of the partitions: take free ones up to it, give back those above it."""
        now = time.monotonic()
        if self.settings.ingest_partitions == 1 or now < self._rebalance_at:
            return
        self._rebalance_at = now + REBALANCE_SECONDS
        probe = self._probe_channel
        assert probe is not None
        workers = probe.queue_declare(workers_queue(self.settings), passive=True).method.consumer_count
        share = fair_share(self.settings.ingest_partitions, workers)
        if len(self._held) > share:
            self._release(sorted(self._held)[share:])
            return
        count = self.settings.ingest_partitions
        start = random.randrange(count)  # workers starting together look at the partitions in different orders
        for partition in [(start + n) % count for n in range(count)]:
            if len(self._held) >= share:
                break
            if partition in self._held:
                continue
            name = partition_queue(self.settings, partition)
            if probe.queue_declare(name, passive=True).method.consumer_count == 0:
                self._claim(partition)

    def _claim(self, partition: int) -> None:
        assert self._connection is not None
        channel = self._connection.channel()
        channel.basic_qos(prefetch_count=self.settings.ingest_prefetch)
        channel.add_on_cancel_callback(self._on_cancel)
        name = partition_queue(self.settings, partition)
        lock = queues.take_lock(self._connection, name)  # quorum queues do not enforce exclusive consumers
        if lock is None:
            channel.close()
            return  # another worker took it first
        try:
            channel.basic_consume(name, on_message_callback=self._on_message, exclusive=True)
        except ChannelClosedByBroker as exc:
            if exc.reply_code != _ACCESS_REFUSED:
                raise
            queues.release_lock(lock, name)
            return  # a worker of an earlier release (exclusive consumer, no lock) holds it
        self._held[partition] = channel
        self._locks[partition] = lock
        log.info("ingest.partition_taken", partition=partition, queue=name, held=sorted(self._held))

    def _release(self, partitions: list[int]) -> None:
        """Give partitions back: apply and ack all that is held first, so the next worker starts after it."""
        while len(self.batcher):
            self._apply(self.batcher.take())
        closed = set()
        for partition in partitions:
            channel = self._held.pop(partition)
            closed.add(channel)
            channel.close()  # what it delivered since is unacked: the broker requeues it, in order
            queues.release_lock(self._locks.pop(partition), partition_queue(self.settings, partition))
            log.info("ingest.partition_released", partition=partition, held=sorted(self._held))
        kept = [d for d in self.batcher.clear() if d.tag[0] not in closed]
        for delivery in kept:
            self.batcher.add(delivery)
        self._properties = {tag: p for tag, p in self._properties.items() if tag[0] not in closed}

    # ------------------------------------------------------------------------------------------------ consuming
    def _consume(self) -> None:
        connection = self._connection
        assert connection is not None and self._consume_channel is not None
        while not self.stop.is_set():
            self.health.beat()
            if self._cancelled:
                raise amqp.ConsumerCancelled(f"consumer of {self.settings.ingest_queue} cancelled by the broker")
            self._rebalance()  # also between two full batches: a busy worker makes room for one that joins
            if self.batcher.ready():
                self._apply(self.batcher.take())
                continue
            wait = self.batcher.wait_time()
            connection.process_data_events(time_limit=_TICK if wait is None else min(wait, _TICK))
            self._maybe_log_progress()
        # Graceful stop: no new deliveries, apply and ack what we already hold, then close.
        for channel in [self._consume_channel, *self._held.values()]:
            for tag in list(channel.consumer_tags):
                channel.basic_cancel(tag)
        while len(self.batcher):
            self._apply(self.batcher.take())

    def _on_message(
        self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        tag = (channel, method.delivery_tag)
        self._properties[tag] = properties
        headers = properties.headers or {}
        routing_key = headers.get(ROUTING_KEY_HEADER) if self.settings.ingest_partitions > 1 else None
        self.batcher.add(
            Delivery(
                body=body,
                routing_key=routing_key if isinstance(routing_key, str) else method.routing_key or "",
                message_id=properties.message_id,
                correlation_id=properties.correlation_id,
                headers=headers,
                received_at=datetime.now(UTC),
                tag=tag,
            )
        )

    def _on_cancel(self, frame: Any) -> None:
        self._cancelled = True

    # ------------------------------------------------------------------------------------------------ applying
    def _apply(self, batch: list[Delivery]) -> None:
        started = time.monotonic()
        result, seconds = self._process_until_committed(batch)
        self._dead_letter(result.rejections)
        # Every earlier tag of a channel was acked with an earlier batch: one ack per channel covers this batch.
        last: dict[BlockingChannel, int] = {}
        for delivery in batch:
            channel, tag = delivery.tag
            last[channel] = tag
        for channel, tag in last.items():
            channel.basic_ack(delivery_tag=tag, multiple=True)
        for delivery in batch:
            self._properties.pop(delivery.tag, None)
        self.batcher.restart_window()
        self.totals.batches += 1
        self.totals.applied += result.applied
        self.totals.duplicates += result.duplicates
        self.totals.rejected += len(result.rejections)
        self._count(batch, result, seconds)
        log.info(
            "ingest.batch_committed",
            size=len(batch),
            applied=result.applied,
            duplicates=result.duplicates,
            rejected=len(result.rejections),
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _count(self, batch: list[Delivery], result: BatchResult, seconds: float) -> None:
        metrics = self.metrics
        metrics.batch(len(batch), seconds)
        for (kind, outcome), count in result.kinds.items():
            metrics.events(kind, outcome, count)
        for rejection in result.rejections:
            metrics.events(rejection.event_type or "unknown", "rejected")
            metrics.dead_lettered(rejection.kind)

    def _process_until_committed(self, batch: list[Delivery]) -> tuple[BatchResult, float]:
        """Apply the batch, retrying it whole while the database is unavailable; never returns before a commit.

        Returns the result and the time of the attempt that committed.
        """
        while True:
            started = time.monotonic()
            try:
                result = self._process_isolating(batch)
            except (LedgerUnavailable, LedgerConflict) as exc:
                if self.stop.is_set():
                    raise _Stopping() from exc
                delay = self._ledger_backoff.next()
                error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if isinstance(exc, LedgerNeedsAttention):
                    # Not an outage that passes by itself and not the messages' fault: say so loudly, keep the batch.
                    log.error(
                        "ingest.ledger_needs_attention",
                        error=error,
                        hint="the database refuses the batch for a reason a person must fix (schema out of step: "
                        "run `relance db upgrade`; missing grants: rerun it with the runtime role); the batch is kept "
                        "and retried",
                        batch=len(batch),
                        retry_in=round(delay, 2),
                    )
                else:
                    log.warning(
                        DATABASE_UNAVAILABLE, service="ingest", error=error, batch=len(batch), retry_in=round(delay, 2)
                    )
                self._sleep(delay)
                continue
            seconds = time.monotonic() - started
            if self._ledger_backoff.attempts:
                log.info(DATABASE_AVAILABLE, service="ingest", retries=self._ledger_backoff.attempts)
                self._ledger_backoff.reset()
            return result, seconds

    def _process_isolating(self, batch: list[Delivery]) -> BatchResult:
        """Like :meth:`Ingestor.process`, but a message that makes it fail unexpectedly is rejected on its own.

        Without this, one message tripping a bug would be redelivered and fail forever, holding the queue.
        """
        try:
            return self.ingestor.process(batch)
        except (LedgerUnavailable, LedgerConflict):
            raise
        except DBAPIError as exc:
            if getattr(exc, "connection_invalidated", False):
                raise LedgerUnavailable(str(exc.orig or exc)) from exc
            return self._split(batch, exc)
        except Exception as exc:
            return self._split(batch, exc)

    def _split(self, batch: list[Delivery], exc: Exception) -> BatchResult:
        if len(batch) == 1:
            log.error("ingest.unexpected_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            reason = f"relance failed on this message ({type(exc).__name__}: {exc}); please report it"
            return BatchResult(rejections=[Rejection(batch[0], "internal_error", reason[:_MAX_HEADER_CHARS])])
        middle = len(batch) // 2
        result = self._process_isolating(batch[:middle])
        result.merge(self._process_isolating(batch[middle:]))
        return result

    def _sleep(self, seconds: float) -> None:
        """Wait without starving the connection (heartbeats, deliveries); wake up early on stop."""
        assert self._connection is not None
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            self.health.beat()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._connection.process_data_events(time_limit=min(remaining, _TICK))

    # ------------------------------------------------------------------------------------------------ dead letters
    def _dead_letter(self, rejections: list[Rejection]) -> None:
        """Publish each rejected body unchanged to the dead-letter queue; returns once the broker confirmed all."""
        if not rejections:
            return
        assert self._publish_channel is not None
        now = datetime.now(UTC)
        for rejection in rejections:
            original = self._properties.get(rejection.delivery.tag) or BasicProperties()
            self._publish_channel.basic_publish(
                exchange="",
                routing_key=self.settings.dead_letter_queue,
                body=rejection.delivery.body,
                properties=dead_letter_properties(rejection, original, now),
                mandatory=True,
            )
            with structlog.contextvars.bound_contextvars(
                event_id=rejection.event_id, tenant=rejection.tenant, customer=rejection.customer_id
            ):
                log.info("ingest.dead_lettered", kind=rejection.kind, queue=self.settings.dead_letter_queue)

    # ------------------------------------------------------------------------------------------------ progress
    def _maybe_log_progress(self) -> None:
        now = time.monotonic()
        elapsed = now - self._progress_at
        if elapsed < PROGRESS_EVERY_SECONDS:
            return
        since = self.totals.messages - self._progress_totals.messages
        if since:
            totals = self.totals
            counts = {"applied": totals.applied, "duplicates": totals.duplicates, "rejected": totals.rejected}
            log.info("ingest.progress", messages=totals.messages, **counts, per_second=round(since / elapsed, 1))
        self._progress_at = now
        self._progress_totals = Totals(**vars(self.totals))


def dead_letter_properties(rejection: Rejection, original: BasicProperties, now: datetime) -> BasicProperties:
    """The original message's properties plus ``x-relance-*`` headers saying why and when it was rejected."""
    delivery = rejection.delivery
    headers: dict[str, Any] = dict(original.headers or {})
    extra = {
        "x-relance-reason": rejection.reason[:_MAX_HEADER_CHARS],
        "x-relance-kind": rejection.kind,
        "x-relance-event-id": rejection.event_id,
        "x-relance-tenant": rejection.tenant,
        "x-relance-customer": rejection.customer_id,
        "x-relance-original-routing-key": delivery.routing_key,
        "x-relance-rejected-at": now.astimezone(UTC).isoformat(timespec="milliseconds"),
    }
    headers.update({key: value for key, value in extra.items() if value is not None})
    return pika.BasicProperties(
        content_type=original.content_type,
        content_encoding=original.content_encoding,
        message_id=original.message_id or delivery.message_id,
        correlation_id=original.correlation_id or delivery.correlation_id,
        timestamp=original.timestamp,
        type=original.type,
        app_id=original.app_id,
        headers=headers,
        delivery_mode=pika.DeliveryMode.Persistent,
    )
