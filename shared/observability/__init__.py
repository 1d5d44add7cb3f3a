"""What a platform team sees of a running worker: its metrics, whether it is alive and ready, and how it says so.

- :mod:`~shared.observability.metrics`: the ``relance_*`` Prometheus metrics, one registry per worker process;
- :mod:`~shared.observability.health`: the heartbeat of the worker's loop (liveness), the readiness checks
  (database at the current schema, broker connected), and the ``worker.heartbeat`` line of an idle worker;
- :mod:`~shared.observability.gauges`: the gauges that need a query, refreshed every
  :data:`~shared.observability.gauges.REFRESH_SECONDS` on a thread and connection of their own;
- :mod:`~shared.observability.server`: the small threaded HTTP server of ``/metrics``, ``/livez`` and ``/readyz``
  (``RELANCE_METRICS_ADDRESS`` or ``--metrics-address``).
"""

from importlib import metadata


def relance_version() -> str:
    """The installed relance's version (what ``relance_worker_info`` and every log line carry)."""
    try:
        return metadata.version("relance")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
