"""The user store and ``relance user``: passwords, roles per tenant, tokens, disabling — on SQLite."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, select

from services.cli.app import main
from services.workspace.users import UserError, UserStore, digest
from shared.ledger.db import make_engine
from shared.ledger.schema import api_tokens, sessions, users
from tests.unit.workspace.authapp import PASSWORD, Clock

ANA = "ana@example.com"


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> UserStore:
    return UserStore(engine, now=Clock())


def test_a_user_signs_in_with_its_password_and_the_hash_is_argon2id(store: UserStore, engine: Engine) -> None:
    added = store.add(" Ana@Example.com ", "Ana Martin", password=PASSWORD)
    assert added.login == ANA and added.has_password and not added.disabled
    with engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert store.authenticate("ANA@example.com", PASSWORD) == store.get(ANA)
    assert store.authenticate(ANA, PASSWORD + "x") is None
    with pytest.raises(UserError, match="already exists"):
        store.add(ANA, "Ana again", password=PASSWORD)


def test_a_hash_made_with_older_parameters_is_replaced_at_the_next_sign_in(engine: Engine) -> None:
    old = UserStore(engine, hasher=PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))
    old.add(ANA, "Ana", password=PASSWORD)
    with engine.connect() as conn:
        before = conn.execute(select(users.c.password_hash)).scalar_one()
    current = UserStore(engine)
    assert current.authenticate(ANA, PASSWORD) is not None
    with engine.connect() as conn:
        after = conn.execute(select(users.c.password_hash)).scalar_one()
    assert after != before and not current.hasher.check_needs_rehash(after)
    assert current.authenticate(ANA, PASSWORD) is not None


def test_an_unknown_login_costs_about_as_much_as_a_wrong_password(store: UserStore) -> None:
    store.add(ANA, "Ana", password=PASSWORD)

    def cost(login: str) -> float:
        start = time.perf_counter()
        for _ in range(5):
            assert store.authenticate(login, "not the password") is None
        return time.perf_counter() - start

    known, unknown = cost(ANA), cost("nobody@example.com")
    assert unknown > known / 3  # an Argon2 verification each time, not a quick "no such user"


@pytest.mark.parametrize("password", ["short", "elevenchars", "aaaaaaaaaaaaaaaa", " padded password ", "x" * 1025])
def test_weak_passwords_are_refused(store: UserStore, password: str) -> None:
    with pytest.raises(UserError):
        store.add(ANA, "Ana", password=password)
    assert store.get(ANA) is None


@pytest.mark.parametrize("login", ["", "a b", "<script>", "ana'--", "ana\x00", "\u202eana", "x" * 255, "-ana"])
def test_logins_are_plain_names(store: UserStore, login: str) -> None:
    with pytest.raises(UserError, match="a login is"):
        store.add(login, "Someone", password=PASSWORD)
    assert store.authenticate(login, PASSWORD) is None


def test_display_names_hold_no_control_or_direction_characters(store: UserStore) -> None:
    for name in ("", "Ana\u202e", "Ana\nMartin", "x" * 201):
        with pytest.raises(UserError):
            store.add(ANA, name, password=PASSWORD)
    assert store.add(ANA, "Ana <Martin> {{ x }}", password=PASSWORD).display_name == "Ana <Martin> {{ x }}"


def test_roles_are_granted_and_revoked_per_tenant_and_revoking_keeps_the_row(store: UserStore, engine: Engine) -> None:
    store.add(ANA, "Ana", password=PASSWORD)
    assert store.grant(ANA, "acme-fr", "collector") is True
    assert store.grant(ANA, "acme-fr", "collector") is False
    store.grant(ANA, "acme-de", "auditor")
    assert store.get(ANA).roles == {"acme-de": {"auditor"}, "acme-fr": {"collector"}}  # type: ignore[union-attr]
    assert store.revoke(ANA, "acme-fr", "collector") is True
    assert store.revoke(ANA, "acme-fr", "collector") is False
    assert store.get(ANA).roles == {"acme-de": {"auditor"}}  # type: ignore[union-attr]
    assert store.grant(ANA, "acme-fr", "collector") is True  # granted again
    with pytest.raises(UserError, match="not a role"):
        store.grant(ANA, "acme-fr", "superuser")
    with pytest.raises(UserError, match="not a tenant"):
        store.grant(ANA, "ACME FR", "collector")
    with pytest.raises(UserError, match="no user"):
        store.grant("nobody", "acme-fr", "collector")


def test_disabling_revokes_every_session_and_token(store: UserStore, engine: Engine) -> None:
    user = store.add(ANA, "Ana", password=PASSWORD)
    token, _ = store.open_session(user.id)
    api = store.add_token(ANA, "erp")
    assert store.session(token) is not None and store.token_user(api) is not None
    store.disable(ANA)
    assert store.session(token) is None and store.token_user(api) is None
    assert store.authenticate(ANA, PASSWORD) is None
    with engine.connect() as conn:
        assert conn.execute(select(sessions.c.revoked_at)).scalar_one() is not None
        assert conn.execute(select(api_tokens.c.revoked_at)).scalar_one() is not None
    store.enable(ANA)
    assert store.session(token) is None  # enabling again revives nothing
    assert store.authenticate(ANA, PASSWORD) is not None


def test_tokens_are_kept_as_their_sha256_only(store: UserStore, engine: Engine) -> None:
    store.add(ANA, "Ana", password=PASSWORD)
    token = store.add_token(ANA, "erp-sync")
    assert token.startswith("rlc_") and len(token) > 40
    with engine.connect() as conn:
        assert conn.execute(select(api_tokens.c.token_sha256)).scalar_one() == digest(token)
    with pytest.raises(UserError, match="already has a token"):
        store.add_token(ANA, "erp-sync")
    assert store.revoke_token(ANA, "erp-sync") and not store.revoke_token(ANA, "erp-sync")
    assert store.add_token(ANA, "erp-sync") != token  # the label is free again


# ---------------------------------------------------------------------------------------------------- the CLI
def run(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["user", *argv, "--database-url", sqlite_url])


def test_user_add_grant_list_passwd_disable(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], engine: Engine
) -> None:
    pairs = ["--tenant", "acme-fr", "--role", "collector", "--tenant", "acme-de", "--role", "auditor"]
    added = run(sqlite_url, monkeypatch, "add", ANA, "--name", "Ana Martin", *pairs, "--password-stdin", stdin=PASSWORD)
    assert added == 0
    assert "added ana@example.com (Ana Martin) with a password: collector in acme-fr, auditor in acme-de" in (
        capsys.readouterr().out
    )
    store = UserStore(engine)
    assert store.authenticate(ANA, PASSWORD) is not None
    assert run(sqlite_url, monkeypatch, "grant", ANA, "--tenant", "acme-fr", "--role", "credit_manager") == 0
    assert run(sqlite_url, monkeypatch, "revoke", ANA, "--tenant", "acme-de", "--role", "auditor") == 0
    assert run(sqlite_url, monkeypatch, "revoke", ANA, "--tenant", "acme-de", "--role", "auditor") == 1
    assert "nothing to revoke" in capsys.readouterr().err
    assert run(sqlite_url, monkeypatch, "list") == 0
    listed = capsys.readouterr().out
    assert "ana@example.com" in listed and "acme-fr: collector, credit_manager" in listed
    assert run(sqlite_url, monkeypatch, "passwd", ANA, "--password-stdin", stdin="a new long passphrase\n") == 0
    assert store.authenticate(ANA, "a new long passphrase") is not None
    assert run(sqlite_url, monkeypatch, "disable", ANA) == 0
    assert store.authenticate(ANA, "a new long passphrase") is None
    assert run(sqlite_url, monkeypatch, "list", "--json") == 0
    assert '"disabled_at": "' in capsys.readouterr().out
    assert run(sqlite_url, monkeypatch, "enable", ANA) == 0
    assert store.authenticate(ANA, "a new long passphrase") is not None


def test_user_add_refuses_a_weak_password_pairs_that_do_not_match_and_an_existing_login(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(sqlite_url, monkeypatch, "add", ANA, "--name", "Ana", "--password-stdin", stdin="short\n") == 1
    assert "too weak: at least 12 characters" in capsys.readouterr().err
    assert run(sqlite_url, monkeypatch, "add", ANA, "--name", "Ana", "--tenant", "acme-fr", "--password-stdin") == 1
    assert "in pairs" in capsys.readouterr().err
    assert run(sqlite_url, monkeypatch, "add", ANA, "--name", "Ana") == 1  # no terminal to ask at
    assert "--password-stdin" in capsys.readouterr().err
    assert run(sqlite_url, monkeypatch, "add", ANA, "--name", "Ana", "--no-password") == 0
    assert "for OIDC sign-in only" in capsys.readouterr().out
    assert run(sqlite_url, monkeypatch, "add", ANA, "--name", "Ana", "--no-password") == 1
    assert "already exists" in capsys.readouterr().err
    assert run(sqlite_url, monkeypatch, "passwd", "nobody", "--password-stdin", stdin=PASSWORD) == 1
    assert run(sqlite_url, monkeypatch, "disable", "nobody") == 1
    assert "no user 'nobody'" in capsys.readouterr().err


def test_passwords_typed_at_the_prompt_must_match(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], engine: Engine
) -> None:
    typed = iter([PASSWORD, PASSWORD + "!"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal())
    assert main(["user", "add", ANA, "--name", "Ana", "--database-url", sqlite_url]) == 1
    assert "the two passwords differ" in capsys.readouterr().err
    typed = iter([PASSWORD, PASSWORD])
    assert main(["user", "add", ANA, "--name", "Ana", "--database-url", sqlite_url]) == 0
    assert UserStore(engine).authenticate(ANA, PASSWORD) is not None


def test_user_token_add_prints_the_token_once_and_revoke_ends_it(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], engine: Engine
) -> None:
    UserStore(engine).add(ANA, "Ana", password=PASSWORD)
    assert run(sqlite_url, monkeypatch, "token", "add", ANA, "--label", "erp-sync") == 0
    printed = capsys.readouterr()
    token = printed.out.strip()
    assert token.startswith("rlc_") and "shown this once" in printed.err
    assert UserStore(engine).token_user(token) is not None
    assert run(sqlite_url, monkeypatch, "token", "revoke", ANA, "--label", "erp-sync") == 0
    assert UserStore(engine).token_user(token) is None
    assert run(sqlite_url, monkeypatch, "token", "revoke", ANA, "--label", "erp-sync") == 1


def test_the_user_commands_need_a_migrated_database(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    assert main(["user", "list", "--database-url", url]) == 78
    assert "relance db upgrade" in capsys.readouterr().err
