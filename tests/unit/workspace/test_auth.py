"""Signing in to the workspace: passwords, sessions, CSRF, rate limits, API tokens, roles — over HTTP, on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from services.workspace import auth
from services.workspace.auth import Principal
from services.workspace.users import UserStore
from shared.ledger.db import make_engine
from shared.ledger.schema import sessions
from tests.unit.workspace.authapp import PASSWORD, Clock, csrf_of, make_app, set_session, sign_in

ANA = "ana@example.com"


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine: Engine, clock: Clock) -> UserStore:
    store = UserStore(engine, now=clock)
    store.add(ANA, "Ana Martin", password=PASSWORD)
    store.grant(ANA, "acme-fr", "collector")
    store.grant(ANA, "acme-de", "auditor")
    return store


@pytest.fixture
def client(engine: Engine, clock: Clock, store: UserStore) -> TestClient:
    return TestClient(make_app(engine, clock), base_url="http://testserver")


def test_a_page_sends_a_stranger_to_the_sign_in_page_and_back_after_signing_in(client: TestClient) -> None:
    answer = client.get("/form?x=1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fform%3Fx%3D1"
    signed = sign_in(client, ANA, next="/form?x=1")
    assert signed.status_code == 303 and signed.headers["location"] == "/form?x=1"  # type: ignore[attr-defined]
    assert client.get("/").json() == {"login": ANA, "tenants": ["acme-de", "acme-fr"]}


def test_the_session_cookie_is_httponly_lax_and_secure_unless_told_otherwise(
    engine: Engine, clock: Clock, store: UserStore
) -> None:
    secure = TestClient(make_app(engine, clock, workspace_insecure_cookies=False), base_url="https://testserver")
    answer: Any = sign_in(secure, ANA)
    cookie = answer.headers["set-cookie"].split(", relance_login")[0]
    assert cookie.startswith("relance_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
    assert answer.headers["strict-transport-security"] == "max-age=31536000"
    plain = TestClient(make_app(engine, clock), base_url="http://testserver")
    answer = sign_in(plain, ANA)
    assert "Secure" not in answer.headers["set-cookie"].split(", relance_login")[0]
    assert "strict-transport-security" not in answer.headers


def test_a_wrong_password_an_unknown_login_and_a_disabled_user_get_the_same_answer(
    client: TestClient, store: UserStore
) -> None:
    store.add("bob@example.com", "Bob", password=PASSWORD)
    store.disable("bob@example.com")
    for login, password in ((ANA, "wrong password!"), ("nobody@example.com", PASSWORD), ("bob@example.com", PASSWORD)):
        answer: Any = sign_in(client, login, password)
        assert answer.status_code == 401
        assert "Wrong login or password." in answer.text
        assert "relance_session" not in answer.headers.get("set-cookie", "")
    assert client.get("/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    "login",
    [
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "ana@example.com\x00",
        "\u202eana@example.com",
        "x" * 5000,
        "{{ 7*7 }}",
    ],
)
def test_hostile_logins_are_refused_and_echoed_inert(client: TestClient, login: str) -> None:
    answer: Any = sign_in(client, login[:1000])
    assert answer.status_code in (401, 422)
    assert "<script>alert" not in answer.text
    if "{{" in login:
        assert 'value="{{ 7*7 }}"' in answer.text  # shown as typed, never evaluated


def test_the_sign_in_form_is_refused_without_its_csrf_token(client: TestClient) -> None:
    client.get("/login")
    answer = client.post("/login", data={"login": ANA, "password": PASSWORD}, follow_redirects=False)
    assert answer.status_code == 403
    assert "reload the page" in answer.text
    answer = client.post(
        "/login", data={"login": ANA, "password": PASSWORD, "csrf_token": "forged"}, follow_redirects=False
    )
    assert answer.status_code == 403


def test_five_failures_for_a_login_lock_it_for_fifteen_minutes_saying_when(client: TestClient, clock: Clock) -> None:
    for _ in range(5):
        assert sign_in(client, ANA, "not the password").status_code == 401  # type: ignore[attr-defined]
        clock.advance(seconds=10)
    answer: Any = sign_in(client, ANA)  # even the right password
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) == 15 * 60 - 50
    assert "try again after 09:15 UTC" in answer.text
    clock.advance(minutes=15)
    assert sign_in(client, ANA).status_code == 303  # type: ignore[attr-defined]


def test_twenty_failures_from_one_address_lock_that_address(client: TestClient, store: UserStore) -> None:
    for n in range(20):
        assert sign_in(client, f"user{n}@example.com", "guess guess guess").status_code == 401  # type: ignore[attr-defined]
    assert sign_in(client, ANA).status_code == 429  # type: ignore[attr-defined]


def test_a_successful_sign_in_forgets_the_failures_of_that_login(client: TestClient) -> None:
    for _ in range(4):
        sign_in(client, ANA, "not the password")
    assert sign_in(client, ANA).status_code == 303  # type: ignore[attr-defined]
    for _ in range(4):
        sign_in(client, ANA, "not the password")
    assert sign_in(client, ANA).status_code == 303  # type: ignore[attr-defined]


def test_a_form_needs_the_sessions_csrf_token(client: TestClient, engine: Engine, clock: Clock) -> None:
    sign_in(client, ANA)
    token = csrf_of(client.get("/form").text)
    assert client.post("/form", data={}).status_code == 403
    assert client.post("/form", data={}).json()["detail"] == auth.CSRF_REFUSED
    tampered = token[:-1] + ("1" if token[-1] == "0" else "0")
    assert client.post("/form", data={"csrf_token": tampered}).status_code == 403
    assert client.post("/form", data={"csrf_token": token}).json() == {"posted_by": ANA}
    # another session's token is not this one's
    other = TestClient(make_app(engine, clock), base_url="http://testserver")
    sign_in(other, ANA)
    assert other.post("/form", data={"csrf_token": token}).status_code == 403


def test_signing_in_again_gives_a_new_session_and_ends_the_old_one(client: TestClient) -> None:
    sign_in(client, ANA)
    first = client.cookies["relance_session"]
    sign_in(client, ANA)
    second = client.cookies["relance_session"]
    assert first != second
    set_session(client, first)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_session_ends_after_eight_idle_hours_and_its_use_keeps_it_alive(client: TestClient, clock: Clock) -> None:
    sign_in(client, ANA)
    for _ in range(3):
        clock.advance(hours=7)
        assert client.get("/").status_code == 200  # used within 8 hours each time
    clock.advance(hours=2)  # 23 hours in all: still within the day
    assert client.get("/").status_code == 200
    clock.advance(hours=1, seconds=1)  # but no session outlives 24 hours
    assert client.get("/", follow_redirects=False).status_code == 303
    sign_in(client, ANA)
    clock.advance(hours=8, seconds=1)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_logout_revokes_the_session_on_the_server(client: TestClient, engine: Engine) -> None:
    sign_in(client, ANA)
    token = client.cookies["relance_session"]
    csrf = csrf_of(client.get("/form").text)
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403  # no CSRF token: not signed out
    answer = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    set_session(client, token)  # the stolen cookie is dead too
    assert client.get("/", follow_redirects=False).status_code == 303
    with engine.connect() as conn:
        assert conn.execute(select(sessions.c.revoked_at)).scalar_one() is not None


def test_disabling_a_user_ends_its_sessions_and_tokens(client: TestClient, store: UserStore) -> None:
    sign_in(client, ANA)
    token = store.add_token(ANA, "erp")
    store.disable(ANA)
    assert client.get("/", follow_redirects=False).status_code == 303
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_the_api_takes_a_personal_token_or_the_session_with_its_csrf_header(
    client: TestClient, store: UserStore
) -> None:
    token = store.add_token(ANA, "erp-sync")
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=bearer).json() == {
        "login": ANA,
        "roles": {"acme-de": ["auditor"], "acme-fr": ["collector"]},
    }
    assert client.post("/api/v1/echo", headers=bearer).json() == {"by": ANA}  # a token needs no CSRF header
    answer = client.get("/api/v1/me")
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer rlc_forged"}).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Basic YW5hOng="}).status_code == 401
    store.revoke_token(ANA, "erp-sync")
    assert client.get("/api/v1/me", headers=bearer).status_code == 401

    sign_in(client, ANA)
    assert client.get("/api/v1/me").json()["login"] == ANA
    assert client.post("/api/v1/echo").status_code == 403
    csrf = auth_token(client)
    assert client.post("/api/v1/echo", headers={"X-CSRF-Token": "nope"}).status_code == 403
    assert client.post("/api/v1/echo", headers={"X-CSRF-Token": csrf}).json() == {"by": ANA}


def auth_token(client: TestClient) -> str:
    return csrf_of(client.get("/form").text)


def test_next_never_leads_off_the_site(client: TestClient) -> None:
    for target in ("//evil.example.com/", "https://evil.example.com/", "/\\evil.example.com", "javascript:alert(1)"):
        answer: Any = sign_in(client, ANA, next=target)
        assert answer.headers["location"] == "/"


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    for answer in (client.get("/login"), client.get("/api/v1/me")):
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"


def test_the_sign_in_page_speaks_french_and_english(client: TestClient) -> None:
    page = client.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert "Mot de passe" in page.text and 'lang="fr"' in page.text
    assert "Password" in client.get("/login?lang=en").text
    french: Any = sign_in(client, ANA, "nope nope nope", lang="fr")
    assert french.status_code == 401
    for hook in ('name="login"', 'name="password"', 'data-testid="login-submit"', 'name="csrf_token"'):
        assert hook in page.text


def test_the_sign_in_page_offers_single_sign_on_only_when_configured(client: TestClient) -> None:
    assert "/login/oidc" not in client.get("/login").text
    assert client.get("/login/oidc", follow_redirects=False).status_code == 404


def test_roles_say_what_a_principal_may_do_per_tenant() -> None:
    user = Principal("ana", "Ana", {"acme-fr": frozenset({"collector"}), "acme-de": frozenset({"auditor"})})
    assert user.tenants() == ["acme-de", "acme-fr"]
    assert user.can("acme-fr", "log_call") and user.can("acme-fr", "read")
    assert not user.can("acme-fr", "agree_plan") and not user.can("acme-fr", "admin")
    assert user.can("acme-de", "read") and not user.can("acme-de", "log_call")
    assert not user.can("other", "read") and user.roles_in("other") == frozenset()
    manager = Principal("cm", "CM", {"acme-fr": frozenset({"credit_manager"})})
    assert manager.can("acme-fr", "agree_plan") and manager.can("acme-fr", "decide_credit_limit")
    admin = Principal("root", "Admin", {"acme-fr": frozenset({"administrator"})})
    assert admin.can("acme-fr", "admin") and not admin.can("acme-fr", "log_call")
    assert not admin.can("acme-fr", "no_such_action")


def test_htmx_requests_may_carry_the_csrf_token_as_a_header(client: TestClient) -> None:
    sign_in(client, ANA)
    token = csrf_of(client.get("/form").text)
    assert client.post("/form", headers={"X-CSRF-Token": token}).json() == {"posted_by": ANA}
    assert client.post("/form", headers={"X-CSRF-Token": "forged"}, data={"csrf_token": token}).status_code == 403


def test_an_expired_sign_in_form_is_refused_with_a_fresh_one_to_use(client: TestClient) -> None:
    stale = csrf_of(client.get("/login").text)
    client.cookies.delete("relance_login")  # the pre-session cookie is gone (an hour later, another browser)
    refused = client.post("/login", data={"login": ANA, "password": PASSWORD, "csrf_token": stale})
    assert refused.status_code == 403 and "reload the page" in refused.text
    fresh = csrf_of(refused.text)
    answer = client.post(
        "/login", data={"login": ANA, "password": PASSWORD, "csrf_token": fresh}, follow_redirects=False
    )
    assert answer.status_code == 303


def test_forged_session_cookies_are_strangers(client: TestClient) -> None:
    for forged in ("", "x", "a" * 5000, "' OR 1=1 --"):
        set_session(client, forged)
        assert client.get("/", follow_redirects=False).status_code == 303
        assert client.get("/api/v1/me").status_code == 401
