"""Real servers for the tests, found the same way everywhere, never skipped.

PostgreSQL: ``RELANCE_TEST_DATABASE_URL`` if set, else the local server on 127.0.0.1:5432 if it answers, else a
testcontainers PostgreSQL if a Docker engine answers, else the run fails saying how to provide one.
RabbitMQ: likewise with ``RELANCE_TEST_AMQP_URL`` and 127.0.0.1:5672.

Each run creates its own databases (``relance_t_<run>_<n>``) and its own exchange and queue names
(``relance.t.<run>.<n>.*``) and removes them at the end, so parallel runs and tests never see each other's data.
"""

from __future__ import annotations

import itertools
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from shared.config import Settings

pytest_plugins = ["tests.smtp_server"]  # the `cert` and `smtp` fixtures: a real SMTP server on loopback

RUN_ID = uuid.uuid4().hex[:8]
_counter = itertools.count(1)

LOCAL_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _no_server(what: str, variable: str, port: int) -> None:
    pytest.fail(
        f"no {what} for the integration tests: set {variable} to a server URL, start {what} on "
        f"127.0.0.1:{port}, or run a Docker engine so testcontainers can start one. "
        "These tests are never skipped.",
        pytrace=False,
    )


# ---------------------------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL server where the tests may create and drop databases."""
    explicit = os.environ.get("RELANCE_TEST_DATABASE_URL")
    if explicit:
        yield explicit.replace("postgresql://", "postgresql+psycopg://", 1)
        return
    if _answers("127.0.0.1", 5432):
        yield LOCAL_PG
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
            yield container.get_connection_url()
        return
    _no_server("PostgreSQL", "RELANCE_TEST_DATABASE_URL", 5432)


# PostgreSQL roles are cluster-wide: the runtime role of this run has a name of its own, dropped at the end.
RUNTIME_ROLE = f"relance_t_{RUN_ID}_app"
RUNTIME_PASSWORD = uuid.uuid4().hex
# RELANCE_TEST_DATABASE_ROLE=runtime: every PostgreSQL database a test gets is used through the runtime role (what the
# workers run as in production), so running a suite that way shows what that role lacks.
AS_RUNTIME_ROLE = os.environ.get("RELANCE_TEST_DATABASE_ROLE") == "runtime"


@dataclass(frozen=True)
class PgDatabase:
    owner_url: str  # the migration role's URL (the tests' admin)
    runtime_url: str  # the same database through the runtime role (granted only if asked for)


@pytest.fixture(scope="session")
def make_pg_databases(postgres_admin_url: str) -> Iterator[Callable[[bool], PgDatabase]]:
    """Factory: a new, migrated database of this run, and if asked this run's runtime role granted on it; all are
    dropped when the session ends, and the role with them. (Granting creates the role: a server that lets the tests
    create databases but not roles still runs every test that does not ask for it.)"""
    from shared.ledger.migrate import upgrade
    from shared.ledger.roles import grant_runtime

    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def factory(runtime_role: bool) -> PgDatabase:
        name = f"relance_t_{RUN_ID}_{next(_counter)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        url = make_url(postgres_admin_url).set(database=name)
        owner_url = url.render_as_string(hide_password=False)
        upgrade(owner_url)
        if runtime_role:
            grant_runtime(owner_url, RUNTIME_ROLE, RUNTIME_PASSWORD)
        runtime_url = url.set(username=RUNTIME_ROLE, password=RUNTIME_PASSWORD).render_as_string(hide_password=False)
        return PgDatabase(owner_url, runtime_url)

    yield factory
    with admin.connect() as conn:
        for name in created:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'DROP ROLE IF EXISTS "{RUNTIME_ROLE}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def make_pg_database(make_pg_databases: Callable[[bool], PgDatabase]) -> Callable[[], str]:
    """Factory: a new, migrated database of this run (used through the runtime role if AS_RUNTIME_ROLE)."""

    def factory() -> str:
        database = make_pg_databases(AS_RUNTIME_ROLE)
        return database.runtime_url if AS_RUNTIME_ROLE else database.owner_url

    return factory


@pytest.fixture
def pg_database(make_pg_databases: Callable[[bool], PgDatabase]) -> PgDatabase:
    """A fresh, migrated PostgreSQL database for one test, with both its owner's and the runtime role's URL."""
    return make_pg_databases(True)


@pytest.fixture
def pg_url(make_pg_database: Callable[[], str]) -> str:
    """A fresh, migrated PostgreSQL database for one test."""
    return make_pg_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database for one test."""
    from shared.ledger.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """The storage contract runs on both engines: a fresh migrated database of each kind."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


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
        import subprocess

        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run([*prefix, *args], check=check, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = self.data_dir / "server.log"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(log), "-o", options, "-w", "start")

    def stop(self, *, check: bool = True) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=check)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A throw-away PostgreSQL server (initdb + pg_ctl on a free port) for tests that stop the database.

    Never the shared server: stopping that one would break every other test running on the machine. The data
    directory lives in a temporary directory the server's OS user can enter (pytest's own is private to root).
    """
    import shutil
    import tempfile

    found = shutil.which("pg_ctl") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))), None)
    if found is None:
        pytest.fail("these tests need PostgreSQL's server binaries (initdb, pg_ctl) on PATH", pytrace=False)
    bin_dir = Path(found).resolve().parent
    user = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix=f"relance-pg-{RUN_ID}-"))
    data_dir = base / "data"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if user:
        shutil.chown(base, user)
    server = PrivatePostgres(bin_dir, data_dir, port, user)
    server._run(str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "--no-sync")
    server.start()
    try:
        yield server
    finally:
        server.stop(check=False)
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- RabbitMQ
@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    explicit = os.environ.get("RELANCE_TEST_AMQP_URL")
    if explicit:
        yield explicit
        return
    if _answers("127.0.0.1", 5672):
        yield LOCAL_AMQP
        return
    if _docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-alpine") as container:
            params = container.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}/%2F"
        return
    _no_server("RabbitMQ", "RELANCE_TEST_AMQP_URL", 5672)


@dataclass(frozen=True)
class AmqpNames:
    exchange: str
    queue: str
    dead_letter_queue: str
    commands_exchange: str
    notifier_queue: str

    def settings(self) -> dict[str, Any]:
        """Keyword overrides for :func:`shared.config.load_settings`."""
        return {
            "events_exchange": self.exchange,
            "ingest_queue": self.queue,
            "dead_letter_queue": self.dead_letter_queue,
            "commands_exchange": self.commands_exchange,
            "notifier_queue": self.notifier_queue,
        }

    def env(self) -> dict[str, str]:
        """The same names as ``RELANCE_*`` environment variables, for a worker process."""
        return {f"RELANCE_{key.upper()}": value for key, value in self.settings().items()}


def publish_outbox(settings: Settings, engine: Engine) -> int:
    """Publish every pending outbox command as `relance worker relay` does, until none is left; how many went out."""
    import threading

    from services.relay.worker import Relay

    relay = Relay(settings, engine, threading.Event())
    with relay.connected():
        while relay.publish_round():
            pass
    return relay.totals.published


@pytest.fixture
def amqp_names(amqp_url: str) -> Iterator[AmqpNames]:
    """Exchange and queue names of this test alone; deleted afterwards."""
    import pika

    base = f"relance.t.{RUN_ID}.{next(_counter)}"
    names = AmqpNames(
        exchange=f"{base}.events",
        queue=f"{base}.ingest",
        dead_letter_queue=f"{base}.dead",
        commands_exchange=f"{base}.commands",
        notifier_queue=f"{base}.notifier",
    )
    yield names
    notifier = names.notifier_queue
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in (names.queue, names.dead_letter_queue, notifier, f"{notifier}.retry", f"{notifier}.dead"):
            channel.queue_delete(queue)
        for exchange in (names.exchange, names.commands_exchange):
            channel.exchange_delete(exchange)
    finally:
        connection.close()
