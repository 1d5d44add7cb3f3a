"""``relance worker notifier``: consume the notifier's commands from RabbitMQ and send the reminders and letters.

Topology (declared by the worker, idempotently):

- ``settings.notifier_queue`` (durable), bound to ``settings.commands_exchange`` with the routing keys
  ``notifier.send_reminder`` and ``notifier.send_confirmation`` (the written confirmation of a payment plan): the
  relay publishes the outbox's notifier commands there.
- ``<queue>.retry`` (durable): a command that must wait (quiet hours, SMTP deferring, another worker holding it, the
  database away) is republished here with an expiry of ``RELANCE_NOTIFIER_RETRY_SECONDS``; RabbitMQ dead-letters it
  back to the queue when it expires. Nothing is held in memory, so a restart loses nothing.
- ``<queue>.dead`` (durable): messages that are not usable commands, with ``x-relance-reason`` saying why
  (``x-relance-kind``: ``invalid_command``, or ``internal_error`` when handling it failed in relance itself).

Commands are handled in batches of up to ``RELANCE_NOTIFIER_BATCH_SIZE`` of those the worker holds
(``RELANCE_NOTIFIER_PREFETCH``): their claims are recorded in one transaction, their messages sent concurrently over
``RELANCE_NOTIFIER_SMTP_CONNECTIONS`` reused connections, their outcomes recorded as they come, a few transactions
per batch (:meth:`services.notifier.service.Notifier.handle_all`). A delivery is acked only after its outcome is
recorded in the ledger, or after its copy is confirmed by RabbitMQ in the retry or dead-letter queue; a crash in
between redelivers it, which the notifier's idempotence makes harmless. The SMTP work runs on an asyncio loop in a
second thread while this thread keeps the AMQP connection serviced (heartbeats), so a slow SMTP server never costs
the broker connection. SIGTERM/SIGINT: the batch in hand is finished, the others go back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika
import structlog
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError
from pika.spec import Basic, BasicProperties
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from services.notifier.command import KINDS, BadCommand
from services.notifier.delivery import SendDeferred, SendInProgress
from services.notifier.render import RenderSettings
from services.notifier.sender import refuse_placeholder
from services.notifier.service import Notifier, NotNow, Outcome
from services.notifier.smtp import SmtpConfig, SmtpTransport
from shared.broker import amqp, queues
from shared.config import Settings
from shared.contracts import jsonio
from shared.ledger.errors import LedgerUnavailable
from shared.logging import DATABASE_AVAILABLE, DATABASE_UNAVAILABLE
from shared.observability.gauges import QueueDepth
from shared.observability.metrics import NotifierMetrics
from shared.observability.telemetry import Telemetry
from shared.runtime import Backoff, run_worker

log = structlog.get_logger()

_TICK = 0.2


def _wake(connection: BlockingConnection) -> None:
    """End the connection's current ``process_data_events`` wait now (called from the SMTP thread)."""
    with contextlib.suppress(AMQPError, OSError):  # closed meanwhile: nothing is waiting on it any more
        connection.add_callback_threadsafe(lambda: None)


def _first_line(exc: BaseException) -> str:
    text = str(exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc)
    return text.splitlines()[0] if text else type(exc).__name__


def retry_queue(settings: Settings) -> str:
    return f"{settings.notifier_queue}.retry"


def dead_queue(settings: Settings) -> str:
    return f"{settings.notifier_queue}.dead"


# Part of the deployed contract, with the queue type's own argument (shared/broker/queues.py): never change them
# without a migration plan. A command the workers take and lose (a crash, a lost connection) this many times goes to
# the dead-letter queue, with RabbitMQ's x-death header saying `delivery_limit` (quorum queues only).
NOTIFIER_DELIVERY_LIMIT = 20


def notifier_queue_arguments(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every queue of the notifier, with its arguments, in the order they are declared."""
    queue = settings.notifier_queue
    retry: dict[str, Any] = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
    if settings.queue_type == "quorum":
        # An expired retry goes back with the broker's own confirms: never lost on the way (RabbitMQ 3.10+).
        retry |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    main = {
        "x-delivery-limit": NOTIFIER_DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_queue(settings),
    }
    return {
        queue: queues.arguments(settings, **main) if settings.queue_type == "quorum" else {},
        retry_queue(settings): queues.arguments(settings, **retry),
        dead_queue(settings): queues.arguments(settings),
    }


def declare_notifier_topology(channel: BlockingChannel, settings: Settings) -> None:
    channel.exchange_declare(settings.commands_exchange, exchange_type="topic", durable=True)
    for name, arguments in notifier_queue_arguments(settings).items():
        channel = queues.declare(channel, name, settings, arguments)
    for kind in KINDS:
        channel.queue_bind(settings.notifier_queue, settings.commands_exchange, routing_key=kind)


@dataclass
class NotifierTotals:
    handled: int = 0
    retried: int = 0
    dead: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Delivery:
    tag: int
    body: bytes
    properties: BasicProperties


def run(settings: Settings, *, stop: threading.Event | None = None) -> int:
    """Run one notifier worker until SIGTERM/SIGINT (or until ``stop`` is set); returns the exit status."""
    if not settings.allow_placeholder_sender:
        refuse_placeholder(RenderSettings().sender_file)  # before anything connects

    telemetry = Telemetry.of(settings, NotifierMetrics(), broker=True)

    def start(engine: Engine, stop: threading.Event) -> int:
        transport = SmtpTransport(SmtpConfig.from_settings(settings), timed=telemetry.metrics.smtp_seconds.observe)
        notifier = Notifier(settings, engine, transport)
        notifier.load()  # broken templates, sender file or sending rules stop start-up here
        queues = [settings.notifier_queue, retry_queue(settings)]
        telemetry.refresh(QueueDepth(settings, telemetry.metrics, queues))
        return NotifierWorker(settings, notifier, stop, telemetry=telemetry).run()

    return run_worker(settings, "notifier", stop, start, telemetry)


class NotifierWorker(amqp.Session):
    """The consume → handle → ack (or retry, or dead-letter) loop around one AMQP connection."""

    service = "notifier"

    def __init__(
        self,
        settings: Settings,
        notifier: Notifier,
        stop: threading.Event,
        *,
        connect_to: Callable[[Settings, str], BlockingConnection] = amqp.connect,
        telemetry: Telemetry[NotifierMetrics] | None = None,
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.stop = stop
        self.totals = NotifierTotals()
        telemetry = telemetry or Telemetry.offline(NotifierMetrics())
        self.metrics = telemetry.metrics
        self.health = telemetry.health
        self.health.totals = lambda: {
            "handled": self.totals.handled,
            "retried": self.totals.retried,
            "dead_lettered": self.totals.dead,
            **self.totals.by_status,
        }
        self._connect = connect_to
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._publish: BlockingChannel | None = None
        self._inbox: deque[_Delivery] = deque()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="notifier-smtp", daemon=True)

    def run(self) -> int:
        log.info(
            "notifier.worker_started",
            queue=self.settings.notifier_queue,
            exchange=self.settings.commands_exchange,
            smtp=f"{self.settings.smtp_host}:{self.settings.smtp_port}",
        )
        self._thread.start()
        try:
            amqp.stay_connected(self)
        finally:
            self._await(self.notifier.transport.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        log.info(
            "notifier.worker_stopped",
            handled=self.totals.handled,
            retried=self.totals.retried,
            dead_lettered=self.totals.dead,
            **self.totals.by_status,
        )
        return 0

    # ------------------------------------------------------------------------------------------------ connection
    def work_done(self) -> int:
        return self.totals.handled

    def connect(self) -> None:
        connection = self._connect(self.settings, "notifier")
        self._connection = connection
        channel = connection.channel()
        declare_notifier_topology(channel, self.settings)
        channel.basic_qos(prefetch_count=self.settings.notifier_prefetch)
        channel.basic_consume(self.settings.notifier_queue, on_message_callback=self._on_message)
        self._channel = channel
        self._publish = connection.channel()
        self._publish.confirm_delivery()

    def disconnect(self) -> None:
        connection, self._connection, self._channel, self._publish = self._connection, None, None, None
        self._inbox.clear()  # unacked: RabbitMQ requeues them when the connection closes
        amqp.close_connection("notifier", connection)

    # ------------------------------------------------------------------------------------------------ consuming
    def serve(self) -> None:
        connection, channel = self._connection, self._channel
        assert connection is not None and channel is not None
        database_backoff = Backoff(self.settings.retry_max_seconds)
        while not self.stop.is_set():
            self.health.beat()
            if not self._inbox:
                connection.process_data_events(time_limit=_TICK)
                continue
            batch = [self._inbox.popleft() for _ in range(min(len(self._inbox), self.settings.notifier_batch_size))]
            commands = self._decoded(batch)
            try:
                started = time.monotonic()
                self._handle(commands)
                if commands:
                    self.metrics.batch(len(commands), time.monotonic() - started)
                if database_backoff.attempts:
                    log.info(DATABASE_AVAILABLE, service="notifier", retries=database_backoff.attempts)
                database_backoff.reset()
            except (DBAPIError, LedgerUnavailable) as exc:
                delay = database_backoff.next()
                log.warning(DATABASE_UNAVAILABLE, service="notifier", error=_first_line(exc), retry_in=round(delay, 2))
                for delivery, _ in commands:
                    self._retry(delivery, "the ledger database is unavailable")
                self._wait(delay)
        for tag in list(channel.consumer_tags):
            channel.basic_cancel(tag)

    def _on_message(
        self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        self._inbox.append(_Delivery(method.delivery_tag, body, properties))

    def _decoded(self, batch: list[_Delivery]) -> list[tuple[_Delivery, Any]]:
        """The batch's bodies as JSON; one that is not JSON is dead-lettered here."""
        commands = []
        for delivery in batch:
            try:
                commands.append((delivery, jsonio.loads(delivery.body)))
            except jsonio.JsonRefused as exc:  # duplicate keys too: two readers could see two different commands
                self._dead_letter(delivery, exc.reason if exc.kind == "schema" else f"not JSON: {exc.reason}")
        return commands

    def _handle(self, commands: list[tuple[_Delivery, Any]]) -> None:
        """Handle the batch's commands together, then settle each delivery by its own result.

        A batch that fails as a whole for a reason of relance's own (not the database being away: the caller retries
        those) is handled again one command at a time, so such a failure costs only the command that causes it.
        Nothing is sent twice meanwhile: a command whose send was claimed waits out its lease, then ends unconfirmed.
        """
        if not commands:
            return
        try:
            results = self._await(self.notifier.handle_all([command for _, command in commands]))
        except (DBAPIError, LedgerUnavailable, AMQPError, OSError):
            raise  # the database or the broker is away: retried by the callers, with backoff
        except Exception as exc:
            if len(commands) == 1:
                results = [exc]
            else:
                log.exception("notifier.batch_failed", commands=len(commands))
                for one in commands:
                    self._handle([one])
                return
        for (delivery, _), result in zip(commands, results, strict=True):
            self._settle(delivery, result)

    def _settle(self, delivery: _Delivery, result: Outcome | BaseException) -> None:
        """Ack, retry or dead-letter a delivery by what became of its command."""
        if isinstance(result, BadCommand):
            self._dead_letter(delivery, str(result))
        elif isinstance(result, NotNow | SendDeferred | SendInProgress):
            self._retry(delivery, result.reason)
        elif isinstance(result, DBAPIError | LedgerUnavailable):
            log.warning(DATABASE_UNAVAILABLE, service="notifier", error=_first_line(result))
            self._retry(delivery, "the ledger database is unavailable")
        elif isinstance(result, BaseException):
            # A failure of relance itself on this one command must not stop the worker (it would meet the same
            # message again after a restart). What was recorded before it stays: a send already claimed is never
            # repeated, so the command can be published again once the cause is fixed.
            log.error(
                "notifier.internal_error",
                message_id=delivery.properties.message_id,
                exc_info=(type(result), result, result.__traceback__),
            )
            self._dead_letter(delivery, f"{type(result).__name__}: {result}", kind="internal_error")
        else:
            self._ack(delivery)
            self.metrics.reminder(result.status)
            self.totals.handled += 1
            self.totals.by_status[result.status] = self.totals.by_status.get(result.status, 0) + 1
            about = {"tenant": result.tenant, "status": result.status, "level": result.level}
            message_id = result.message_id or None
            log.info("notifier.handled", command_id=result.command_id, **about, message_id=message_id)

    def _await(self, coroutine: Any) -> Any:
        """Run a coroutine on the SMTP loop; keep the AMQP connection serviced while it runs.

        The connection is serviced in ticks of :data:`_TICK`, and the coroutine's end wakes the tick it falls in (a
        callback through the connection's thread-safe queue), so a command costs its own work, never a whole tick.
        """
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        connection = self._connection
        if connection is not None:
            future.add_done_callback(lambda _: _wake(connection))
        while not future.done():
            self.health.beat()
            if self._connection is not None and self._connection.is_open:
                try:
                    self._connection.process_data_events(time_limit=_TICK)
                except (AMQPError, OSError):
                    future.result()  # finish the work first: its outcome is recorded in the ledger either way
                    raise
            else:
                time.sleep(_TICK)
        return future.result()

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.health.beat()
            assert self._connection is not None
            self._connection.process_data_events(time_limit=min(left, _TICK))

    # ------------------------------------------------------------------------------------------------ outcomes
    def _ack(self, delivery: _Delivery) -> None:
        assert self._channel is not None
        self._channel.basic_ack(delivery.tag)

    def _retry(self, delivery: _Delivery, reason: str) -> None:
        headers = dict(delivery.properties.headers or {})
        retries = int(headers.get("x-relance-retries", 0)) + 1
        headers.update({"x-relance-retries": retries, "x-relance-retry-reason": reason[:500]})
        self._republish(
            retry_queue(self.settings),
            delivery,
            headers,
            expiration=str(self.settings.notifier_retry_seconds * 1000),
        )
        self.totals.retried += 1
        self.metrics.reminders["deferred"].inc()
        log.info(
            "notifier.retry_later",
            message_id=delivery.properties.message_id,
            reason=reason,
            retries=retries,
            retry_in=self.settings.notifier_retry_seconds,
        )

    def _dead_letter(self, delivery: _Delivery, reason: str, kind: str = "invalid_command") -> None:
        headers = dict(delivery.properties.headers or {})
        headers.update(
            {
                "x-relance-kind": kind,
                "x-relance-reason": reason[:1000],
                "x-relance-dead-lettered-at": datetime.now(UTC).isoformat(),
            }
        )
        self._republish(dead_queue(self.settings), delivery, headers)
        self.totals.dead += 1
        self.metrics.dead_lettered(kind)
        log.error("notifier.dead_lettered", message_id=delivery.properties.message_id, kind=kind, reason=reason)

    def _republish(
        self, queue: str, delivery: _Delivery, headers: dict[str, Any], expiration: str | None = None
    ) -> None:
        """Put a copy in ``queue`` (confirmed by RabbitMQ), then ack the original: it is never in neither."""
        assert self._publish is not None
        original = delivery.properties
        properties = pika.BasicProperties(
            content_type=original.content_type or "application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=original.message_id,
            type=original.type,
            app_id=original.app_id,
            timestamp=original.timestamp,
            headers=headers,
            expiration=expiration,
        )
        self._publish.basic_publish("", queue, delivery.body, properties, mandatory=True)
        self._ack(delivery)
