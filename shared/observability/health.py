"""Whether a worker is alive (its loop goes round) and ready (what it needs answers), as ``/livez`` and ``/readyz`` say.

- **Liveness** is the worker's own loop: it calls :meth:`Health.beat` at every round, also while it waits out a
  database or broker outage (a worker waiting with backoff is alive: restarting it would cure nothing). ``/livez``
  answers 503 once no beat came for ``RELANCE_LIVENESS_SECONDS``: the loop is stuck, a restart is the cure.
- **Readiness** is what the worker needs: the database reachable and at the schema revision this relance needs
  (:class:`DatabaseCheck`, on a connection of its own, its answer kept :data:`DATABASE_CHECK_SECONDS`), and for a
  broker worker the broker connected and the worker consuming (the worker says so: :meth:`Health.broker_connected`,
  :meth:`Health.broker_lost`). ``/readyz`` answers 503 with a JSON body naming each check that fails and why.
- **Heartbeat line.** :meth:`Health.beat` also logs ``worker.heartbeat`` every :data:`HEARTBEAT_LOG_SECONDS` with
  the worker's totals so far, so an idle worker is seen alive in its logs too.

A beat costs one monotonic clock reading and a comparison: it is called from every round of every loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from shared.observability.metrics import WorkerMetrics

log = structlog.get_logger()

HEARTBEAT_LOG_SECONDS = 60.0
DATABASE_CHECK_SECONDS = 2.0  # readiness probes more often than this share one answer
CONNECT_TIMEOUT_SECONDS = 5


def side_engine(url: str) -> Engine:
    """An engine for the checks and gauge queries beside a worker's own: no pool kept, a short connect timeout."""
    from shared.ledger.db import make_engine

    if url.startswith("postgresql"):
        return make_engine(url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    return make_engine(url, poolclass=NullPool)


class DatabaseCheck:
    """None when the database answers and is at the latest ledger revision, else what is wrong (one line)."""

    def __init__(self, engine: Engine, url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        from alembic.script import ScriptDirectory

        from shared.ledger.migrate import alembic_config

        self.engine = engine
        self.head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        self._clock = clock
        self._lock = threading.Lock()
        self._answer: str | None = None
        self._until = 0.0

    def __call__(self) -> str | None:
        with self._lock:
            now = self._clock()
            if now >= self._until:
                self._answer = self._check()
                self._until = now + DATABASE_CHECK_SECONDS
            return self._answer

    def _check(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as conn:
                revision = MigrationContext.configure(conn).get_current_revision()
        except DBAPIError as exc:
            return "unreachable: " + (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]
        if revision is None:
            return "no schema yet: run `relance db upgrade`"
        if revision != self.head:
            return f"schema at revision {revision}, this relance needs {self.head}: run `relance db upgrade`"
        return None


class Health:
    """One worker's liveness and readiness; :meth:`beat` from its loop, the ``broker_*`` methods from its session."""

    def __init__(
        self,
        service: str,
        metrics: WorkerMetrics | None = None,
        *,
        live_seconds: float = 120.0,
        database: Callable[[], str | None] | None = None,
        broker: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.live_seconds = live_seconds
        self.database = database
        self.uses_broker = broker
        self.totals: Callable[[], Mapping[str, Any]] = dict  # what worker.heartbeat logs; the worker sets it
        self._clock = clock
        self._beat = clock()
        self._next_log = self._beat + HEARTBEAT_LOG_SECONDS
        self._broker: str | None = "not connected yet" if broker else None
        if metrics is not None:
            # The gauge reads the time of the last beat when scraped: a beat itself never takes the gauge's lock.
            metrics.heartbeat.set_function(lambda: wall() - (clock() - self._beat))

    def beat(self) -> None:
        """The worker's loop went round (or waited out an outage a while)."""
        now = self._clock()
        self._beat = now
        if now >= self._next_log:
            self._next_log = now + HEARTBEAT_LOG_SECONDS
            log.info("worker.heartbeat", **self.totals())

    def broker_connected(self) -> None:
        """Connected to the broker, and consuming if the worker consumes."""
        self._broker = None

    def broker_lost(self, reason: str) -> None:
        self._broker = reason

    def live(self) -> tuple[bool, dict[str, Any]]:
        age = self._clock() - self._beat
        alive = age <= self.live_seconds
        return alive, {"live": alive, "service": self.service, "seconds_since_beat": round(age, 1)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, str] = {}
        if self.database is not None:
            checks["database"] = self.database() or "ok"
        if self.uses_broker:
            checks["broker"] = self._broker or "ok"
        ready = all(answer == "ok" for answer in checks.values())
        not_ready = {name: answer for name, answer in checks.items() if answer != "ok"}
        return ready, {"ready": ready, "service": self.service, "checks": checks, "not_ready": sorted(not_ready)}
