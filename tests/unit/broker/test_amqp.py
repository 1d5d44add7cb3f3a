"""Staying connected to RabbitMQ: a refusal at the first connection stops the worker, a lost broker is rejoined."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest
from pika.exceptions import AMQPConnectionError, ProbableAuthenticationError

from shared.broker import amqp
from shared.config import ConfigurationError, Settings, load_settings
from shared.observability.health import Health


class Script(amqp.Session):
    """A session whose connections fail, or serve some work, as the test says, one entry per connection."""

    service = "test"

    def __init__(self, *steps: BaseException | int) -> None:
        self.settings: Settings = load_settings(retry_max_seconds=0.01)
        self.stop = threading.Event()
        self.health = Health(self.service, broker=True)
        self.steps = list(steps)
        self.done = 0
        self.calls: list[str] = []

    def connect(self) -> None:
        self.calls.append("connect")
        step = self.steps[0]
        if isinstance(step, BaseException):
            self.steps.pop(0)
            raise step

    def serve(self) -> None:
        self.calls.append("serve")
        work = self.steps.pop(0)
        assert isinstance(work, int)
        self.done += work
        if self.steps:
            raise AMQPConnectionError("connection reset")
        self.stop.set()

    def disconnect(self) -> None:
        self.calls.append("disconnect")

    def work_done(self) -> int:
        return self.done

    def forget(self) -> Mapping[str, object]:
        self.calls.append("forget")
        return {}


def test_a_refusal_at_the_first_connection_is_a_configuration_error() -> None:
    session = Script(ProbableAuthenticationError("ACCESS_REFUSED"))
    with pytest.raises(ConfigurationError, match="RELANCE_AMQP_URL"):
        amqp.stay_connected(session)
    assert session.calls == ["connect", "disconnect"]
    assert session.health.ready()[1]["checks"]["broker"] == "not connected yet"


def test_a_lost_broker_makes_the_worker_not_ready_until_it_is_connected_again() -> None:
    session = Script(1, AMQPConnectionError("refused"), 1)
    looked: list[str] = []
    connect = session.connect

    def connect_and_look() -> None:
        looked.append(session.health.ready()[1]["checks"]["broker"])
        connect()

    session.connect = connect_and_look  # type: ignore[method-assign]
    amqp.stay_connected(session)
    # before the first connection, after the loss, after the refused attempt: never "ok" while disconnected
    assert looked == [
        "not connected yet",
        "AMQPConnectionError: connection reset",
        "AMQPConnectionError: refused",
    ]


def test_a_lost_broker_is_rejoined_and_a_refusal_after_a_working_connection_is_retried() -> None:
    # Given a broker that is down, then works, then refuses once (restarting), then works again
    session = Script(AMQPConnectionError("refused"), 1, ProbableAuthenticationError("restarting"), 2)
    # When the worker stays connected until it is stopped, its readiness looked at after each connection
    broker_readiness: list[str | None] = []
    serve = session.serve

    def serve_and_look() -> None:
        broker_readiness.append(session.health.ready()[1]["checks"]["broker"])
        serve()

    session.serve = serve_and_look  # type: ignore[method-assign]
    amqp.stay_connected(session)
    # Then every failure dropped what was unacked and disconnected before the next try, and the work went on
    assert session.done == 3
    # And the broker was ready while served, not after the last loss
    assert broker_readiness == ["ok", "ok"]
    assert session.calls == [
        *("connect", "forget", "disconnect"),
        *("connect", "serve", "forget", "disconnect"),
        *("connect", "forget", "disconnect"),
        *("connect", "serve", "disconnect"),
    ]
