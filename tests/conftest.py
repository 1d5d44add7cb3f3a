"""The fixtures that hand out the run's real servers (found and named as :mod:`tests.servers` says), never skipped.

Every fixture here that reaches PostgreSQL or RabbitMQ fails the requesting test unless it is marked ``integration``
or ``e2e``, so ``make unit`` can deselect those and run with no server. Each run creates its own databases, roles,
exchanges and queues and removes them at the end. Tests import what they need from :mod:`tests.servers`, never from
here.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.servers import (
    AS_RUNTIME_ROLE,
    LOCAL_AMQP,
    LOCAL_PG,
    QUEUE_TYPE,
    RUN_ID,
    RUNTIME_PASSWORD,
    RUNTIME_ROLE,
    SERVER_FIXTURES,
    AmqpNames,
    PgDatabase,
    PrivatePostgres,
    PrivateRabbitMQ,
    answers,
    docker_answers,
    next_number,
    no_server,
    require_server_marker,
)

# What relance declares in the tests, in process and in the worker processes they start with this environment (see
# tests.servers.QUEUE_TYPE); the tests of quorum queues say so in their settings.
os.environ.setdefault("RELANCE_QUEUE_TYPE", QUEUE_TYPE)

pytest_plugins = [
    "tests.smtp_server",  # the `cert` and `smtp` fixtures: a real SMTP server on loopback
    "pytester",  # tests/test_markers.py runs a few tests of its own to see the marker rule below hold
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests run last: Playwright's sync API keeps an event loop running in the main thread for the rest
    of the session once its first test started it, and every later ``asyncio.run`` (the notifier, the SMTP tests)
    would refuse to start under it."""
    browser = [item for item in items if "tests/browser/" in item.nodeid]
    if browser:
        items[:] = [item for item in items if "tests/browser/" not in item.nodeid] + browser


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture is set up, so that the message is the same whether or not a server answers: a test whose
    fixtures reach a server must be marked ``integration`` or ``e2e``. (The fixtures check it too, for a server asked
    for with ``request.getfixturevalue``.)"""
    for fixture, what in SERVER_FIXTURES.items():
        if fixture in getattr(item, "fixturenames", ()):
            require_server_marker(item, what, fixture)


# ---------------------------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server where the tests may create and drop databases (found once per run)."""
    explicit = os.environ.get("RELANCE_TEST_DATABASE_URL")
    if explicit:
        yield explicit.replace("postgresql://", "postgresql+psycopg://", 1)
        return
    if answers("127.0.0.1", 5432):
        yield LOCAL_PG
        return
    if docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
            yield container.get_connection_url()
        return
    no_server("PostgreSQL", "RELANCE_TEST_DATABASE_URL", 5432)


@pytest.fixture
def postgres_admin_url(request: pytest.FixtureRequest, postgres_server_url: str) -> str:
    """URL of a PostgreSQL server where the test may create and drop databases."""
    require_server_marker(request.node, "PostgreSQL", request.fixturename)
    return postgres_server_url


@pytest.fixture(scope="session")
def pg_databases(postgres_server_url: str) -> Iterator[Callable[[bool], PgDatabase]]:
    """Factory: a new, migrated database of this run, and if asked this run's runtime role granted on it; all are
    dropped when the session ends, and the role with them. (Granting creates the role: a server that lets the tests
    create databases but not roles still runs every test that does not ask for it.)"""
    from shared.ledger.migrate import upgrade
    from shared.ledger.roles import grant_runtime

    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def factory(runtime_role: bool) -> PgDatabase:
        name = f"relance_t_{RUN_ID}_{next_number()}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        url = make_url(postgres_server_url).set(database=name)
        owner_url = url.render_as_string(hide_password=False)
        upgrade(owner_url)
        if runtime_role:
            grant_runtime(owner_url, RUNTIME_ROLE, RUNTIME_PASSWORD)
        runtime_url = url.set(username=RUNTIME_ROLE, password=RUNTIME_PASSWORD).render_as_string(hide_password=False)
        return PgDatabase(owner_url, runtime_url)

    yield factory
    if created:  # nothing to drop, no connection: a run whose tests asked for no database touches no server
        with admin.connect() as conn:
            for name in created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{RUNTIME_ROLE}"'))
    admin.dispose()


@pytest.fixture
def make_pg_database(request: pytest.FixtureRequest, pg_databases: Callable[[bool], PgDatabase]) -> Callable[[], str]:
    """Factory: a new, migrated database of this run (used through the runtime role if AS_RUNTIME_ROLE)."""
    require_server_marker(request.node, "PostgreSQL", request.fixturename)

    def factory() -> str:
        database = pg_databases(AS_RUNTIME_ROLE)
        return database.runtime_url if AS_RUNTIME_ROLE else database.owner_url

    return factory


@pytest.fixture
def pg_database(request: pytest.FixtureRequest, pg_databases: Callable[[bool], PgDatabase]) -> PgDatabase:
    """A fresh, migrated PostgreSQL database for one test, with both its owner's and the runtime role's URL."""
    require_server_marker(request.node, "PostgreSQL", request.fixturename)
    return pg_databases(True)


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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """The storage contract runs on both engines: a fresh migrated database of each kind (the PostgreSQL one is an
    integration test wherever it is requested, so `make unit` runs the SQLite one alone)."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def private_postgres(request: pytest.FixtureRequest) -> Iterator[PrivatePostgres]:
    """A throw-away PostgreSQL server (initdb + pg_ctl on a free port) for tests that stop the database.

    Never the shared server: stopping that one would break every other test running on the machine. The data
    directory lives in a temporary directory the server's OS user can enter (pytest's own is private to root).
    """
    require_server_marker(request.node, "a PostgreSQL server of its own", request.fixturename)
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
    server.initdb()
    server.start()
    try:
        yield server
    finally:
        server.stop(check=False)
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- RabbitMQ
@pytest.fixture(scope="session")
def amqp_server_url() -> Iterator[str]:
    """URL of the run's RabbitMQ (found once per run)."""
    explicit = os.environ.get("RELANCE_TEST_AMQP_URL")
    if explicit:
        yield explicit
        return
    if answers("127.0.0.1", 5672):
        yield LOCAL_AMQP
        return
    if docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-alpine") as container:
            params = container.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}/%2F"
        return
    no_server("RabbitMQ", "RELANCE_TEST_AMQP_URL", 5672)


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest, amqp_server_url: str) -> str:
    """URL of the run's RabbitMQ, for one test."""
    require_server_marker(request.node, "RabbitMQ", request.fixturename)
    return amqp_server_url


@pytest.fixture
def amqp_names(amqp_url: str) -> Iterator[AmqpNames]:
    """Exchange and queue names of this test alone; deleted afterwards."""
    import pika

    names = AmqpNames.of_this_test()
    yield names
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in names.queues:
            channel.queue_delete(queue)
        for exchange in names.exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.fixture
def private_rabbitmq(request: pytest.FixtureRequest) -> Iterator[PrivateRabbitMQ]:
    """A throw-away RabbitMQ node (its own node name, free ports, data directory) for tests that restart the broker.

    Never the shared server: restarting that one would break every other test running on the machine.
    """
    require_server_marker(request.node, "a RabbitMQ server of its own", request.fixturename)
    found = next((p for p in (Path("/usr/lib/rabbitmq/bin/rabbitmq-server"),) if p.exists()), None)
    found = found or (Path(which) if (which := shutil.which("rabbitmq-server")) else None)
    if found is None:
        pytest.fail("these tests need RabbitMQ's server (rabbitmq-server) installed", pytrace=False)
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    base = Path(tempfile.mkdtemp(prefix=f"relance-rabbitmq-{RUN_ID}-"))
    server = PrivateRabbitMQ(found, base, ports[0], ports[1])
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(base, ignore_errors=True)
