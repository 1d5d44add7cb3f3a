"""The workspace's users on real PostgreSQL, used through the runtime role as ``relance workspace`` uses it: the
store, the sign-in over HTTP and ``relance user`` work with its grants, and the grants allow nothing more."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from services.cli import main
from services.workspace.users import UserStore
from shared.ledger.db import make_engine
from shared.ledger.migrate import current
from tests.servers import PgDatabase
from tests.unit.workspace.authapp import PASSWORD, Clock, csrf_of, make_app, sign_in

pytestmark = pytest.mark.integration

ANA = "ana@example.com"
TABLES = {"users", "user_roles", "sessions", "api_tokens", "login_failures"}


@pytest.fixture
def runtime(pg_database: PgDatabase) -> Iterator[Engine]:
    engine = make_engine(pg_database.runtime_url)
    yield engine
    engine.dispose()


def test_the_migration_makes_the_tables_on_both_databases_and_goes_down_and_up_again(
    pg_database: PgDatabase, sqlite_url: str
) -> None:
    from alembic import command

    from shared.ledger.migrate import alembic_config

    for url in (pg_database.owner_url, sqlite_url):
        assert current(url) is not None
        engine = make_engine(url)
        try:
            assert set(inspect(engine).get_table_names()) >= TABLES
        finally:
            engine.dispose()
    # Later revisions keep evidence and refuse to go down, so the round trip starts from a database at 0008.
    fresh = sqlite_url.replace(".db", "-0008.db") if sqlite_url.endswith(".db") else None
    assert fresh is not None, sqlite_url
    command.upgrade(alembic_config(fresh), "0008")
    assert current(fresh) == "0008"
    command.downgrade(alembic_config(fresh), "0007")
    assert current(fresh) == "0007"
    command.upgrade(alembic_config(fresh), "0008")
    assert current(fresh) == "0008"


def test_the_store_works_through_the_runtime_role(runtime: Engine) -> None:
    clock = Clock()
    store = UserStore(runtime, now=clock)
    user = store.add(ANA, "Ana Martin", password=PASSWORD)
    store.grant(ANA, "acme-fr", "collector")
    store.revoke(ANA, "acme-fr", "collector")
    store.grant(ANA, "acme-fr", "collector")
    assert store.authenticate(ANA, PASSWORD) is not None
    store.set_password(ANA, "another long passphrase")
    token, _ = store.open_session(user.id)
    assert store.session(token) is not None
    clock.advance(hours=1)
    assert store.session(token) is not None  # the idle timeout moved: an UPDATE the role may make
    api = store.add_token(ANA, "erp")
    assert store.token_user(api) is not None
    store.record_failure(ANA, "127.0.0.1")
    assert store.failures(ANA, "127.0.0.1", timedelta(minutes=15)).by_login == 1
    store.clear_failures(ANA)
    store.disable(ANA)
    assert store.session(token) is None and store.token_user(api) is None
    assert [u.login for u in store.all()] == [ANA]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM users",
        "DELETE FROM user_roles",
        "DELETE FROM api_tokens",
        "UPDATE login_failures SET login = 'x'",
        "TRUNCATE sessions",
        "DROP TABLE users",
    ],
)
def test_the_runtime_role_cannot_erase_who_held_what(runtime: Engine, statement: str) -> None:
    with pytest.raises(DBAPIError, match=r"permission denied|must be owner"), runtime.begin() as conn:
        conn.execute(text(statement))


def test_signing_in_over_http_on_postgresql(runtime: Engine) -> None:
    clock = Clock()
    UserStore(runtime, now=clock).add(ANA, "Ana", password=PASSWORD)
    UserStore(runtime, now=clock).grant(ANA, "acme-fr", "credit_manager")
    client = TestClient(make_app(runtime, clock), base_url="http://testserver")
    for _ in range(5):
        assert sign_in(client, ANA, "a wrong password").status_code == 401  # type: ignore[attr-defined]
    assert sign_in(client, ANA).status_code == 429  # type: ignore[attr-defined]
    clock.advance(minutes=16)
    assert sign_in(client, ANA).status_code == 303  # type: ignore[attr-defined]
    assert client.get("/").json() == {"login": ANA, "tenants": ["acme-fr"]}
    token = csrf_of(client.get("/form").text)
    assert client.post("/form", data={"csrf_token": token}).json() == {"posted_by": ANA}
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


def test_relance_user_runs_as_the_runtime_role(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_database.runtime_url
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    argv = ["user", "add", ANA, "--name", "Ana", "--tenant", "acme-fr", "--role", "auditor", "--password-stdin"]
    assert main([*argv, "--database-url", url]) == 0
    assert main(["user", "token", "add", ANA, "--label", "ci", "--database-url", url]) == 0
    assert main(["user", "disable", ANA, "--database-url", url]) == 0
    assert main(["user", "list", "--database-url", url]) == 0
    assert "disabled" in capsys.readouterr().out
