"""Enqueue a job once, run it once: the application layer of the background jobs, with no Dramatiq in sight.

Enqueueing (:meth:`Jobs.enqueue`) writes the job's row first, then hands its id to the broker (send after commit).
The id is the caller's, or a digest of (tenant, kind, arguments, the day it is asked for): asking again the same day
is the same job. An id that exists returns the existing job and sends nothing while it is queued, running or done;
a failed job is run again only on request (``rerun``), and its message is sent again on request for a job still
queued, or running with a heartbeat older than the lease (the message was lost with a broker, or with the process
that ran it in-process).

Running (:meth:`Jobs.execute`, what each actor calls with the job id) claims the row (:func:`store.claim`), runs the
kind's function with a heartbeat, and records the outcome in one statement. So a duplicate message (Dramatiq's
retries are not atomic) of a done job does nothing, one of a running job waits its turn (:class:`RunLater`, until
the running worker's lease is over), and a job whose worker died is taken over by the next delivery once its
heartbeat is older than ``RELANCE_JOBS_LEASE_SECONDS``.

Outcomes: the function's result → ``done``. A refusal (:class:`~shared.contracts.jobs.JobRefused`, arguments
this relance refuses, a bug) → ``failed`` with the reason, never retried. A transient failure (the database or a
broker away) → ``queued`` again and :class:`RunLater` with a backoff of seconds, until ``RELANCE_JOBS_MAX_ATTEMPTS``
runs, then ``failed`` saying so. The time limit of the kind → ``failed``.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from services.jobs import registry, store
from services.jobs.errors import InvalidJob, JobConflict, JobError, JobsUnavailable, is_transient
from services.jobs.store import Job
from shared.config import Settings
from shared.contracts.jobs import JobRefused

log = structlog.get_logger()

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
TENANT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # the contract's tenant (shared/contracts/erp.py)
Send = Callable[[str, str], None]  # (kind, job id): hand the job to the broker; raises JobsUnavailable


class RunLater(JobError):
    """Not now: deliver the job's message again in ``delay_seconds`` (a broker delay of seconds, never more)."""

    def __init__(self, reason: str, delay_seconds: float) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


@dataclass(frozen=True, slots=True)
class Enqueued:
    job: Job
    created: bool  # a new row
    sent: bool  # a message was handed to the broker


def job_id_for(tenant: str, kind: str, args: Mapping[str, Any], day: date) -> str:
    """The id of "this job, asked for on this day": the same request twice the same day is one job."""
    canonical = orjson.dumps([tenant, kind, dict(args), day.isoformat()], option=orjson.OPT_SORT_KEYS)
    return f"{kind}.{day:%Y%m%d}.{hashlib.sha256(canonical).hexdigest()[:24]}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Context:
    """What a running job's function is given (:class:`shared.contracts.jobs.JobContext`)."""

    job_id: str
    tenant: str
    settings: Settings
    engine: Engine
    attempt: int
    now: Callable[[], datetime]
    lost: threading.Event
    quick: Engine  # where progress and heartbeats are written (see Jobs.quick)
    _reported: float = 0.0

    def progress(self, done: int, total: int | None = None, note: str = "") -> None:
        """Recorded at most every half second (but the last step), each time with the heartbeat."""
        moment = time.monotonic()
        if moment - self._reported < 0.5 and (total is None or done < total):
            return
        self._reported = moment
        try:
            with self.quick.begin() as conn:
                if not store.report(conn, self.job_id, self.attempt, done, total, note, self.now()):
                    self._lose()
        except OperationalError as exc:  # progress is for people to see: the job goes on without it
            log.debug("jobs.progress_not_recorded", job_id=self.job_id, error=_reason(exc))

    def _lose(self) -> None:
        if not self.lost.is_set():
            self.lost.set()
            log.warning("jobs.lease_lost", job_id=self.job_id, attempt=self.attempt)


class Jobs:
    """Enqueue, run and read jobs on one database, handing messages to ``send`` (the broker's, see ``broker.py``)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        send: Send,
        *,
        now: Callable[[], datetime] = _utc_now,
        interruptions: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.settings = settings
        self.engine = engine
        self._send = send
        self.now = now
        self.interruptions = interruptions  # raised into a job's thread when its time limit is over
        self.lease = timedelta(seconds=settings.jobs_lease_seconds)
        self.quick = _quick_engine(engine)

    # ------------------------------------------------------------------------------------------------ reading
    def get(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            return store.get(conn, job_id)

    def recent(self, tenants: Collection[str] | None, limit: int = 50) -> list[Job]:
        with self.engine.connect() as conn:
            return store.recent(conn, tenants, limit)

    # ------------------------------------------------------------------------------------------------ enqueueing
    def enqueue(
        self,
        tenant: str,
        kind: str,
        args: Mapping[str, Any] | None,
        requested_by: str,
        *,
        job_id: str | None = None,
        rerun: bool = False,
    ) -> Enqueued:
        """The job, created and sent if it is new (see the module's docstring for an id that exists)."""
        found = registry.kind(kind)
        checked = found.check(args)
        if not TENANT.match(tenant):
            raise InvalidJob(f"{tenant!r} is not a tenant (lowercase letters, digits, '.', '_', '-'; up to 64)")
        if not requested_by or len(requested_by) > 254:
            raise InvalidJob("a job needs who asked for it (requested_by, up to 254 characters)")
        now = self.now()
        job_id = job_id or job_id_for(tenant, kind, checked, now.date())
        if not JOB_ID.match(job_id):
            raise InvalidJob(f"{job_id!r} is not a job id: up to 128 letters, digits, '.', '_', ':' or '-'")
        if store.insert(self.engine, job_id, tenant, kind, checked, requested_by, now):
            self._hand_over(kind, job_id)
            log.info("jobs.enqueued", job_id=job_id, tenant=tenant, kind=kind, requested_by=requested_by)
            return Enqueued(self._existing(job_id), created=True, sent=True)
        existing = self._existing(job_id)
        if (existing.tenant, existing.kind, existing.args) != (tenant, kind, checked):
            raise JobConflict(
                f"job id {job_id} already names another job ({existing.kind} of {existing.tenant} with arguments "
                f"{orjson.dumps(existing.args).decode()}): choose another id"
            )
        orphan = existing.stale(now, self.lease)  # running, but nobody touched it for a lease: its message is gone
        if not rerun or not (existing.status in ("failed", "queued") or orphan):
            return Enqueued(existing, created=False, sent=False)
        if existing.status == "failed":
            with self.engine.begin() as conn:
                if not store.requeue_failed(conn, job_id, requested_by):
                    return Enqueued(self._existing(job_id), created=False, sent=False)  # someone else re-ran it
        self._hand_over(kind, job_id)
        log.info("jobs.rerun", job_id=job_id, tenant=tenant, kind=kind, requested_by=requested_by)
        return Enqueued(self._existing(job_id), created=False, sent=True)

    def _existing(self, job_id: str) -> Job:
        job = self.get(job_id)
        assert job is not None, job_id  # rows are never deleted
        return job

    def _hand_over(self, kind: str, job_id: str) -> None:
        try:
            self._send(kind, job_id)
        except JobsUnavailable:
            log.warning("jobs.not_sent", job_id=job_id, kind=kind)
            raise

    # ------------------------------------------------------------------------------------------------ running
    def execute(self, job_id: str) -> None:
        """Run the job once if it is ours to run (see the module's docstring); raises :class:`RunLater` or nothing."""
        now = self.now()
        try:
            with self.engine.begin() as conn:
                attempt = store.claim(conn, job_id, now, self.lease)
                job = store.get(conn, job_id)
        except Exception as exc:
            if is_transient(exc):
                raise RunLater(f"the database is not answering: {_reason(exc)}", self._backoff(1)) from exc
            raise
        if job is None:
            log.warning("jobs.unknown_job", job_id=job_id)  # a message with no row: nothing to do, ever
            return
        if attempt is None:
            if job.finished:
                log.info("jobs.duplicate_delivery", job_id=job_id, status=job.status)
                return
            beat = job.heartbeat_at or job.started_at or now
            wait = max(1.0, (beat + self.lease - now).total_seconds()) + random.uniform(0, 1)
            raise RunLater(f"job {job_id} is running on another worker", wait)
        log.info("jobs.started", job_id=job_id, kind=job.kind, tenant=job.tenant, attempt=attempt)
        self._run(job, attempt)

    def _run(self, job: Job, attempt: int) -> None:
        context = _Context(
            job.id, job.tenant, self.settings, self.engine, attempt, self.now, threading.Event(), self.quick
        )
        stop_beating = threading.Event()
        beating = threading.Thread(
            target=self._beat, args=(context, stop_beating), name=f"job-heartbeat-{job.id}", daemon=True
        )
        limit = 0
        try:
            kind = registry.kind(job.kind)
            limit = kind.time_limit_seconds
            args = kind.check(job.args)
            function = kind.function()
            beating.start()
            result = function(args, context)
        except BaseException as exc:
            self._failed(job, attempt, exc, limit)
        else:
            try:
                orjson.dumps(result)
            except TypeError as exc:  # a bug of the job's function: nothing a retry changes
                log.error("jobs.bad_result", job_id=job.id, kind=job.kind, error=str(exc))
                self._finish(job, attempt, error=f"relance failed: the job's result cannot be kept as JSON ({exc})")
                return
            self._finish(job, attempt, result=result)
            log.info("jobs.done", job_id=job.id, kind=job.kind, attempt=attempt)
        finally:
            stop_beating.set()
            if beating.is_alive():
                beating.join(5)

    def _failed(self, job: Job, attempt: int, exc: BaseException, limit: int) -> None:
        if isinstance(exc, self.interruptions):
            self._finish(job, attempt, error=f"stopped: it ran longer than its time limit of {limit} s")
            return
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) or not isinstance(exc, Exception):
            raise exc
        if is_transient(exc):
            reason = _reason(exc)
            if attempt >= self.settings.jobs_max_attempts:
                self._finish(job, attempt, error=f"gave up after {attempt} attempts; the last one: {reason}")
                return
            with self.engine.begin() as conn:
                store.release(conn, job.id, attempt, reason, self.now())
            log.warning("jobs.retrying", job_id=job.id, attempt=attempt, error=reason)
            raise RunLater(reason, self._backoff(attempt)) from exc
        if isinstance(exc, (JobRefused, JobError)) and not isinstance(exc, RunLater):
            error = str(exc) or type(exc).__name__
        else:
            log.exception("jobs.crashed", job_id=job.id, kind=job.kind)
            error = f"relance failed ({type(exc).__name__}: {_reason(exc)}); see the jobs worker's log"
        self._finish(job, attempt, error=error)

    def _finish(
        self, job: Job, attempt: int, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        with self.engine.begin() as conn:
            recorded = store.finish(conn, job.id, attempt, self.now(), result=result, error=error)
        if not recorded:
            log.warning("jobs.outcome_not_recorded", job_id=job.id, attempt=attempt, reason="taken over meanwhile")
        elif error is not None:
            log.warning("jobs.failed", job_id=job.id, kind=job.kind, attempt=attempt, error=error)

    def _beat(self, context: _Context, stop: threading.Event) -> None:
        interval = max(0.5, self.settings.jobs_lease_seconds / 4)
        while not stop.wait(interval):
            try:
                with self.quick.begin() as conn:
                    if not store.heartbeat(conn, context.job_id, context.attempt, self.now()):
                        context._lose()
                        return
            except Exception as exc:  # the database away for a moment: the next beat may pass
                log.warning("jobs.heartbeat_failed", job_id=context.job_id, error=_reason(exc))

    def _backoff(self, attempt: int) -> float:
        """Seconds before the next run: 1, 2, 4… with jitter, never more than a lease."""
        ceiling = min(float(self.settings.jobs_lease_seconds), 2.0 ** max(0, attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


QUICK_SQLITE_WAIT_MS = 250


def _quick_engine(engine: Engine) -> Engine:
    """Where a running job's progress and heartbeat are written: ``engine`` itself, but on SQLite an engine that gives
    up after a moment. SQLite has one writer at a time, and a job's own long transaction (a replay's snapshot) holds
    it: a progress line must then be skipped, not wait for the job that is waiting for it."""
    if engine.dialect.name != "sqlite":
        return engine
    from shared.ledger.db import make_engine

    quick = make_engine(engine.url.render_as_string(hide_password=False))

    @event.listens_for(quick, "connect")
    def _short_wait(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={QUICK_SQLITE_WAIT_MS}")
        cursor.close()

    return quick


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
