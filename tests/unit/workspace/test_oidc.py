"""OIDC single sign-on against a small OpenID provider served on loopback (real HTTP, ID tokens signed with a key
made for the test): discovery, PKCE, state and nonce, and which relance user a provider's answer names."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from services.workspace.users import UserStore
from shared.config import ConfigurationError, load_settings
from shared.ledger.db import make_engine
from tests.unit.workspace.authapp import Clock, make_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, jwt

CLIENT_ID = "relance-workspace"
CLIENT_SECRET = "a client secret of the test"
ANA = "ana@example.com"


def _key(kid: str) -> Any:
    return JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": kid})


@dataclass
class Provider:
    """An OpenID provider that signs in whoever :attr:`person` says, and checks what a real one checks."""

    issuer: str = ""
    key: Any = field(default_factory=lambda: _key("k1"))
    person: dict[str, Any] = field(default_factory=lambda: {"sub": "idp-0001", "email": ANA, "email_verified": True})
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    seen: list[dict[str, str]] = field(default_factory=list)
    claims_override: dict[str, Any] = field(default_factory=dict)
    signing_key: Any = None  # another key than the published one, to forge tokens

    def id_token(self, nonce: str) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": nonce, **self.person}
        claims.update(self.claims_override)
        key = self.signing_key or self.key
        token: bytes = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
        return token.decode()


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/.well-known/openid-configuration":
                self._json(
                    200,
                    {
                        "issuer": provider.issuer,
                        "authorization_endpoint": provider.issuer + "/authorize",
                        "token_endpoint": provider.issuer + "/token",
                        "jwks_uri": provider.issuer + "/jwks",
                        "response_types_supported": ["code"],
                        "code_challenge_methods_supported": ["S256"],
                    },
                )
            elif url.path == "/jwks":
                self._json(200, {"keys": [provider.key.as_dict(is_private=False)]})
            elif url.path == "/authorize":
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                provider.seen.append(query)
                assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
                assert "openid" in query["scope"].split() and query["code_challenge_method"] == "S256"
                code = secrets.token_urlsafe(16)
                provider.codes[code] = {
                    "challenge": query["code_challenge"],
                    "nonce": query["nonce"],
                    "redirect_uri": query["redirect_uri"],
                }
                self.send_response(302)
                self.send_header("Location", query["redirect_uri"] + "?" + urlencode({"code": code, **_state(query)}))
                self.end_headers()
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {basic}":
                self._json(401, {"error": "invalid_client"})
                return
            grant = provider.codes.pop(form.get("code", ""), None)  # a code is good once
            if grant is None or form.get("grant_type") != "authorization_code":
                self._json(400, {"error": "invalid_grant"})
                return
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge != grant["challenge"] or form.get("redirect_uri") != grant["redirect_uri"]:
                self._json(400, {"error": "invalid_grant", "error_description": "PKCE or redirect_uri"})
                return
            self._json(
                200,
                {
                    "access_token": secrets.token_urlsafe(16),
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "id_token": provider.id_token(grant["nonce"]),
                },
            )

    return Handler


def _state(query: dict[str, str]) -> dict[str, str]:
    return {"state": query["state"]} if "state" in query else {}


@pytest.fixture
def provider() -> Iterator[Provider]:
    provider = Provider()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    provider.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield provider
    server.shutdown()
    server.server_close()


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> UserStore:
    return UserStore(engine, now=Clock())


@pytest.fixture
def client(engine: Engine, provider: Provider) -> TestClient:
    app = make_app(
        engine,
        Clock(),
        oidc_issuer=provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
    )
    return TestClient(app, base_url="http://testserver")


def sso(client: TestClient, target: str = "/") -> httpx.Response:
    """Sign in at the provider, as a browser would: relance → provider → relance's callback."""
    start = client.get(f"/login/oidc?next={target}", follow_redirects=False)
    assert start.status_code == 302, start.text
    back = httpx.get(start.headers["location"], follow_redirects=False)
    assert back.status_code == 302
    callback = back.headers["location"].removeprefix("http://testserver")
    answer: httpx.Response = client.get(callback, follow_redirects=False)
    return answer


def test_a_user_an_administrator_created_signs_in_by_verified_email_then_by_subject(
    client: TestClient, store: UserStore, provider: Provider
) -> None:
    store.add(ANA, "Ana Martin")  # no password: single sign-on only
    store.grant(ANA, "acme-fr", "collector")
    answer = sso(client, "/form")
    assert answer.status_code == 303 and answer.headers["location"] == "/form"
    assert client.get("/").json() == {"login": ANA, "tenants": ["acme-fr"]}
    assert store.get(ANA).oidc_subject == "idp-0001"  # type: ignore[union-attr]
    # the provider's e-mail changes later: the subject still names Ana
    provider.person = {"sub": "idp-0001", "email": "ana.martin@example.com", "email_verified": True}
    client.cookies.clear()
    assert sso(client).status_code == 303
    assert client.get("/").json()["login"] == ANA
    # PKCE with S256, a state and a nonce went to the provider
    assert all(seen["code_challenge_method"] == "S256" and seen["state"] and seen["nonce"] for seen in provider.seen)


def test_nobody_is_created_and_no_role_given_by_signing_in(client: TestClient, store: UserStore) -> None:
    answer = sso(client)
    assert answer.status_code == 403
    assert "No relance account matches this sign-in" in answer.text
    assert store.all() == []
    store.add(ANA, "Ana")
    assert sso(client).status_code == 303
    assert client.get("/").json() == {"login": ANA, "tenants": []}


def test_an_unverified_email_or_a_disabled_user_does_not_sign_in(
    client: TestClient, store: UserStore, provider: Provider
) -> None:
    store.add(ANA, "Ana")
    provider.person = {"sub": "idp-0001", "email": ANA, "email_verified": False}
    assert sso(client).status_code == 403
    provider.person["email_verified"] = True
    assert sso(client).status_code == 303
    store.disable(ANA)
    client.cookies.clear()
    assert sso(client).status_code == 403


def test_an_email_whose_user_is_linked_to_another_subject_does_not_sign_in(
    client: TestClient, store: UserStore, provider: Provider
) -> None:
    store.add(ANA, "Ana", oidc_subject="idp-0001")
    provider.person = {"sub": "idp-9999", "email": ANA, "email_verified": True}
    assert sso(client).status_code == 403


@pytest.mark.parametrize(
    "forged",
    [
        {"nonce": "another nonce"},
        {"aud": "another-client"},
        {"iss": "https://evil.example.com"},
        {"exp": 1_000_000_000},
    ],
)
def test_an_id_token_that_is_not_for_this_sign_in_is_refused(
    client: TestClient, store: UserStore, provider: Provider, forged: dict[str, Any]
) -> None:
    store.add(ANA, "Ana")
    provider.claims_override = forged
    answer = sso(client)
    assert answer.status_code == 401
    assert "Signing in with the identity provider failed: the ID token is not valid" in answer.text
    assert "relance_session" not in answer.headers.get("set-cookie", "")


def test_an_id_token_signed_with_a_key_the_provider_does_not_publish_is_refused(
    client: TestClient, store: UserStore, provider: Provider
) -> None:
    store.add(ANA, "Ana")
    provider.signing_key = _key("k1")  # same key id, another key
    assert sso(client).status_code == 401


def test_a_callback_with_another_state_or_a_replayed_code_is_refused(
    client: TestClient, store: UserStore, provider: Provider
) -> None:
    store.add(ANA, "Ana")
    start = client.get("/login/oidc", follow_redirects=False)
    back = httpx.get(start.headers["location"], follow_redirects=False).headers["location"]
    query = parse_qs(urlsplit(back).query)
    forged = client.get(f"/login/oidc/callback?code={query['code'][0]}&state=forged", follow_redirects=False)
    assert forged.status_code == 401 and "state" in forged.text
    callback = back.removeprefix("http://testserver")
    assert client.get(callback, follow_redirects=False).status_code == 303  # the real answer still works
    client.cookies.clear()
    assert client.get(callback, follow_redirects=False).status_code == 401  # no sign-in in progress here
    # a browser that never started a sign-in cannot finish one
    fresh = TestClient(client.app, base_url="http://testserver")
    assert fresh.get(callback, follow_redirects=False).status_code == 401


def test_the_providers_refusal_is_shown(client: TestClient) -> None:
    client.get("/login/oidc", follow_redirects=False)
    answer = client.get("/login/oidc/callback?error=access_denied&error_description=user+cancelled")
    assert answer.status_code == 401 and "access_denied user cancelled" in answer.text


def test_the_sign_in_page_offers_single_sign_on(client: TestClient) -> None:
    page = client.get("/login?next=/t/acme-fr/agenda")
    assert 'href="/login/oidc?next=/t/acme-fr/agenda"' in page.text


def test_a_provider_that_does_not_answer_is_said_so(engine: Engine) -> None:
    app = make_app(
        engine, Clock(), oidc_issuer="http://127.0.0.1:9", oidc_client_id=CLIENT_ID, oidc_client_secret=CLIENT_SECRET
    )
    answer = TestClient(app, base_url="http://testserver").get("/login/oidc", follow_redirects=False)
    assert answer.status_code == 502 and "did not answer" in answer.text


@pytest.mark.parametrize(
    "given",
    [
        {"RELANCE_OIDC_ISSUER": "https://login.example.com"},
        {"RELANCE_OIDC_ISSUER": "https://login.example.com", "RELANCE_OIDC_CLIENT_ID": "relance"},
        {"RELANCE_OIDC_CLIENT_SECRET": "secret"},
    ],
)
def test_half_configured_single_sign_on_stops_start_up(monkeypatch: pytest.MonkeyPatch, given: dict[str, str]) -> None:
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="OIDC sign-in is half-configured") as refused:
        load_settings()
    assert "got 'secret'" not in str(refused.value)  # the secret is never echoed


def test_an_issuer_that_is_not_a_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELANCE_OIDC_ISSUER", "login.example.com")
    monkeypatch.setenv("RELANCE_OIDC_CLIENT_ID", "relance")
    monkeypatch.setenv("RELANCE_OIDC_CLIENT_SECRET", "secret")
    with pytest.raises(ConfigurationError, match="issuer URL"):
        load_settings()
