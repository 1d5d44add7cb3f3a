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
with different arguments (PRECONDITION_FAILED), so they are built in one place (:mod:`shared.broker.queues`) from
``RELANCE_QUEUE_TYPE`` and change only with a migration plan. With ``quorum`` (the default) every queue above is a
quorum queue with no other argument; with ``classic`` none has any argument. A queue of the other type stops the
worker with a message pointing to deploy/rabbitmq/MIGRATION.md. If an operator created a queue beforehand with other
arguments of the right type (a length limit), relance keeps it as it is, checks that it exists, and logs that it
did not declare it.

Exclusive consumers are not enforced on quorum queues, so the router and each partition's worker hold their queue
with a lock (:func:`shared.broker.queues.take_lock`, the queue ``<name>.owner``) and consume it exclusively as well.
"""

from __future__ import annotations

from typing import Any

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from shared.broker import queues
from shared.config import Settings

# Never change these without a migration plan (see the module docstring): the arguments besides the queue type's.
INGEST_QUEUE_ARGUMENTS: dict[str, Any] = {}
DEAD_LETTER_QUEUE_ARGUMENTS: dict[str, Any] = {}
# One consumer at a time per partition comes from a lock and exclusive consumers, not from an argument (RabbitMQ
# refuses exclusive consumers on a ``x-single-active-consumer`` queue).
PARTITION_QUEUE_ARGUMENTS: dict[str, Any] = {}
WORKERS_QUEUE_ARGUMENTS: dict[str, Any] = {}
BINDING_KEY = "#"
# The routing key the ERP published a message with, kept by the router when it moves the message to a partition.
ROUTING_KEY_HEADER = "x-relance-routing-key"


def declare_topology(connection: BlockingConnection, settings: Settings) -> None:
    """Declare exchange, ingest queue, binding and dead-letter queue; safe to call from any number of processes."""
    channel = connection.channel()
    try:
        channel.exchange_declare(settings.events_exchange, exchange_type="topic", durable=True)
        channel = _declare_queue(channel, settings.ingest_queue, settings, INGEST_QUEUE_ARGUMENTS)
        channel.queue_bind(settings.ingest_queue, settings.events_exchange, routing_key=BINDING_KEY)
        channel = _declare_queue(channel, settings.dead_letter_queue, settings, DEAD_LETTER_QUEUE_ARGUMENTS)
        if settings.ingest_partitions > 1:
            for partition in range(settings.ingest_partitions):
                name = partition_queue(settings, partition)
                channel = _declare_queue(channel, name, settings, PARTITION_QUEUE_ARGUMENTS)
            channel = _declare_queue(channel, workers_queue(settings), settings, WORKERS_QUEUE_ARGUMENTS)
    finally:
        if channel.is_open:
            channel.close()


def partition_queue(settings: Settings, partition: int) -> str:
    """The queue of one partition: ``<ingest_queue>.p<partition>``."""
    return f"{settings.ingest_queue}.p{partition}"


def workers_queue(settings: Settings) -> str:
    """The queue whose consumer count is the number of live ingest workers."""
    return f"{settings.ingest_queue}.workers"


def _declare_queue(channel: BlockingChannel, name: str, settings: Settings, extra: dict[str, Any]) -> BlockingChannel:
    arguments = queues.arguments(settings, **extra)
    return queues.declare(channel, name, settings, arguments, keep_other_arguments=True)
