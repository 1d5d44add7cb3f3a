"""The gauges that need a query, refreshed every :data:`REFRESH_SECONDS` by a thread of their own (:class:`Refresher`).

Each is one cheap aggregate (a count, a minimum) on an indexed column, over every tenant: operational figures, no
tenant's data. They run on the side engine of :func:`shared.observability.health.side_engine` (its own connections,
not the worker's pool) and, for the queue depth, on a pika connection of the refresher's own thread (pika is not
thread-safe): a slow query or a lost broker delays the gauges, never the worker's batches. A query that fails leaves
the gauge at its last value and is logged at debug level; readiness is what tells an outage.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import Engine, func, select

from shared.config import Settings
from shared.ledger.schema import checkpoints, cursors, events, outbox, timers
from shared.observability.metrics import EscalationMetrics, OutboxMetrics, WorkerMetrics

log = structlog.get_logger()

REFRESH_SECONDS = 15.0
OVERDUE = timedelta(minutes=5)

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite gives naive UTC


class Refresher:
    """Calls each task now, then every ``interval`` seconds, on a daemon thread, until ``stop`` is set."""

    def __init__(
        self, tasks: Sequence[Callable[[], None]], stop: threading.Event, interval: float | None = None
    ) -> None:
        self.tasks = list(tasks)
        self.stop = stop
        self.interval = REFRESH_SECONDS if interval is None else interval
        self._thread = threading.Thread(target=self._run, name="metrics-refresh", daemon=True)

    def start(self) -> Refresher:
        if self.tasks:
            self._thread.start()
        return self

    def refresh(self) -> None:
        for task in self.tasks:
            try:
                task()
            except Exception as exc:  # a gauge is worth less than the worker: keep the last value
                log.debug("metrics.refresh_failed", task=getattr(task, "__name__", repr(task)), error=str(exc))

    def _run(self) -> None:
        while not self.stop.is_set():
            self.refresh()
            self.stop.wait(self.interval)
        for task in self.tasks:
            if isinstance(task, QueueDepth):
                task.close()  # on this thread, which alone used its connection

    def join(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)


def outbox_gauges(
    engine: Engine, metrics: OutboxMetrics, kinds: Sequence[str], clock: Clock = _now
) -> Callable[[], None]:
    """Pending rows (and the oldest one's age) and dead-lettered rows of the ``kinds`` the worker hands over."""

    def outbox_rows() -> None:
        of_kinds = outbox.c.kind.in_(list(kinds))
        pending = (outbox.c.published_at.is_(None), outbox.c.dead_at.is_(None), of_kinds)
        with engine.connect() as conn:
            count, oldest = conn.execute(select(func.count(), func.min(outbox.c.created_at)).where(*pending)).one()
            dead = conn.execute(select(func.count()).where(outbox.c.dead_at.is_not(None), of_kinds)).scalar_one()
        metrics.outbox_pending.set(count)
        age = (clock() - _aware(oldest)).total_seconds() if oldest is not None else 0.0
        metrics.outbox_oldest_age.set(max(age, 0.0))
        metrics.outbox_dead.set(dead)

    return outbox_rows


def escalation_gauges(
    engine: Engine, metrics: EscalationMetrics, cursor: str, clock: Clock = _now
) -> Callable[[], None]:
    """Timers due and overdue, the log follower's lag behind the log, the age of the last signed checkpoint."""

    def escalation_state() -> None:
        now = clock()
        with engine.connect() as conn:
            due = conn.execute(select(func.count()).where(timers.c.due_at <= now)).scalar_one()
            overdue = conn.execute(select(func.count()).where(timers.c.due_at <= now - OVERDUE)).scalar_one()
            position = conn.execute(select(cursors.c.position).where(cursors.c.name == cursor)).scalar_one_or_none()
            lag = conn.execute(select(func.count()).where(events.c.position > (position or 0))).scalar_one()
            signed = conn.execute(select(func.max(checkpoints.c.created_at))).scalar_one()
        metrics.timers_due.set(due)
        metrics.timers_overdue.set(overdue)
        metrics.consumer_lag.set(lag)
        metrics.checkpoint_age.set(math.nan if signed is None else (now - _aware(signed)).total_seconds())

    return escalation_state


class QueueDepth:
    """Messages ready in ``queues`` (a passive declare each), on a connection of the refresher's thread."""

    def __init__(self, settings: Settings, metrics: WorkerMetrics, queues: Sequence[str]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.queues = list(queues)
        self.__name__ = "queue_depth"
        self._connection: object | None = None

    def __call__(self) -> None:
        from pika.adapters.blocking_connection import BlockingConnection

        from shared.broker import amqp

        connection = self._connection
        if not isinstance(connection, BlockingConnection) or not connection.is_open:
            connection = self._connection = amqp.connect(self.settings, f"{self.metrics.service}-metrics")
        try:
            for queue in self.queues:
                channel = connection.channel()  # a passive declare of a missing queue closes its channel
                try:
                    ready = channel.queue_declare(queue, passive=True).method.message_count
                    self.metrics.queue_depth.labels(queue).set(ready)
                finally:
                    if channel.is_open:
                        channel.close()
        except Exception:
            amqp.close_connection(self.metrics.service, connection)
            self._connection = None
            raise

    def close(self) -> None:
        from pika.adapters.blocking_connection import BlockingConnection

        from shared.broker import amqp

        if isinstance(self._connection, BlockingConnection):
            amqp.close_connection(self.metrics.service, self._connection)
        self._connection = None
