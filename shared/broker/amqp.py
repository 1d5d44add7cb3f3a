"""RabbitMQ for relance's workers: one way to connect, to tell its failures apart, and to stay connected.

- :func:`connect` opens one blocking pika connection (:mod:`shared.broker.confirms` an asynchronous one, for
  publishers that pipeline their confirms) from ``RELANCE_AMQP_URL``. Everything pika reads from an AMQP
  URL applies as written there (``heartbeat``, ``blocked_connection_timeout``, ``connection_attempts``, TLS options
  of ``amqps://``); the connection is named ``relance-<role> <host>:<pid>`` so it can be told apart in the
  management UI.
- Failures are classified once. :data:`BROKER_REFUSED` (wrong user, password or virtual host) at the first
  connection is a configuration error that retrying does not cure: :func:`stay_connected` raises
  :func:`broker_refused`'s :class:`~shared.config.ConfigurationError`. Once a connection has worked, the same
  refusal is more likely a broker restarting, and it is retried like :data:`BROKER_LOST` (connection refused, reset
  or closed, a channel closed by the broker, a consumer cancelled by it).
- :func:`stay_connected` is the loop every pika worker (a :class:`Session`) runs: connect (``broker.connected``),
  serve until stopped or until the broker is lost, then log ``broker.unavailable`` and reconnect after a capped,
  jittered backoff; the session's :class:`~shared.observability.health.Health` is told either way (readiness).
  The backoff starts over once a connection has done some work, so a broker that drops connections now and then
  is rejoined quickly, while one that is down is not hammered.

pika is not thread-safe: a connection and everything done with it belong to the thread that opened it.
"""

from __future__ import annotations

import abc
import os
import socket
import threading
from collections.abc import Mapping

import pika
import structlog
from pika.adapters.blocking_connection import BlockingConnection
from pika.exceptions import AMQPError, AuthenticationError, ProbableAccessDeniedError, ProbableAuthenticationError

from shared.config import ConfigurationError, Settings
from shared.logging import BROKER_CONNECTED, BROKER_UNAVAILABLE
from shared.observability.health import Health
from shared.runtime import Backoff, wait_beating

log = structlog.get_logger()


class ConsumerCancelled(Exception):
    """The broker cancelled a consumer (its queue deleted, its node going down): reconnect and declare again."""


BROKER_REFUSED = (AuthenticationError, ProbableAuthenticationError, ProbableAccessDeniedError)
BROKER_LOST = (AMQPError, OSError, ConsumerCancelled)


def connect(settings: Settings, role: str) -> BlockingConnection:
    """One blocking connection, named after the process so it can be told apart in the management UI."""
    return BlockingConnection(parameters(settings, role))


def parameters(settings: Settings, role: str) -> pika.URLParameters:
    """``RELANCE_AMQP_URL`` as pika reads it, with the connection named ``relance-<role> <host>:<pid>``."""
    url = pika.URLParameters(settings.amqp_url)
    url.client_properties = {"connection_name": f"relance-{role} {socket.gethostname()}:{os.getpid()}"}
    return url


def broker_refused(exc: BaseException) -> ConfigurationError:
    """A refusal at the first connection: wrong credentials or vhost, which retrying does not cure."""
    return ConfigurationError(
        f"RabbitMQ refused the connection ({type(exc).__name__}): check the user, password and virtual host in "
        "RELANCE_AMQP_URL"
    )


def log_broker_lost(service: str, settings: Settings, exc: BaseException, delay: float, **extra: object) -> None:
    log.warning(
        BROKER_UNAVAILABLE,
        service=service,
        broker=broker_address(settings),
        error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        retry_in=round(delay, 2),
        **extra,
    )


def close_connection(service: str, connection: BlockingConnection | None) -> None:
    """Close an AMQP connection that may already be broken (then there is nothing left to release)."""
    if connection is not None and connection.is_open:
        try:
            connection.close()
        except Exception as exc:
            log.debug(f"{service}.close_failed", error=str(exc))


class Session(abc.ABC):
    """One worker's life with RabbitMQ, as :func:`stay_connected` drives it: connect, serve, disconnect, again.

    A worker subclasses it and names itself in ``service`` (the prefix of its log events); ``health`` is told when
    the broker is connected and when it is lost.
    """

    service: str
    settings: Settings
    stop: threading.Event
    health: Health

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection and its channels, declare what the worker needs, start consuming."""

    @abc.abstractmethod
    def serve(self) -> None:
        """Work until ``stop`` is set (then return) or until the broker is lost (then raise :data:`BROKER_LOST`)."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Close the connection if there is one; it may already be broken."""

    @abc.abstractmethod
    def work_done(self) -> int:
        """A count of the work done so far (batches, commands, rounds): when it moves, the backoff starts over."""

    def forget(self) -> Mapping[str, object]:
        """Drop what the lost connection delivered and nobody acked (the broker redelivers it); what to log."""
        return {}


def stay_connected(session: Session) -> None:
    """Connect and serve until the session's ``stop`` is set, reconnecting with backoff whenever the broker is lost.

    Raises :class:`~shared.config.ConfigurationError` when the broker refuses the very first connection. The session
    is disconnected after every connection and before this returns or raises.
    """
    backoff = Backoff(session.settings.retry_max_seconds)
    connected_once = False
    try:
        while not session.stop.is_set():
            done_before = session.work_done()
            try:
                session.connect()
                connected_once = True
                session.health.broker_connected()
                log.info(BROKER_CONNECTED, service=session.service, broker=broker_address(session.settings))
                session.serve()
            except BROKER_REFUSED as exc:
                if not connected_once:
                    raise broker_refused(exc) from exc
                _lost(session, exc, backoff)
            except BROKER_LOST as exc:
                if session.work_done() != done_before:
                    backoff.reset()  # the connection did work for a while: start the backoff over
                _lost(session, exc, backoff)
    finally:
        session.disconnect()


def _lost(session: Session, exc: BaseException, backoff: Backoff) -> None:
    extra = session.forget()
    delay = backoff.next()
    session.health.broker_lost(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    log_broker_lost(session.service, session.settings, exc, delay, **extra)
    session.disconnect()
    wait_beating(session.stop, delay, session.health)


def broker_address(settings: Settings) -> str:
    parameters = pika.URLParameters(settings.amqp_url)
    return f"{parameters.host}:{parameters.port}"
