"""One worker's telemetry: its metrics and health, and with ``RELANCE_METRICS_ADDRESS`` the HTTP server and gauges.

:func:`shared.runtime.run_worker` starts it before the schema check (so ``/livez`` and ``/readyz`` answer while the
worker waits for its database) and closes it when the worker ends. A worker built without one (tests, ``relance
clock tick``) gets :meth:`Telemetry.offline`: the same counters, nothing served, no thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import Engine

from shared.config import Settings
from shared.observability.gauges import Refresher
from shared.observability.health import DatabaseCheck, Health, side_engine
from shared.observability.metrics import WorkerMetrics
from shared.observability.server import MetricsServer

M = TypeVar("M", bound=WorkerMetrics)


class Telemetry(Generic[M]):
    def __init__(
        self,
        metrics: M,
        health: Health,
        *,
        address: str | None = None,
        side: Engine | None = None,
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.side = side  # the engine of the checks and gauge queries, apart from the worker's pool
        self.server = MetricsServer(address, metrics.registry, health) if address else None
        self._closing = threading.Event()
        self._refresher: Refresher | None = None

    @classmethod
    def of(cls, settings: Settings, metrics: M, *, broker: bool) -> Telemetry[M]:
        """From the settings: readiness checks the settings' database (and the broker if ``broker``).

        Without ``RELANCE_METRICS_ADDRESS`` nothing would read the checks or the gauges: no side engine is made.
        """
        if not settings.metrics_address:
            return cls(metrics, Health(metrics.service, metrics, live_seconds=settings.liveness_seconds))
        url = settings.require_database_url()
        side = side_engine(url)
        try:
            health = Health(
                metrics.service,
                metrics,
                live_seconds=settings.liveness_seconds,
                database=DatabaseCheck(side, url),
                broker=broker,
            )
            return cls(metrics, health, address=settings.metrics_address, side=side)
        except BaseException:
            side.dispose()
            raise

    @classmethod
    def offline(cls, metrics: M) -> Telemetry[M]:
        """Counters and a heartbeat, nothing served: a worker built by hand."""
        return cls(metrics, Health(metrics.service, metrics))

    def start(self) -> None:
        if self.server is not None:
            self.server.start()

    def refresh(self, *tasks: Callable[[], None]) -> None:
        """Refresh these gauges every 15 s on a thread of their own, if anything serves them."""
        if self.server is not None and tasks and self._refresher is None:
            self._refresher = Refresher(tasks, self._closing).start()

    def close(self) -> None:
        self._closing.set()
        if self._refresher is not None:
            self._refresher.join()
        if self.server is not None:
            self.server.close()
        if self.side is not None:
            self.side.dispose()
