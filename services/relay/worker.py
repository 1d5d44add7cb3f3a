"""``relance worker relay``: publish the outbox's commands to RabbitMQ with publisher confirms.

A batch of commands, in one database transaction:

1. lock a batch of pending commands (``FOR UPDATE SKIP LOCKED``: relays running side by side take different rows;
   only the oldest pending command of a customer per family is eligible, so a customer's commands leave in order);
2. publish them all to ``settings.commands_exchange``, routing key = the command kind, persistent, JSON,
   ``message_id`` = ``command_id``, ``mandatory`` set, with their confirms pipelined (:mod:`shared.broker.confirms`:
   up to ``RELANCE_PUBLISH_WINDOW`` in flight), and wait until the broker answered each;
3. mark the confirmed ones published and commit.

Batches overlap (:meth:`Relay._publish_family`): on PostgreSQL helper threads claim the next batch and commit the
answered ones while the relay's own thread, which alone touches the AMQP connection, publishes and takes confirms in.

At-least-once: a crash or a lost connection after a confirm but before the commit leaves the row pending and it is
published again, with the same ``message_id``; receivers deduplicate by ``command_id``. Nothing is lost: a row is
marked only after RabbitMQ confirmed it. When the connection is lost mid-batch, the rows confirmed before are marked
and committed, the others stay pending and are published again once reconnected (the broker may already hold some:
a duplicate, never a loss). A command nacked by the broker, or that nobody's queue is bound for (RabbitMQ returns it
as unroutable), stays pending, its family paused with backoff, and is published again after the pause.

Order per customer holds with a window in flight: a batch holds at most one command of a customer per family (the
oldest pending one), and the customer's next command becomes eligible only once that one is marked published, so
whatever is nacked, returned or lost is published again before anything later of the same customer. While RabbitMQ
or the database is down the relay retries with backoff. SIGTERM or SIGINT ends after the current round.

With ``RELANCE_ERP_TRANSPORT=webhook`` the relay publishes only the ``notifier`` family and leaves the ``erp.*``
commands to ``relance worker webhook`` (:mod:`services.webhook.worker`), so no command is ever delivered both ways.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import orjson
import pika
import structlog
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from sqlalchemy import Connection, Engine, RootTransaction
from sqlalchemy.exc import DBAPIError

from shared.broker import amqp
from shared.broker.confirms import ConfirmingPublisher, Outcome, Outgoing, open_publisher
from shared.config import Settings
from shared.ledger.outbox import Command, claim, count_attempt, families, mark_published
from shared.logging import DATABASE_AVAILABLE
from shared.observability.gauges import outbox_gauges
from shared.observability.metrics import RelayMetrics
from shared.observability.telemetry import Telemetry
from shared.runtime import Backoff, run_worker, wait_out_database

log = structlog.get_logger()
P = ParamSpec("P")
T = TypeVar("T")

PIPELINE_DEPTH = 2  # batches in flight (PostgreSQL), besides the next one being claimed
BATCHES_PER_ROUND = 10  # per family, so a round (and a stop request) comes round regularly


def message_properties(command: Command) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=command.command_id,
        type=command.kind,
        app_id="relance",
        timestamp=int(command.created_at.timestamp()),
        headers={"x-relance-tenant": command.tenant, "x-relance-customer": command.customer_id},
    )


def declare_commands_exchange(channel: BlockingChannel, settings: Settings) -> None:
    channel.exchange_declare(settings.commands_exchange, exchange_type="topic", durable=True)


@dataclass
class RelayTotals:
    rounds: int = 0
    published: int = 0
    unroutable: int = 0
    nacked: int = 0


@dataclass
class _Batch:
    """Commands claimed in one open transaction, and the broker's answer to each so far."""

    connection: Connection
    transaction: RootTransaction
    commands: dict[int, Command]
    outcomes: dict[int, Outcome] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        return len(self.outcomes) == len(self.commands)

    @property
    def refused(self) -> bool:
        return any(outcome is not Outcome.CONFIRMED for outcome in self.outcomes.values())

    def end(self) -> None:
        """Commit and release the connection."""
        try:
            self.transaction.commit()
        finally:
            self.connection.close()

    def abandon(self) -> None:
        """Roll back (the rows stay pending, their locks released) and release the connection."""
        if not self.connection.closed:
            self.connection.close()


class _Inline(Executor):
    """Runs each call at once, in the caller's thread (SQLite, which has one writer)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to whoever reads the result, as a thread pool does
            future.set_exception(exc)
        return future


def _outgoing(command: Command, exchange: str) -> Outgoing:
    body = orjson.dumps(command.payload)
    return Outgoing(command.id, exchange, command.kind, body, message_properties(command))


@dataclass
class _Pause:
    until: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(30.0, initial=1.0))


def run(settings: Settings, *, stop: threading.Event | None = None) -> int:
    """Run one relay until SIGTERM/SIGINT (or until ``stop`` is set); returns the exit status."""
    telemetry = Telemetry.of(settings, RelayMetrics(), broker=True)

    def start(engine: Engine, stop: threading.Event) -> int:
        relay = Relay(settings, engine, stop, telemetry=telemetry)
        if telemetry.side is not None:
            telemetry.refresh(outbox_gauges(telemetry.side, telemetry.metrics, relay.kinds))
        return relay.run()

    return run_worker(settings, "relay", stop, start, telemetry)


class Relay(amqp.Session):
    """The claim → publish → confirm → mark loop around one AMQP connection (re-opened when lost)."""

    service = "relay"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        stop: threading.Event,
        *,
        connect: Callable[[Settings], BlockingConnection] | None = None,
        telemetry: Telemetry[RelayMetrics] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.stop = stop
        self.totals = RelayTotals()
        telemetry = telemetry or Telemetry.offline(RelayMetrics())
        self.metrics = telemetry.metrics
        self.health = telemetry.health
        self.health.totals = lambda: vars(self.totals)
        self._connect = connect or (lambda settings: amqp.connect(settings, "relay"))
        self._database_backoff = Backoff(settings.retry_max_seconds)
        self._publisher: ConfirmingPublisher | None = None
        self._database: ThreadPoolExecutor | None = None
        # With RELANCE_ERP_TRANSPORT=webhook the ERP's commands are the webhook worker's alone (services/webhook/)
        self._families = {
            family: kinds
            for family, kinds in families().items()
            if not (family == "erp" and settings.erp_transport == "webhook")
        }
        self._paused = {family: _Pause() for family in self._families}
        self.kinds = tuple(kind for kinds in self._families.values() for kind in kinds)  # those it publishes

    def run(self) -> int:
        log.info(
            "relay.started",
            exchange=self.settings.commands_exchange,
            batch_size=self.settings.relay_batch_size,
            window=self.settings.publish_window,
            families=sorted(self._families),
        )
        amqp.stay_connected(self)
        log.info("relay.stopped", published=self.totals.published, rounds=self.totals.rounds)
        return 0

    @contextlib.contextmanager
    def connected(self) -> Iterator[Relay]:
        """The relay connected to RabbitMQ for rounds run by hand (:meth:`publish_round`); closed on leaving."""
        self.connect()
        try:
            yield self
        finally:
            self.disconnect()

    def work_done(self) -> int:
        return self.totals.rounds

    def serve(self) -> None:
        """Rounds until stopped; a database outage is waited out here, with the broker connection kept."""
        while not self.stop.is_set():
            self.health.beat()
            try:
                published = self.publish_round()
                if self._database_backoff.attempts:
                    log.info(DATABASE_AVAILABLE, service="relay", retries=self._database_backoff.attempts)
                self._database_backoff.reset()
                if not published:
                    self._idle(self.settings.relay_poll_ms / 1000)
            except DBAPIError as exc:
                wait_out_database("relay", exc, self._database_backoff, self.stop, self.health)

    # ------------------------------------------------------------------------------------------------ one round
    def publish_round(self) -> int:
        """Publish what is pending, a few batches per family; returns how many commands were confirmed."""
        published = 0
        now = time.monotonic()
        for family, kinds in self._families.items():
            pause = self._paused[family]
            if pause.until > now:
                continue
            confirmed, returned, nacked = self._publish_family(kinds)
            published += confirmed
            if returned or nacked:
                delay = pause.backoff.next()
                pause.until = time.monotonic() + delay
                if returned:
                    log.warning(
                        "relay.unroutable",
                        family=family,
                        commands=returned,
                        exchange=self.settings.commands_exchange,
                        hint="no queue is bound for these routing keys; they stay in the outbox until one is",
                        retry_in=round(delay, 2),
                    )
                if nacked:
                    log.warning("relay.nacked", family=family, commands=nacked, retry_in=round(delay, 2))
            elif confirmed:
                pause.backoff.reset()
        self.totals.rounds += 1
        return published

    def _publish_family(self, kinds: tuple[str, ...]) -> tuple[int, int, int]:
        """Batches of ``kinds``, published with their confirms pipelined; each batch is marked and committed once the
        broker answered all of its commands. Ends when nothing more is eligible, after :data:`BATCHES_PER_ROUND`
        batches, or at the first refused command (the family pauses). Returns the (confirmed, returned, nacked)
        counts.

        On PostgreSQL the database work overlaps the broker's: two helper threads claim the next batch and mark and
        commit the answered ones (a claim and a commit at the same time) while this thread publishes and takes the
        confirms in, with up to :data:`PIPELINE_DEPTH` batches in flight. A batch claimed while an earlier one is
        uncommitted skips that one's customers (their commands are still pending, so nothing later of theirs is
        eligible): the batches in flight never hold two commands of one customer and family, and a customer's next
        command is claimed only once the previous one is confirmed and marked. SQLite has one writer: one batch at
        a time, in this thread.
        """
        publisher = self._publisher
        assert publisher is not None
        publisher.flush()
        publisher.settled()  # answers for a round a failure interrupted: those rows are pending again
        overlap = self.engine.dialect.name == "postgresql"
        depth = PIPELINE_DEPTH if overlap else 1
        database = self._database_threads() if overlap else _Inline()
        open_batches: deque[_Batch] = deque()
        finishing: list[Future[tuple[int, int, int]]] = []
        next_claim: Future[_Batch] | None = None
        more, claimed = True, 0
        lost: BaseException | None = None
        try:
            while more or open_batches:
                if more and len(open_batches) < depth:
                    claiming = next_claim or self._submit(database, self._claim, kinds)
                    publisher.wait_until(lambda: self._collect(open_batches) or claiming.done())  # noqa: B023 (used at once)
                    batch, next_claim = claiming.result(), None
                    claimed += 1
                    more = len(batch.commands) == self.settings.relay_batch_size and claimed < BATCHES_PER_ROUND
                    if more and overlap:
                        next_claim = self._submit(database, self._claim, kinds)  # while these are confirmed
                    if not batch.commands:
                        finishing.append(database.submit(self._finish, batch))
                        continue
                    open_batches.append(batch)
                    for command in batch.commands.values():
                        publisher.publish(_outgoing(command, self.settings.commands_exchange))
                    continue
                publisher.wait_until(lambda: self._collect(open_batches) or open_batches[0].answered)
                oldest = open_batches.popleft()
                more = more and not oldest.refused
                finishing.append(database.submit(self._finish, oldest))
        except amqp.BROKER_LOST as exc:
            # What the broker confirmed before the loss is marked; the rest stays pending, published again later
            lost = exc
            self._collect(open_batches)
            while open_batches:
                finishing.append(database.submit(self._finish, open_batches.popleft()))
        finally:
            for batch in open_batches:
                batch.abandon()
            outstanding: list[Future[Any]] = [*finishing, *([next_claim] if next_claim is not None else [])]
            wait_for(outstanding)  # nothing of this pass is left running on the helper threads
            if next_claim is not None and next_claim.exception() is None:
                next_claim.result().abandon()  # claimed ahead, not needed: its rows stay pending
        counts = [0, 0, 0]
        for finished in finishing:
            counts = [total + count for total, count in zip(counts, finished.result(), strict=True)]
        self.totals.published += counts[0]  # here, not on the helper threads: one writer of the totals
        self.metrics.published.inc(counts[0])
        self.totals.unroutable += counts[1]
        self.totals.nacked += counts[2]
        if lost is not None:
            raise lost
        return counts[0], counts[1], counts[2]

    def _database_threads(self) -> Executor:
        """The helper threads of the database work (two: a claim and a commit at the same time), kept while
        connected."""
        if self._database is None:
            self._database = ThreadPoolExecutor(2, thread_name_prefix="relay-database")
        return self._database

    def _submit(
        self, database: Executor, claim_batch: Callable[[tuple[str, ...]], _Batch], kinds: tuple[str, ...]
    ) -> Future[_Batch]:
        """Claim on the database thread; its end wakes this thread's wait for the broker."""
        publisher = self._publisher
        assert publisher is not None
        future = database.submit(claim_batch, kinds)
        future.add_done_callback(lambda _: publisher.wake())
        return future

    def _claim(self, kinds: tuple[str, ...]) -> _Batch:
        connection = self.engine.connect()
        try:
            transaction = connection.begin()
            commands = claim(connection, self.settings.relay_batch_size, kinds)
        except BaseException:
            connection.close()
            raise
        return _Batch(connection, transaction, {command.id: command for command in commands})

    def _collect(self, batches: deque[_Batch]) -> bool:
        """Hand the broker's answers to the batches they belong to; False, so it can lead a wait's condition."""
        publisher = self._publisher
        assert publisher is not None
        for item in publisher.settled():
            for batch in batches:
                if item.message.key in batch.commands:
                    batch.outcomes[item.message.key] = item.outcome
                    break
        return False

    def _finish(self, batch: _Batch) -> tuple[int, int, int]:
        """Mark the batch's confirmed commands published, count an attempt for the refused ones, commit."""
        ids = {outcome: [i for i, o in batch.outcomes.items() if o is outcome] for outcome in Outcome}
        confirmed, refused = ids[Outcome.CONFIRMED], ids[Outcome.RETURNED] + ids[Outcome.NACKED]
        started = time.monotonic()
        try:
            mark_published(batch.connection, confirmed, datetime.now(UTC))
            count_attempt(batch.connection, refused)
            batch.end()
        except BaseException:
            batch.abandon()
            raise
        if batch.commands:
            self.metrics.batch(len(batch.commands), time.monotonic() - started)
        for id_ in confirmed:
            command = batch.commands[id_]
            about = {"kind": command.kind, "tenant": command.tenant, "customer": command.customer_id}
            log.info("relay.published", command_id=command.command_id, **about)
        for id_ in refused:
            outcome = batch.outcomes[id_].value
            log.debug("relay.not_confirmed", command_id=batch.commands[id_].command_id, outcome=outcome)
        return len(confirmed), len(ids[Outcome.RETURNED]), len(ids[Outcome.NACKED])

    # ------------------------------------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Declare the commands exchange on a blocking connection (``connect``), then open the pipelined publisher."""
        connection = self._connect(self.settings)
        try:
            declare_commands_exchange(connection.channel(), self.settings)
        finally:
            amqp.close_connection("relay", connection)
        self._publisher = open_publisher(self.settings, "relay")

    def _idle(self, seconds: float) -> None:
        """Wait, keeping the AMQP connection serviced (heartbeats) and the stop flag watched."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            self.health.beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._publisher is not None:
                self._publisher.wait(min(left, 0.5))
            else:
                self.stop.wait(min(left, 0.5))

    def disconnect(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()
        database, self._database = self._database, None
        if database is not None:
            database.shutdown(wait=True)
