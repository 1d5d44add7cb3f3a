"""The run's real servers, as the tests name and reach them: what the fixtures in ``conftest.py`` hand out.

PostgreSQL: ``RELANCE_TEST_DATABASE_URL`` if set, else the local server on 127.0.0.1:5432 if it answers, else a
testcontainers PostgreSQL if a Docker engine answers, else the run fails saying how to provide one.
RabbitMQ: likewise with ``RELANCE_TEST_AMQP_URL`` and 127.0.0.1:5672.

Each run names its databases (``relance_t_<run>_<n>``), its PostgreSQL roles (``relance_t_<run>_*``) and its exchanges
and queues (``relance.t.<run>.<n>.*``) after :data:`RUN_ID`, so parallel runs and tests never see each other's data.

A test reaches a server only through a fixture, and only if it carries the ``integration`` or ``e2e`` marker
(:func:`require_server_marker`): ``make unit`` deselects those and so runs with no server at all.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import pytest

if TYPE_CHECKING:
    import pika
    from sqlalchemy import Engine

    from shared.config import Settings

RUN_ID = uuid.uuid4().hex[:8]
_counter = itertools.count(1)

LOCAL_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
SERVER_MARKERS = ("integration", "e2e")

# PostgreSQL roles are cluster-wide: the runtime role of this run has a name of its own, dropped at the end.
RUNTIME_ROLE = f"relance_t_{RUN_ID}_app"
RUNTIME_PASSWORD = uuid.uuid4().hex
# RELANCE_TEST_DATABASE_ROLE=runtime: every PostgreSQL database a test gets is used through the runtime role (what the
# workers run as in production), so running a suite that way shows what that role lacks.
AS_RUNTIME_ROLE = os.environ.get("RELANCE_TEST_DATABASE_ROLE") == "runtime"


def next_number() -> int:
    """A number no other database or set of AMQP names of this run has."""
    return next(_counter)


# What each fixture that reaches a server reaches, for the message of :func:`require_server_marker`.
SERVER_FIXTURES = {
    "postgres_server_url": "PostgreSQL",
    "pg_databases": "PostgreSQL",
    "private_postgres": "a PostgreSQL server of its own",
    "amqp_server_url": "RabbitMQ",
    "private_rabbitmq": "a RabbitMQ server of its own",
}


def require_server_marker(node: pytest.Item, what: str, fixture: str | None) -> None:
    """Fail the test unless it is marked ``integration`` or ``e2e``: a test that reaches a server must say so, or
    ``make unit`` (which deselects those markers to run without servers) would try to reach one."""
    if not any(node.get_closest_marker(marker) for marker in SERVER_MARKERS):
        pytest.fail(
            f"{node.nodeid} uses {what} (fixture {fixture}) but is not marked integration or e2e: "
            "add `pytestmark = pytest.mark.integration` to its module (or mark the test or its parameter), "
            "so that `make unit` leaves it out",
            pytrace=False,
        )


# ---------------------------------------------------------------------------------------------------- finding them
def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def no_server(what: str, variable: str, port: int) -> None:
    pytest.fail(
        f"no {what} for the integration tests: set {variable} to a server URL, start {what} on "
        f"127.0.0.1:{port}, or run a Docker engine so testcontainers can start one. "
        "These tests are never skipped.",
        pytrace=False,
    )


# ---------------------------------------------------------------------------------------------------- PostgreSQL
@dataclass(frozen=True)
class PgDatabase:
    owner_url: str  # the migration role's URL (the tests' admin)
    runtime_url: str  # the same database through the runtime role (granted only if asked for)


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of one test alone (its own data directory and port), which it may stop and start."""

    bin_dir: Path
    data_dir: Path
    port: int
    user: str | None  # the OS user the server runs as (PostgreSQL refuses to run as root)

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run([*prefix, *args], check=check, capture_output=True, timeout=120)

    def initdb(self) -> None:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = self.data_dir / "server.log"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(log), "-o", options, "-w", "start")

    def stop(self, *, check: bool = True) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=check)


# ---------------------------------------------------------------------------------------------------- RabbitMQ
# The type of the queues relance declares in the tests. Classic: quorum queues cost a Raft group each on the shared
# broker, and many tests declare their own queues next to relance's as a plain durable queue, which a quorum
# declaration would refuse. Quorum queues are tested where it matters, with their own names.
QUEUE_TYPE = "classic"


@dataclass(frozen=True)
class AmqpNames:
    exchange: str
    queue: str
    dead_letter_queue: str
    commands_exchange: str
    notifier_queue: str
    jobs_queue: str

    @classmethod
    def of_this_test(cls) -> AmqpNames:
        base = f"relance.t.{RUN_ID}.{next_number()}"
        return cls(
            exchange=f"{base}.events",
            queue=f"{base}.ingest",
            dead_letter_queue=f"{base}.dead",
            commands_exchange=f"{base}.commands",
            notifier_queue=f"{base}.notifier",
            jobs_queue=f"{base}.jobs",
        )

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue declared under these names, the notifier's retry and dead-letter queues included, and the
        jobs' with Dramatiq's delay (``.DQ``) and dead-letter (``.XQ``) queues."""
        notifier, jobs = self.notifier_queue, self.jobs_queue
        return (
            self.queue,
            self.dead_letter_queue,
            notifier,
            f"{notifier}.retry",
            f"{notifier}.dead",
            jobs,
            f"{jobs}.DQ",
            f"{jobs}.XQ",
        )

    @property
    def exchanges(self) -> tuple[str, ...]:
        return (self.exchange, self.commands_exchange)

    def settings(self) -> dict[str, Any]:
        """Keyword overrides for :func:`shared.config.load_settings`.

        The tests' queues are classic (:data:`QUEUE_TYPE`), as the queues their helpers declare beside relance's;
        the tests of quorum queues (tests/integration/broker/test_quorum.py) override it.
        """
        return {
            "queue_type": QUEUE_TYPE,
            "events_exchange": self.exchange,
            "ingest_queue": self.queue,
            "dead_letter_queue": self.dead_letter_queue,
            "commands_exchange": self.commands_exchange,
            "notifier_queue": self.notifier_queue,
            "jobs_queue": self.jobs_queue,
        }

    def env(self) -> dict[str, str]:
        """The same names as ``RELANCE_*`` environment variables, for a worker process."""
        return {f"RELANCE_{key.upper()}": value for key, value in self.settings().items()}


@dataclass(frozen=True)
class CommandQueues:
    """A commands exchange of one test, with the queues an ERP (``erp.#``) and the notifier (``notifier.#``) bind."""

    url: str
    exchange: str
    erp_queue: str
    notifier_queue: str

    @classmethod
    @contextmanager
    def declared(cls, url: str, base: str) -> Iterator[Self]:
        """The exchange ``<base>.commands`` and its queues, declared durable and bound; deleted afterwards."""
        import pika

        names = cls(url, f"{base}.commands", f"{base}.erp", f"{base}.notifier")
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.exchange_declare(names.exchange, exchange_type="topic", durable=True)
        for queue, key in ((names.erp_queue, "erp.#"), (names.notifier_queue, "notifier.#")):
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, names.exchange, routing_key=key)
        connection.close()
        try:
            yield names
        finally:
            connection = pika.BlockingConnection(pika.URLParameters(url))
            channel = connection.channel()
            for queue in (names.erp_queue, names.notifier_queue):
                channel.queue_delete(queue)
            channel.exchange_delete(names.exchange)
            connection.close()

    def drain(self, queue: str) -> list[tuple[pika.spec.Basic.GetOk, pika.BasicProperties, dict[str, Any]]]:
        """(method, properties, decoded body) of every message waiting in ``queue``, in queue order, acknowledged."""
        import orjson
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            channel = connection.channel()
            got: list[tuple[pika.spec.Basic.GetOk, pika.BasicProperties, dict[str, Any]]] = []
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return got
                got.append((method, properties, orjson.loads(body)))
        finally:
            connection.close()


def publish_outbox(settings: Settings, engine: Engine) -> int:
    """Publish every pending outbox command as `relance worker relay` does, until none is left; how many went out."""
    from services.relay.worker import Relay

    relay = Relay(settings, engine, threading.Event())
    with relay.connected():
        while relay.publish_round():
            pass
    return relay.totals.published


@dataclass
class PrivateRabbitMQ:
    """A RabbitMQ node of one test alone (its own node name, ports and data directory), which it may kill and start
    again on the same data: what a broker restart does to durable queues and persistent messages."""

    server: Path  # the rabbitmq-server script
    base_dir: Path
    port: int
    dist_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _env(self) -> dict[str, str]:
        config = self.base_dir / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        plugins = self.base_dir / "enabled_plugins"
        plugins.write_text("[].\n")
        return {
            **os.environ,
            "HOME": str(self.base_dir),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"relance-t-{RUN_ID}-{self.port}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_MNESIA_BASE": str(self.base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base_dir / "log"),
            "RABBITMQ_PID_FILE": str(self.base_dir / "pid"),
        }

    def start(self, timeout: float = 90.0) -> None:
        """Start the node and wait until it accepts an AMQP connection."""
        import time

        import pika

        with (self.base_dir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.server)], env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.base_dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the private RabbitMQ exited with {self.process.returncode}:\n{tail}")
            if answers("127.0.0.1", self.port):
                try:
                    pika.BlockingConnection(pika.URLParameters(self.url)).close()
                    return
                except pika.exceptions.AMQPError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"the private RabbitMQ did not answer on port {self.port} in {timeout:.0f} s")

    def kill(self) -> None:
        """Kill the node at once (SIGKILL to its process group), as a crash would; its data directory stays."""
        import signal
        import time

        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        deadline = time.monotonic() + 30
        while answers("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.1)  # the node's processes are gone once nothing listens on its port any more
