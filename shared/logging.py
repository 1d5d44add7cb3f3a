"""structlog set up once per process: JSON lines in production, readable lines on a terminal.

Every line carries who wrote it: ``service`` (the worker, or ``cli`` for the other commands), ``version``, ``pid``
and ``host`` (:class:`ProcessIdentity`, a processor; a worker names itself once at start-up with
:func:`identify`). Per-message context (event_id, tenant, customer) is bound with
:func:`structlog.contextvars.bound_contextvars` by the code that processes a message, so every line it logs carries
those keys.

A condition every worker can meet has one event name whatever the worker (:data:`CONDITIONS`; the worker is in the
line's ``service``), so one alert or one search finds it in all of them.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

# The one event name of each condition every worker can meet (the README's "Logs" table lists them).
DATABASE_UNAVAILABLE = "database.unavailable"
DATABASE_AVAILABLE = "database.available"
BROKER_UNAVAILABLE = "broker.unavailable"
BROKER_CONNECTED = "broker.connected"
CONDITIONS: Mapping[str, str] = {
    DATABASE_UNAVAILABLE: "the database did not answer (or failed a round); the worker retries with backoff",
    DATABASE_AVAILABLE: "the database answered again after database.unavailable",
    BROKER_UNAVAILABLE: "the RabbitMQ connection was lost or refused; the worker reconnects with backoff",
    BROKER_CONNECTED: "connected to RabbitMQ (again), consuming or publishing",
}


class ProcessIdentity:
    """A processor adding ``service``, ``version``, ``pid`` and ``host`` to every line (a key already set wins)."""

    def __init__(self, service: str = "cli") -> None:
        from shared.observability import relance_version

        self.service = service
        self.version = relance_version()
        self.host = socket.gethostname()

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("service", self.service)
        event.setdefault("version", self.version)
        event.setdefault("pid", os.getpid())  # read each time: a forked child has its own
        event.setdefault("host", self.host)
        return event


_identity = ProcessIdentity()


def identify(service: str) -> None:
    """Name the process's service in every line from now on (a worker, once, when it starts)."""
    _identity.service = service


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _identity,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # Libraries (pika, alembic) log through the standard library; keep them quiet unless debugging.
    logging.basicConfig(level=logging.WARNING if level != "debug" else logging.DEBUG, stream=sys.stderr)
    # pika logs a traceback at ERROR for every failed connection attempt; relance logs its own line instead.
    logging.getLogger("pika").setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of writing (it may be replaced after logging is configured)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
