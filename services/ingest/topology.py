"""The AMQP topology relance owns on the ERP side, declared the same way by the worker and by ``relance publish``.

- ``settings.events_exchange``: durable topic exchange the ERP publishes to, routing key = event type.
- ``settings.ingest_queue``: durable queue bound with ``#`` (every event type), consumed by the ingest workers.
- ``settings.dead_letter_queue``: durable queue where the workers put what they reject, reason in the headers.

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
BINDING_KEY = "#"
_PRECONDITION_FAILED = 406


def declare_topology(connection: BlockingConnection, settings: Settings) -> None:
    """Declare exchange, ingest queue, binding and dead-letter queue; safe to call from any number of processes."""
    channel = connection.channel()
    try:
        channel.exchange_declare(settings.events_exchange, exchange_type="topic", durable=True)
        channel = _declare_queue(connection, channel, settings.ingest_queue, INGEST_QUEUE_ARGUMENTS)
        channel.queue_bind(settings.ingest_queue, settings.events_exchange, routing_key=BINDING_KEY)
        channel = _declare_queue(connection, channel, settings.dead_letter_queue, DEAD_LETTER_QUEUE_ARGUMENTS)
    finally:
        if channel.is_open:
            channel.close()


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
