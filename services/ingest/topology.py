"""The AMQP topology relance owns on the ERP side, declared the same way by the worker and by ``relance publish``.

- ``settings.events_exchange``: durable topic exchange the ERP publishes to, routing key = event type.
- ``settings.ingest_queue``: durable queue bound with ``#`` (every event type), consumed by the ingest workers.
- ``settings.dead_letter_queue``: durable queue where the workers put what they reject, reason in the headers.

With ``settings.ingest_partitions`` = N > 1 (default 1: the three above are the whole topology), also:

- ``<ingest_queue>.p0`` … ``<ingest_queue>.p<N-1>``: durable partition queues, each consumed by one worker at a
  time as an *exclusive* consumer (the broker refuses a second one; RabbitMQ refuses exclusive consumers on a
  ``x-single-active-consumer`` queue, so the partitions have no arguments). The router
  (:mod:`services.ingest.router`) moves each message of the ingest queue, unchanged, to the partition of its
  customer (:func:`~services.ingest.partitions.partition_of`); each worker consumes the partitions it holds.
- ``<ingest_queue>.workers``: a durable queue that never holds a message; every worker consumes it, so its consumer
  count is the number of live workers, which sets each one's fair share of the partitions.

ERPs publish exactly as before: to the exchange, routing key = event type. Nothing needs a broker plugin.

Declaring is idempotent. Queue arguments are part of the deployed contract: RabbitMQ refuses to redeclare a queue
with different arguments (PRECONDITION_FAILED), so they are constants here and change only with a migration plan. If
an operator created a queue beforehand with other arguments (a quorum queue, a length limit), relance keeps it as it
is, checks that it exists, and logs that it did not declare it.
"""

from __future__ import annotations

from typing import Any

import structlog
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from shared.config import Settings

log = structlog.get_logger()

# Never change these without a migration plan (see the module docstring).
INGEST_QUEUE_ARGUMENTS: dict[str, Any] = {}
DEAD_LETTER_QUEUE_ARGUMENTS: dict[str, Any] = {}
# One consumer at a time per partition comes from exclusive consumers, not from an argument (see the docstring).
PARTITION_QUEUE_ARGUMENTS: dict[str, Any] = {}
WORKERS_QUEUE_ARGUMENTS: dict[str, Any] = {}
BINDING_KEY = "#"
# The routing key the ERP published a message with, kept by the router when it moves the message to a partition.
ROUTING_KEY_HEADER = "x-relance-routing-key"
_PRECONDITION_FAILED = 406


def declare_topology(connection: BlockingConnection, settings: Settings) -> None:
    """Declare exchange, ingest queue, binding and dead-letter queue; safe to call from any number of processes."""
    channel = connection.channel()
    try:
        channel.exchange_declare(settings.events_exchange, exchange_type="topic", durable=True)
        channel = _declare_queue(connection, channel, settings.ingest_queue, INGEST_QUEUE_ARGUMENTS)
        channel.queue_bind(settings.ingest_queue, settings.events_exchange, routing_key=BINDING_KEY)
        channel = _declare_queue(connection, channel, settings.dead_letter_queue, DEAD_LETTER_QUEUE_ARGUMENTS)
        if settings.ingest_partitions > 1:
            for partition in range(settings.ingest_partitions):
                name = partition_queue(settings, partition)
                channel = _declare_queue(connection, channel, name, PARTITION_QUEUE_ARGUMENTS)
            channel = _declare_queue(connection, channel, workers_queue(settings), WORKERS_QUEUE_ARGUMENTS)
    finally:
        if channel.is_open:
            channel.close()


def partition_queue(settings: Settings, partition: int) -> str:
    """The queue of one partition: ``<ingest_queue>.p<partition>``."""
    return f"{settings.ingest_queue}.p{partition}"


def workers_queue(settings: Settings) -> str:
    """The queue whose consumer count is the number of live ingest workers."""
    return f"{settings.ingest_queue}.workers"


def _declare_queue(
    connection: BlockingConnection, channel: BlockingChannel, name: str, arguments: dict[str, Any]
) -> BlockingChannel:
    try:
        channel.queue_declare(name, durable=True, arguments=arguments or None)
        return channel
    except ChannelClosedByBroker as exc:
        if exc.reply_code != _PRECONDITION_FAILED:
            raise
        # The broker closed the channel; the queue exists with other settings. Keep it, but make sure it is there.
        log.warning("ingest.queue_kept_as_is", queue=name, broker_reply=exc.reply_text)
        channel = connection.channel()
        channel.queue_declare(name, passive=True)
        return channel
