"""``relance worker jobs``: run the background jobs' Dramatiq actors on RabbitMQ until stopped.

The composition root of the jobs: settings → engine (schema checked, as every worker) → broker and actors
(:func:`services.jobs.broker.open_jobs`) with Dramatiq's Prometheus middleware → a ``dramatiq.Worker`` of
``RELANCE_JOBS_THREADS`` threads. The metrics are served on ``RELANCE_JOBS_METRICS_PORT`` (0: not served), by
Dramatiq's own exposition server, from a folder of this process (Prometheus' multi-process mode, as Dramatiq works).

SIGTERM or SIGINT stops consuming and waits for the jobs running to finish (up to their lease, then they are left to
be taken over); a worker killed outright loses nothing: RabbitMQ redelivers its unacknowledged messages and the next
worker takes the jobs over once their heartbeat is older than the lease.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Engine

from shared.config import ConfigurationError, Settings, hide_password
from shared.runtime import run_worker

if TYPE_CHECKING:
    from shared.observability.health import Health

log = structlog.get_logger()
BEAT_SECONDS = 5.0  # between two heartbeats of the jobs worker's main thread


def run(settings: Settings, stop: threading.Event | None = None) -> int:
    from services.jobs.broker import in_process

    if in_process(settings):
        raise ConfigurationError(
            "`relance worker jobs` consumes RabbitMQ, and RELANCE_JOBS_BROKER says the jobs run in-process "
            f"({settings.jobs_broker}, database {hide_password(settings.require_database_url())}): on SQLite the jobs "
            "run in the process that enqueues them; set RELANCE_JOBS_BROKER=rabbitmq to use a jobs worker"
        )
    folder = tempfile.mkdtemp(prefix="relance-jobs-metrics-")
    try:
        _multiprocess(folder)  # before anything imports prometheus_client, relance's own metrics included
        from shared.observability.metrics import WorkerMetrics
        from shared.observability.telemetry import Telemetry

        # RELANCE_METRICS_ADDRESS: /livez, /readyz and relance_worker_info as every worker; Dramatiq's middleware
        # serves the actors' metrics on RELANCE_JOBS_METRICS_PORT.
        telemetry = Telemetry.of(settings, WorkerMetrics("jobs"), broker=True)
        return run_worker(
            settings,
            "jobs",
            stop,
            lambda engine, stopping: serve(settings, engine, stopping, folder, telemetry.health),
            telemetry,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def serve(settings: Settings, engine: Engine, stop: threading.Event, folder: str, health: Health | None = None) -> int:
    metrics = _metrics(settings, folder)
    from services.jobs.broker import open_jobs

    runtime = open_jobs(settings, engine, extra=[metrics])
    worker = runtime.start_worker(settings.jobs_threads)  # the metrics are set up as it boots
    if settings.jobs_metrics_port:
        threading.Thread(target=_expose, name="jobs-metrics", daemon=True).start()
    log.info(
        "jobs.worker_started",
        queue=runtime.queue,
        threads=settings.jobs_threads,
        kinds=sorted(runtime.actors),
        metrics_port=settings.jobs_metrics_port or None,
    )
    if health is not None:
        health.broker_connected()
    while not stop.wait(BEAT_SECONDS):
        if health is not None:
            health.beat()  # the actors run on Dramatiq's threads; this loop only says the process is alive
    log.info("jobs.worker_stopping")
    runtime.close()
    del worker
    return 0


def _multiprocess(folder: str) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # before prometheus_client is imported, as Dramatiq requires
    os.environ["prometheus_multiproc_dir"] = folder  # noqa: SIM112 - the older name, which Dramatiq sets too


def _metrics(settings: Settings, folder: str) -> Any:
    """Dramatiq's Prometheus middleware, its files in ``folder`` and its server on the settings' port."""
    _multiprocess(folder)
    from dramatiq.middleware import prometheus

    prometheus.DB_PATH = folder
    prometheus.HTTP_PORT = settings.jobs_metrics_port
    return prometheus.Prometheus()


def _expose() -> None:
    from dramatiq.middleware import prometheus

    prometheus._run_exposition_server()  # type: ignore[no-untyped-call]
