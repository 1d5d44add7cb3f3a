"""The queues relance declares: their arguments, one way to declare them, and one way to hold a queue alone.

Queue arguments are part of the deployed contract. RabbitMQ refuses to redeclare a queue with arguments other than
those it was made with (``PRECONDITION_FAILED``), so every worker builds them here, from ``RELANCE_QUEUE_TYPE``:

- ``quorum`` (the default): ``x-queue-type: quorum``, replicated over the cluster's nodes, durable only (never
  exclusive or auto-delete), plus the arguments each queue needs (:func:`arguments`);
- ``classic``: no ``x-queue-type`` argument, exactly as relance declared its queues before quorum queues, so an
  existing deployment keeps working until its queues are moved (deploy/rabbitmq/MIGRATION.md).

A queue that exists with the other type (or, for the queues whose arguments relance needs, with other arguments)
stops the process with a :class:`QueueTypeMismatch` (a configuration error, exit 78) saying which queue, what it
has, and how to move on: retrying cannot cure it.

Exclusive consumers are not enforced on quorum queues (RabbitMQ 3.10 accepts a second "exclusive" consumer), so
whoever must consume a queue alone (the ingest router, the worker of an ingest partition) first takes its *lock*
(:func:`take_lock`): an exclusive, auto-delete queue named ``<queue>.owner`` that holds no message. Only one
connection can declare it; it disappears with the connection that holds it, so a worker that dies gives it back.
"""

from __future__ import annotations

from typing import Any

import structlog
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from shared.config import ConfigurationError, Settings

log = structlog.get_logger()

PRECONDITION_FAILED = 406
RESOURCE_LOCKED = 405
LOCK_SUFFIX = ".owner"
MIGRATION = "deploy/rabbitmq/MIGRATION.md"


class QueueTypeMismatch(ConfigurationError):
    """A queue exists with another type or other arguments than relance declares: the process must not start."""


def arguments(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The arguments of a queue of the configured type, with ``extra`` (dead-lettering, delivery limit) added.

    ``x-delivery-limit`` only exists for quorum queues: it is dropped from a classic queue's arguments.
    """
    if settings.queue_type == "classic":
        return {name: value for name, value in extra.items() if name != "x-delivery-limit"}
    return {"x-queue-type": "quorum", **extra}


def declare(
    channel: BlockingChannel,
    name: str,
    settings: Settings,
    queue_arguments: dict[str, Any],
    *,
    keep_other_arguments: bool = False,
) -> BlockingChannel:
    """Declare a durable queue; the channel to go on with (the broker closes the one a declaration failed on).

    A queue of the other type raises :class:`QueueTypeMismatch`. A queue of the right type with other arguments
    (a length limit an operator set) is kept as it is, and logged, if ``keep_other_arguments``; otherwise the
    broker's refusal is raised.
    """
    try:
        channel.queue_declare(name, durable=True, arguments=queue_arguments or None)
        return channel
    except ChannelClosedByBroker as exc:
        if exc.reply_code != PRECONDITION_FAILED:
            raise
        reply = str(exc.reply_text)
        if "'x-queue-type'" in reply:
            raise type_mismatch(name, settings, reply) from None
        if not keep_other_arguments:
            raise arguments_mismatch(name, settings, queue_arguments, reply) from None
        log.warning("broker.queue_kept_as_is", queue=name, broker_reply=exc.reply_text)
        channel = channel.connection.channel()
        channel.queue_declare(name, passive=True)
        return channel


def type_mismatch(name: str, settings: Settings, reply: str) -> QueueTypeMismatch:
    """The error for a queue whose type is not the configured one, saying how to go on."""
    wanted = settings.queue_type
    other = "classic" if wanted == "quorum" else "quorum"
    return QueueTypeMismatch(
        f"RabbitMQ queue {name!r} exists as a {other} queue, but RELANCE_QUEUE_TYPE is {wanted} "
        f"(the broker said: {reply}). Either set RELANCE_QUEUE_TYPE={other} to keep using the existing queues, "
        f"or move them to {wanted} queues as {MIGRATION} explains (drain, stop the consumers, delete and "
        "redeclare, start); RabbitMQ cannot change the type of an existing queue."
    )


def arguments_mismatch(name: str, settings: Settings, declared: dict[str, Any], reply: str) -> QueueTypeMismatch:
    """The error for a queue made with other arguments (RabbitMQ may name another argument before the type)."""
    other = "classic" if settings.queue_type == "quorum" else "quorum"
    given = ", ".join(f"{key}={value!r}" for key, value in declared.items()) or "none"
    return QueueTypeMismatch(
        f"RabbitMQ queue {name!r} exists with other arguments than relance declares with RELANCE_QUEUE_TYPE="
        f"{settings.queue_type} ({given}; the broker said: {reply}). If relance made it with "
        f"RELANCE_QUEUE_TYPE={other}, set that again or move the queues as {MIGRATION} explains; if it was made by "
        "hand, drain and delete it, and relance declares it anew."
    )


def lock_name(queue: str) -> str:
    return queue + LOCK_SUFFIX


def take_lock(connection: BlockingConnection, queue: str) -> BlockingChannel | None:
    """Hold ``queue`` alone for as long as ``connection`` lives: the channel of the lock, or None if another holds it.

    Give the lock back with :func:`release_lock` once the queue's consumer is closed (so that whatever the broker
    requeues is there, in order, before the next holder consumes).
    """
    channel = connection.channel()
    try:
        channel.queue_declare(lock_name(queue), exclusive=True, auto_delete=True)
    except ChannelClosedByBroker as exc:
        if exc.reply_code != RESOURCE_LOCKED:
            raise
        return None
    return channel


def release_lock(channel: BlockingChannel, queue: str) -> None:
    """Give back a lock :func:`take_lock` took."""
    channel.queue_delete(lock_name(queue))
    channel.close()
