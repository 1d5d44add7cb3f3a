"""The jobs' Dramatiq broker and actors, built from settings: the adapter between Dramatiq and :mod:`.service`.

- **RabbitMQ** (``RELANCE_JOBS_BROKER=rabbitmq``, or ``auto`` on PostgreSQL): Dramatiq's ``RabbitmqBroker`` on
  ``RELANCE_AMQP_URL`` with ``confirm_delivery=True`` (its default, False, can lose a publish silently), every actor on
  ``RELANCE_JOBS_QUEUE`` (Dramatiq adds ``<queue>.DQ`` for delayed retries and ``<queue>.XQ`` for dead messages).
- **In-process** (``inprocess``, or ``auto`` on SQLite: the embedded default, ``relance demo``'s ledger): Dramatiq's
  ``StubBroker`` and a ``dramatiq.Worker`` running in the process that enqueues (:meth:`JobsRuntime.start_worker`).

One actor per kind of :data:`services.jobs.registry.KINDS`, named after it (``"ledger.checkpoint"``), thin: its
message is the job id, handed to :meth:`services.jobs.service.Jobs.execute`. Middleware: ``TimeLimit`` (each kind's
limit), ``Retries`` for what the service asks to run later (:class:`~services.jobs.service.RunLater`, raised again as
``dramatiq.Retry`` with its delay of seconds) and nothing else: a job's refusal or crash is recorded ``failed`` by the
service and its message acknowledged. ``relance worker jobs`` adds Dramatiq's ``Prometheus`` middleware.
Nothing connects before the first message is sent or consumed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Middleware, Retries, ShutdownNotifications, TimeLimit
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from services.jobs import registry
from services.jobs.errors import JobsUnavailable
from services.jobs.service import Jobs, RunLater
from shared.config import Settings, hide_password

RETRY_CAP = 1000  # deliveries of one message asked to run later (each a few seconds apart at most)


def in_process(settings: Settings) -> bool:
    """Whether jobs run in the enqueueing process (``inprocess``, or ``auto`` on SQLite)."""
    if settings.jobs_broker != "auto":
        return settings.jobs_broker == "inprocess"
    return make_url(settings.require_database_url()).get_backend_name() == "sqlite"


def _retry_when(retries: int, exception: BaseException) -> bool:
    return isinstance(exception, dramatiq.Retry) and retries < RETRY_CAP


def middleware(extra: list[Middleware] | None = None) -> list[Middleware]:
    return [
        *(extra or []),
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Retries(max_retries=RETRY_CAP, min_backoff=1000, max_backoff=60_000, retry_when=_retry_when),
    ]


def make_broker(settings: Settings, extra: list[Middleware] | None = None) -> dramatiq.Broker:
    if in_process(settings):
        return StubBroker(middleware=middleware(extra))
    return RabbitmqBroker(url=settings.amqp_url, confirm_delivery=True, middleware=middleware(extra))


@dataclass
class JobsRuntime:
    """The service, its broker and actors, and (in-process, or in ``relance worker jobs``) a Dramatiq worker."""

    jobs: Jobs
    broker: dramatiq.Broker
    actors: dict[str, dramatiq.Actor[Any, Any]]
    queue: str
    worker: dramatiq.Worker | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def in_process(self) -> bool:
        return isinstance(self.broker, StubBroker)

    def start_worker(self, threads: int) -> dramatiq.Worker:
        with self._lock:
            if self.worker is None:
                # What Dramatiq's own CLI does in each process: TimeLimit's watchdog and the metrics start here.
                self.broker.emit_after("process_boot")
                self.worker = dramatiq.Worker(self.broker, worker_threads=threads, worker_timeout=200)
                self.worker.start()
            return self.worker

    def close(self) -> None:
        with self._lock:
            worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop(timeout=30_000)
        self.broker.close()
        if self.jobs.quick is not self.jobs.engine:
            self.jobs.quick.dispose()


def open_jobs(
    settings: Settings, engine: Engine, *, extra: list[Middleware] | None = None, now: Callable[..., Any] | None = None
) -> JobsRuntime:
    """The jobs of the settings' broker on ``engine``: every kind's actor declared, nothing connected yet."""
    broker = make_broker(settings, extra)
    actors: dict[str, dramatiq.Actor[Any, Any]] = {}

    def send(kind: str, job_id: str) -> None:
        try:
            actors[kind].send(job_id)
        except dramatiq.errors.BrokerError as exc:
            raise JobsUnavailable(
                f"RabbitMQ ({hide_password(settings.amqp_url)}) did not take job {job_id}: {exc}; the job stays "
                "queued, ask again with --rerun (or rerun=true) once RabbitMQ answers"
            ) from None

    options: dict[str, Any] = {"interruptions": (TimeLimitExceeded,)}
    if now is not None:
        options["now"] = now
    jobs = Jobs(settings, engine, send, **options)
    for kind in registry.KINDS.values():
        declare = dramatiq.actor(
            actor_name=kind.name,
            queue_name=settings.jobs_queue,
            broker=broker,
            time_limit=kind.time_limit_seconds * 1000,
        )
        actors[kind.name] = declare(_actor_function(jobs, kind.name))
    return JobsRuntime(jobs, broker, actors, settings.jobs_queue)


def _actor_function(jobs: Jobs, kind: str) -> Callable[[str], None]:
    def run(job_id: str) -> None:
        try:
            jobs.execute(job_id)
        except RunLater as later:
            raise dramatiq.Retry(str(later), delay=int(later.delay_seconds * 1000)) from None

    run.__name__ = run.__qualname__ = kind.replace(".", "_")
    return run
