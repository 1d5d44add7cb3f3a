"""The partition router: moves each message of the ingest queue, unchanged, to the partition queue of its customer.

It runs beside every ingest worker when ``ingest_partitions`` > 1, on a thread and a connection of its own (pika
is not thread-safe), and only one router works at a time: it consumes the ingest queue as an *exclusive* consumer
and holds its lock (:func:`shared.broker.queues.take_lock`: quorum queues do not enforce exclusive consumers); the
others wait and try again every ``STANDBY_SECONDS``. So the messages leave the ingest queue in the order the ERP
published them and enter each partition in that order.

Each batch is moved in one AMQP transaction on one channel: the publishes to the partition queues and the ack of
the batch commit together (``tx.commit`` returns once the persistent messages are on disk), so a router killed at
any point neither loses nor doubles a message: an uncommitted batch is still in the ingest queue, unacked, and the
broker hands it, in order, to the next router. The ERP's routing key travels in the ``x-relance-routing-key``
header; a message naming no customer (not even JSON) goes to partition 0, where the worker rejects it as usual.
"""

from __future__ import annotations

import threading

import orjson
import structlog
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker
from pika.spec import Basic, BasicProperties

from services.ingest.batching import Batcher
from services.ingest.partitions import partition_of
from services.ingest.topology import ROUTING_KEY_HEADER, declare_topology, partition_queue
from shared.broker import amqp, queues
from shared.config import Settings
from shared.observability.health import Health

log = structlog.get_logger()

STANDBY_SECONDS = 2.0  # how often a router waiting for the ingest queue tries to take it
_TICK = 0.5
_ACCESS_REFUSED = 403  # another connection consumes the queue exclusively

Moved = tuple[int, str, BasicProperties, bytes]  # delivery tag, routing key, properties, body


class Router(amqp.Session):
    """Consume the ingest queue exclusively and move its messages to their partitions, a transaction per batch."""

    service = "ingest.router"

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.health = Health(self.service)  # the ingest worker's own connection is what its readiness tells
        self.batcher: Batcher[Moved] = Batcher(
            min(settings.ingest_batch_size, settings.ingest_prefetch), settings.ingest_batch_ms / 1000
        )
        self.moved = 0
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._lock: BlockingChannel | None = None  # the channel holding the ingest queue's lock, once taken
        self._cancelled = False

    def work_done(self) -> int:
        return self.moved

    def connect(self) -> None:
        self._cancelled = False
        self._connection = amqp.connect(self.settings, "ingest-router")
        declare_topology(self._connection, self.settings)
        self._channel = self._lock = None

    def disconnect(self) -> None:
        connection, self._connection, self._channel, self._lock = self._connection, None, None, None
        amqp.close_connection(self.service, connection)

    def forget(self) -> dict[str, object]:
        return {"unacked_dropped": len(self.batcher.clear())}

    def serve(self) -> None:
        connection = self._connection
        assert connection is not None
        while not self.stop.is_set():
            if self._channel is None and not self._take_queue():
                self.stop.wait(STANDBY_SECONDS)
                connection.process_data_events(time_limit=0)  # heartbeats while waiting
                continue
            if self._cancelled:
                raise amqp.ConsumerCancelled(f"router of {self.settings.ingest_queue} cancelled by the broker")
            if self.batcher.ready():
                self._move(self.batcher.take())
                continue
            wait = self.batcher.wait_time()
            connection.process_data_events(time_limit=_TICK if wait is None else min(wait, _TICK))
        if self._channel is not None:
            for tag in list(self._channel.consumer_tags):
                self._channel.basic_cancel(tag)
            while len(self.batcher):
                self._move(self.batcher.take())

    def _take_queue(self) -> bool:
        """Become the router, unless another connection already is (then False: try again later)."""
        assert self._connection is not None
        channel = self._connection.channel()
        channel.basic_qos(prefetch_count=self.settings.ingest_prefetch)
        channel.tx_select()
        channel.add_on_cancel_callback(lambda frame: setattr(self, "_cancelled", True))
        # Quorum queues do not enforce exclusive consumers: the lock is what keeps a second router out.
        if self._lock is None:
            self._lock = queues.take_lock(self._connection, self.settings.ingest_queue)
        if self._lock is None:
            channel.close()
            return False
        try:
            channel.basic_consume(self.settings.ingest_queue, on_message_callback=self._on_message, exclusive=True)
        except ChannelClosedByBroker as exc:
            if exc.reply_code != _ACCESS_REFUSED:
                raise
            return False  # a router of an earlier release (exclusive consumer, no lock); the lock goes with us
        self._channel = channel
        log.info("ingest.router_started", queue=self.settings.ingest_queue, partitions=self.settings.ingest_partitions)
        return True

    def _on_message(
        self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        self.batcher.add((method.delivery_tag, method.routing_key or "", properties, body))

    def _move(self, batch: list[Moved]) -> None:
        channel = self._channel
        assert channel is not None
        partitions = self.settings.ingest_partitions
        # BlockingChannel.basic_publish waits for each message's frames to be written, one loop turn per message;
        # the channel underneath only queues them, and the ack below writes the whole batch at once, in order.
        publish = channel._impl.basic_publish
        for _, routing_key, properties, body in batch:
            partition = partition_of(*_stream_of(body), partitions)
            properties.headers = {**(properties.headers or {}), ROUTING_KEY_HEADER: routing_key}
            publish("", partition_queue(self.settings, partition), body, properties)
        channel.basic_ack(delivery_tag=batch[-1][0], multiple=True)
        channel.tx_commit()  # the publishes and the ack, together
        self.batcher.restart_window()
        self.moved += len(batch)
        log.debug("ingest.routed", size=len(batch))


def _stream_of(body: bytes) -> tuple[str | None, str | None]:
    """The tenant and customer a message names, if it is a JSON object naming them (the worker validates it)."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(raw, dict):
        return None, None
    tenant, customer = raw.get("tenant"), raw.get("customer_id")
    return (tenant if isinstance(tenant, str) else None, customer if isinstance(customer, str) else None)
