"""The runtime role on real PostgreSQL: it reads and appends, and cannot change the log or switch its protection off.

Roles are cluster-wide: every role here has a name of this run (``relance_t_<run>_…``) and is dropped afterwards.
The last test runs existing worker tests (ingest, escalation, relay, notifier) with every database used through the
runtime role, in a pytest of its own, as production runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from services.cli import main
from shared.ledger.db import make_engine
from shared.ledger.roles import RUNTIME_GRANTS, RoleError, grant_runtime, runtime_grants
from shared.ledger.store import Ledger
from tests.factories import CUSTOMER, TENANT, incoming, invoice, payment
from tests.servers import RUN_ID, RUNTIME_ROLE, PgDatabase

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def run(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def recorded(pg_database: PgDatabase) -> Iterator[Ledger]:
    """A ledger used through the runtime role, with a few events it appended itself."""
    engine = make_engine(pg_database.runtime_url)
    ledger = Ledger(engine)
    outcomes = ledger.record([incoming(invoice("INV-1", "100.00")), incoming(payment("P1", "40.00"))])
    assert [o.status for o in outcomes] == ["applied", "applied"]
    yield ledger
    engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = data",
        "DELETE FROM events",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER events_append_only",
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "DROP TRIGGER events_append_only ON events",
        "DROP TABLE events",
        "ALTER TABLE events OWNER TO CURRENT_USER",
        "SET session_replication_role = replica",  # would silence every trigger
        "UPDATE event_fingerprints SET fingerprint = fingerprint",
        "DELETE FROM sent_messages",
        "TRUNCATE customer_state",
        "ALTER TABLE sent_messages DISABLE TRIGGER sent_messages_append_only",
        "CREATE TABLE events_copy (LIKE events)",
    ],
)
def test_the_runtime_role_cannot_change_the_log_nor_switch_its_protection_off(
    pg_database: PgDatabase, recorded: Ledger, statement: str
) -> None:
    # Given a log the runtime role appended to
    before = recorded.read_stream(TENANT, CUSTOMER)
    # When that role tries to change, remove or unprotect it
    with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
        run(pg_database.runtime_url, statement)
    # Then the database refused it on privileges, and the log is untouched
    assert recorded.read_stream(TENANT, CUSTOMER) == before
    assert recorded.verify().ok


def test_the_runtime_role_owns_nothing_and_holds_exactly_the_map(pg_database: PgDatabase) -> None:
    engine = create_engine(pg_database.owner_url)
    with engine.connect() as conn:
        owned = conn.execute(text("SELECT count(*) FROM pg_tables WHERE tableowner = :r"), {"r": RUNTIME_ROLE})
        assert owned.scalar_one() == 0
        held = conn.execute(
            text(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = :r AND table_schema = 'public'"
            ),
            {"r": RUNTIME_ROLE},
        ).all()
    engine.dispose()
    granted: dict[str, set[str]] = {}
    for table, privilege in held:
        granted.setdefault(table, set()).add(privilege)
    assert granted == {table: set(privileges) for table, privileges in RUNTIME_GRANTS.items()}


def test_every_table_the_migrations_create_has_its_line_in_the_map(pg_database: PgDatabase) -> None:
    # A table a migration adds without runtime grants would be readable only, and its worker would fail
    assert grant_runtime(pg_database.owner_url, RUNTIME_ROLE) == []


def test_upgrading_again_takes_back_a_privilege_granted_by_hand(pg_database: PgDatabase, recorded: Ledger) -> None:
    # Given someone granted the runtime role more than it needs
    run(pg_database.owner_url, f'GRANT UPDATE, DELETE ON events TO "{RUNTIME_ROLE}"')
    run(pg_database.runtime_url, "UPDATE events SET event_type = event_type WHERE false")  # it could, for now
    # When the grants are refreshed, as every `relance db upgrade --runtime-role` does
    grant_runtime(pg_database.owner_url, RUNTIME_ROLE)
    # Then the extra privilege is gone and the role still appends
    with pytest.raises(DBAPIError, match="permission denied"):
        run(pg_database.runtime_url, "DELETE FROM events WHERE false")
    assert recorded.record([incoming(invoice("INV-2", "5.00"))])[0].status == "applied"


def test_a_role_that_would_keep_too_much_power_is_refused(pg_database: PgDatabase) -> None:
    owner = make_url(pg_database.owner_url).username
    with pytest.raises(RoleError, match="must not be the migration role"):
        grant_runtime(pg_database.owner_url, str(owner))
    with pytest.raises(RoleError, match="not a plain role name"):
        grant_runtime(pg_database.owner_url, 'app"; DROP TABLE events; --')


@pytest.fixture
def new_role(postgres_admin_url: str) -> Iterator[str]:
    name = f"relance_t_{RUN_ID}_cli"
    yield name
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        databases = conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": f"%{RUN_ID}%"})
        for database in databases.scalars().all():
            engine = create_engine(make_url(postgres_admin_url).set(database=database))
            with engine.begin() as db:
                if db.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": name}).first():
                    db.execute(text(f'DROP OWNED BY "{name}"'))
            engine.dispose()
        conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
    admin.dispose()


def test_relance_db_upgrade_creates_the_runtime_role_with_its_password_and_grants_it(
    pg_database: PgDatabase, new_role: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a role name and its password in the settings
    monkeypatch.setenv("RELANCE_RUNTIME_ROLE_PASSWORD", "s3cret-for-the-workers")
    # When the schema is upgraded with --runtime-role
    assert main(["db", "upgrade", "--database-url", pg_database.owner_url, "--runtime-role", new_role]) == 0
    # Then the role exists, logs in with that password, and holds the runtime grants
    assert f"runtime role {new_role}" in capsys.readouterr().out
    engine = create_engine(pg_database.owner_url)
    with engine.connect() as conn:
        login, superuser, password = conn.execute(
            text("SELECT rolcanlogin, rolsuper, rolpassword FROM pg_authid WHERE rolname = :r"), {"r": new_role}
        ).one()
        may_update = conn.execute(text("SELECT has_table_privilege(:r, 'events', 'UPDATE')"), {"r": new_role})
        assert may_update.scalar_one() is False
        may_insert = conn.execute(text("SELECT has_table_privilege(:r, 'events', 'INSERT')"), {"r": new_role})
        assert may_insert.scalar_one() is True
    engine.dispose()
    assert login and not superuser and password
    # and upgrading again (the role exists now) refreshes the grants without complaint
    assert main(["db", "upgrade", "--database-url", pg_database.owner_url, "--runtime-role", new_role]) == 0


def test_on_sqlite_there_are_no_roles_and_upgrade_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert main(["db", "upgrade", "--database-url", url, "--runtime-role", "relance_app"]) == 0
    assert "SQLite has no roles" in capsys.readouterr().err


def test_the_grants_in_the_readme_are_the_ones_relance_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for statement in runtime_grants("relance_app", "relance"):
        assert f"{statement};" in readme, statement


def test_the_workers_run_as_the_runtime_role() -> None:
    # Given every PostgreSQL database of a pytest run used through the runtime role, as the workers use it
    tests = [
        "tests/integration/ingest/test_worker.py::"
        "test_valid_events_land_once_and_every_invalid_message_is_dead_lettered_with_its_reason",
        "tests/integration/escalation/test_worker.py::test_relance_clock_tick_runs_the_real_engine[postgresql]",
        "tests/integration/escalation/test_worker.py::test_the_worker_process_starts_from_settings_and_stops_on_request",
        "tests/integration/escalation/test_worker.py::"
        "test_a_timer_of_a_worker_that_died_fires_again_after_its_lease[postgresql]",
        "tests/integration/relay/test_worker.py::test_the_relay_publishes_exactly_the_pending_commands_with_their_ids",
        "tests/integration/notifier/test_worker.py::"
        "test_reminders_of_several_customers_arrive_once_each_over_starttls_with_auth_and_match_the_evidence",
        "tests/integration/webhook/test_worker.py",
        "tests/e2e/test_collections_pipeline.py",  # ERP → ingest → clock tick → relay → notifier → SMTP
    ]
    env = {**os.environ, "RELANCE_TEST_DATABASE_ROLE": "runtime"}
    # When those worker tests run, Then they pass: the runtime role has every privilege the workers need
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
