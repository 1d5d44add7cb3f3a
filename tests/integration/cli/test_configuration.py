"""``relance`` as an operator meets it: configuration mistakes are one clear line and exit 78, never a default.

Every command runs as a separate process, from a folder of its own (so a stray ``./relance.db`` would show), against
the real PostgreSQL server; workers are stopped with SIGTERM.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.servers import RUN_ID, AmqpNames
from tests.smtp_server import free_port

pytestmark = pytest.mark.integration

EX_CONFIG, EX_UNAVAILABLE = 78, 69


def _environment(**settings: str) -> dict[str, str]:
    clean = {key: value for key, value in os.environ.items() if not key.upper().startswith("RELANCE_")}
    return {**clean, "RELANCE_LOG_FORMAT": "json", **settings}


def relance(cwd: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "services.cli", *args]
    return subprocess.run(command, cwd=cwd, env=_environment(**settings), capture_output=True, text=True, timeout=120)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a refused command prints: no traceback, nothing else."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("relance: "), done.stderr
    assert "Traceback" not in done.stderr and not done.stdout, done
    return lines[0]


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what in self.output():
                return
            if self.process.poll() is not None:
                pytest.fail(f"the worker exited {self.process.returncode} before {what!r}:\n{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"no {what!r} after {timeout} s:\n{self.output()}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[object]:
    started: list[Worker] = []

    def start(kind: str, **settings: str) -> Worker:
        log = tmp_path / f"{kind}-{len(started)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker", kind],
            cwd=tmp_path,
            env=_environment(RELANCE_RETRY_MAX_SECONDS="0.5", **settings),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        started.append(Worker(process, log))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)


def _with(url: str, **parts: object) -> str:
    return make_url(url).set(**parts).render_as_string(hide_password=False)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- unknown variables
def test_a_mistyped_variable_stops_the_command_with_the_name_meant(tmp_path: Path, pg_url: str) -> None:
    # Given the database URL set under a misspelt name
    done = relance(tmp_path, "verify", RELANCE_DATABSE_URL=pg_url)
    # Then nothing runs: exit 78, one line naming the right variable, and no SQLite file created instead
    assert done.returncode == EX_CONFIG
    assert "RELANCE_DATABSE_URL: unknown setting (did you mean RELANCE_DATABASE_URL?)" in done.stderr
    assert "Traceback" not in done.stderr and not list(tmp_path.glob("*.db"))


# ------------------------------------------------------------------------------------- no default database
@pytest.mark.parametrize(
    "command",
    [
        ["verify"],
        ["db", "upgrade"],
        ["health"],
        ["worker", "escalation"],
        ["agenda", "--tenant", "t", "--date", "2026-12-01"],
    ],
)
def test_a_command_on_the_ledger_needs_an_explicit_database(tmp_path: Path, command: list[str]) -> None:
    # Given no database setting at all
    done = relance(tmp_path, *command)
    # Then it says what to set, and does not create ./relance.db
    assert done.returncode == EX_CONFIG
    assert "RELANCE_DATABASE_URL is not set" in one_line_error(done)
    assert not list(tmp_path.glob("*.db"))


# ------------------------------------------------------------------------------ a database that refuses us
def test_a_role_that_does_not_exist_is_a_configuration_error_naming_the_url_without_its_password(
    tmp_path: Path, pg_url: str
) -> None:
    url = _with(pg_url, username="nobody_here", password="s3cret-pw")
    done = relance(tmp_path, "verify", "--database-url", url)
    assert done.returncode == EX_CONFIG
    line = one_line_error(done)
    assert "refused the connection: role nobody_here does not exist; fix RELANCE_DATABASE_URL" in line
    assert "nobody_here:***@" in line and "s3cret-pw" not in line


@pytest.fixture
def refusing_roles(pg_url: str) -> Iterator[dict[str, str]]:
    """On the shared server: a role that may not log in, and one without the CONNECT privilege on the test's database.

    Roles are server-wide: their names carry the run's id, and they are dropped afterwards.
    """
    database = make_url(pg_url).database
    roles = {"nologin": f"relance_t_{RUN_ID}_nologin", "noconnect": f"relance_t_{RUN_ID}_noconnect"}
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{roles["nologin"]}" NOLOGIN'))
        conn.execute(text(f'CREATE ROLE "{roles["noconnect"]}" LOGIN'))
        conn.execute(text(f'REVOKE CONNECT ON DATABASE "{database}" FROM PUBLIC'))
    yield {kind: _with(pg_url, username=name) for kind, name in roles.items()}
    with admin.connect() as conn:
        for name in roles.values():
            conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.mark.parametrize(
    ("kind", "reason"), [("nologin", "may not log in"), ("noconnect", "the role may not connect to database")]
)
def test_a_role_the_server_turns_away_is_a_configuration_error(
    tmp_path: Path, refusing_roles: dict[str, str], kind: str, reason: str
) -> None:
    done = relance(tmp_path, "db", "upgrade", "--database-url", refusing_roles[kind])
    assert done.returncode == EX_CONFIG
    assert reason in one_line_error(done)


@pytest.fixture
def password_server() -> Iterator[str]:
    """A PostgreSQL server of this test alone that checks passwords (the shared one trusts 127.0.0.1).

    Its URL, with the right password; run as the postgres system user when the tests run as root, as initdb wants.
    """
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None)
    assert found, "initdb not found: install PostgreSQL's server binaries (.ci/run does)"
    bin_dir = Path(found).parent
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="relance-pg-password-"))
    (folder / "password").write_text("right-password\n", encoding="utf-8")
    if as_owner:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "password", "postgres")
    port = free_port()
    initdb = [str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", "postgres", "-A", "scram-sha-256"]
    subprocess.run([*as_owner, *initdb, f"--pwfile={folder / 'password'}"], check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    pg_ctl = [*as_owner, str(bin_dir / "pg_ctl"), "-D", str(folder / "data")]
    subprocess.run([*pg_ctl, "-o", options, "-l", str(folder / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres:right-password@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_wrong_password_is_a_configuration_error_that_does_not_show_the_password(
    tmp_path: Path, password_server: str, start_worker: object
) -> None:
    # Given the right password works
    assert relance(tmp_path, "db", "upgrade", "--database-url", password_server).returncode == 0
    wrong = _with(password_server, password="wrong-guess")
    # When a command, and a starting worker, use a wrong one
    done = relance(tmp_path, "verify", "--database-url", wrong)
    worker = start_worker("escalation", RELANCE_DATABASE_URL=wrong)  # type: ignore[operator]
    # Then both stop at once with the same one-line reason, password hidden
    assert done.returncode == EX_CONFIG
    line = one_line_error(done)
    assert "refused the connection: wrong password for role postgres" in line and "wrong-guess" not in line
    assert worker.process.wait(30) == EX_CONFIG
    assert "wrong password for role postgres" in worker.output() and "wrong-guess" not in worker.output()


def test_a_database_that_does_not_exist_stops_a_worker_at_once_instead_of_retrying(
    tmp_path: Path, pg_url: str, start_worker: object
) -> None:
    # Given a worker pointed at a database name that does not exist
    worker = start_worker("escalation", RELANCE_DATABASE_URL=_with(pg_url, database="relance_no_such_db"))  # type: ignore[operator]
    # Then it exits 78 within seconds, saying so, rather than waiting for ever
    assert worker.process.wait(30) == EX_CONFIG
    assert "refused the connection: database relance_no_such_db does not exist" in worker.output()
    assert "Traceback" not in worker.output()


def test_a_server_that_is_down_at_start_up_is_waited_for_not_a_configuration_error(
    tmp_path: Path, start_worker: object
) -> None:
    # Given a worker whose database server does not answer (yet)
    worker = start_worker("escalation", RELANCE_DATABASE_URL="postgresql://relance@127.0.0.1:9/relance")  # type: ignore[operator]
    # Then it keeps retrying, and stops cleanly when asked
    worker.wait_for("database.unavailable")
    time.sleep(1.5)
    assert worker.process.poll() is None, worker.output()
    assert worker.stop() == 0


def test_a_command_on_a_server_that_does_not_answer_says_so_in_one_line(tmp_path: Path) -> None:
    done = relance(tmp_path, "verify", "--database-url", "postgresql://relance@127.0.0.1:9/relance")
    assert done.returncode == EX_UNAVAILABLE
    assert "cannot use the database postgresql+psycopg://relance@127.0.0.1:9/relance" in one_line_error(done)


# ---------------------------------------------------------------------------------------------- URL schemes
@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_plain_postgres_urls_work(tmp_path: Path, pg_url: str, scheme: str) -> None:
    url = scheme + "://" + pg_url.split("://", 1)[1]
    done = relance(tmp_path, "health", "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert "healthy" in done.stdout


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg", "pg8000"])
def test_a_driver_relance_does_not_ship_is_refused_before_connecting(tmp_path: Path, pg_url: str, driver: str) -> None:
    done = relance(tmp_path, "db", "upgrade", RELANCE_DATABASE_URL=f"postgresql+{driver}://" + pg_url.split("://")[1])
    assert done.returncode == EX_CONFIG
    assert f"relance ships the psycopg 3 driver, not {driver}" in done.stderr and "Traceback" not in done.stderr


# --------------------------------------------------------------------------------------- application_name
def test_each_worker_names_itself_in_pg_stat_activity(
    tmp_path: Path, pg_url: str, start_worker: object, amqp_url: str, amqp_names: AmqpNames
) -> None:
    # Given an escalation worker and a relay running on the database
    workers = [
        start_worker(kind, RELANCE_DATABASE_URL=pg_url, RELANCE_AMQP_URL=amqp_url, **amqp_names.env())  # type: ignore[operator]
        for kind in ("escalation", "relay")
    ]
    for worker, started in zip(workers, ("escalation.worker_started", "relay.started"), strict=True):
        worker.wait_for(started)
    # When an operator looks at the server's sessions
    engine = create_engine(pg_url)
    deadline, names = time.monotonic() + 20, set[str]()
    with engine.connect() as conn:
        while time.monotonic() < deadline and not {"relance-escalation", "relance-relay"} <= names:
            database = make_url(pg_url).database
            rows = conn.execute(
                text("SELECT application_name FROM pg_stat_activity WHERE datname = :d"), {"d": database}
            )
            names = {row.application_name for row in rows}
            time.sleep(0.2)
    engine.dispose()
    # Then each process is named after its role
    assert {"relance-escalation", "relance-relay"} <= names
    assert all(worker.stop() == 0 for worker in workers)


# ------------------------------------------------------------------------------------------ secrets in files
def test_the_database_url_can_come_from_a_mounted_secret(tmp_path: Path, pg_url: str) -> None:
    secret = tmp_path / "database-url"
    secret.write_text(pg_url + "\n", encoding="utf-8")
    done = relance(tmp_path, "health", RELANCE_DATABASE_URL_FILE=str(secret))
    assert done.returncode == 0, done.stderr


def test_a_secret_given_twice_or_unreadable_is_refused(tmp_path: Path, pg_url: str) -> None:
    secret = tmp_path / "database-url"
    secret.write_text(pg_url, encoding="utf-8")
    twice = relance(tmp_path, "health", RELANCE_DATABASE_URL=pg_url, RELANCE_DATABASE_URL_FILE=str(secret))
    assert twice.returncode == EX_CONFIG
    assert "RELANCE_DATABASE_URL and RELANCE_DATABASE_URL_FILE are both set" in one_line_error(twice)
    missing = relance(tmp_path, "health", RELANCE_DATABASE_URL_FILE=str(tmp_path / "nothing"))
    assert missing.returncode == EX_CONFIG
    assert f"RELANCE_DATABASE_URL_FILE: cannot read {tmp_path / 'nothing'}" in one_line_error(missing)


# ------------------------------------------------------------------------------------- the placeholder sender
def test_the_notifier_refuses_to_sign_with_the_placeholder_sender(tmp_path: Path, pg_url: str) -> None:
    done = relance(tmp_path, "worker", "notifier", RELANCE_DATABASE_URL=pg_url)
    assert done.returncode == EX_CONFIG
    line = one_line_error(done)
    assert "still has the placeholder company, iban and signatory" in line and "Point RELANCE_SENDER_FILE" in line


def test_the_notifier_starts_with_the_placeholder_only_when_explicitly_allowed(
    pg_url: str, start_worker: object, amqp_url: str, amqp_names: AmqpNames
) -> None:
    settings = {"RELANCE_DATABASE_URL": pg_url, "RELANCE_AMQP_URL": amqp_url, **amqp_names.env()}
    worker = start_worker("notifier", RELANCE_ALLOW_PLACEHOLDER_SENDER="true", **settings)  # type: ignore[operator]
    worker.wait_for("notifier.worker_started")
    assert worker.stop() == 0


def test_every_command_has_a_process_name_postgresql_can_show() -> None:
    import argparse

    from services.cli.app import build_parser

    # Given every sub-command of relance
    commands, pending = [], [build_parser()]
    while pending:
        for action in pending.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    pending.append(child)
                    if child.get_default("handler") is not None:
                        commands.append(child)
    # When each is named for pg_stat_activity
    names = {child.prog: child.get_default("process") for child in commands}
    # Then workers are named after their role and the other commands after themselves, within PostgreSQL's 63 bytes
    assert names["relance worker notifier"] == "relance-notifier"
    assert names["relance worker ingest"] == "relance-ingest"
    assert names["relance verify"] == "relance-cli-verify"
    assert names["relance db upgrade"] == "relance-cli-db-upgrade"
    assert all(len(name) <= 63 and name.startswith("relance-") for name in names.values()), names
