"""The workspace with its real sign-in: a user signs in, works in their tenant only, and a form without its CSRF
token is refused."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from services.workspace.users import UserStore
from tests.unit.workspace.web import CUSTOMER, OTHER, TENANT, THEIRS, Web, web

PASSWORD = "correct horse battery"


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Web]:
    for holder in web(sqlite_url, signed_in_as_test_user=False):
        users = UserStore(holder.ledger.engine)
        users.add("ann", "Ann Collector", password=PASSWORD)
        users.grant("ann", TENANT, "collector")
        yield holder


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def sign_in(app: Web) -> None:
    login = app.client.get("/login")
    assert login.status_code == 200 and 'data-testid="login-submit"' in login.text
    fields = {"login": "ann", "password": PASSWORD, "csrf_token": csrf_of(login.text), "next": "/"}
    assert app.client.post("/login", data=fields).status_code == 303


def test_pages_ask_to_sign_in_first(app: Web) -> None:
    response = app.client.get(f"/t/{TENANT}/agenda")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    assert app.client.get("/api/v1/me").status_code == 401


def test_a_signed_in_collector_works_in_their_tenant_only(app: Web) -> None:
    sign_in(app)
    assert app.client.get("/").headers["location"] == f"/t/{TENANT}/agenda"
    agenda = app.client.get(f"/t/{TENANT}/agenda?who=team")
    assert agenda.status_code == 200 and 'data-testid="agenda-item"' in agenda.text
    assert "content-security-policy" in agenda.headers
    assert app.client.get(f"/t/{OTHER}/customers/{THEIRS}").status_code == 404
    assert app.client.get(f"/api/v1/tenants/{OTHER}/customers/{THEIRS}").status_code == 404
    assert app.client.get("/api/v1/me").json()["login"] == "ann"


def test_a_form_without_its_csrf_token_is_refused_and_with_it_recorded(app: Web) -> None:
    sign_in(app)
    url = f"/t/{TENANT}/customers/{CUSTOMER}/actions/add_note"
    form = app.client.get(url).text
    refused = app.client.post(url, data={"request_id": "n-1", "text": "hello"})
    assert refused.status_code == 403
    posted = app.client.post(url, data={"request_id": "n-1", "text": "hello", "csrf_token": csrf_of(form)})
    assert posted.status_code == 303
    api = f"/api/v1/tenants/{TENANT}/customers/{CUSTOMER}/actions/add_note"
    assert app.client.post(api, json={"request_id": "n-2", "text": "x"}).status_code == 403  # no X-CSRF-Token
    with_header = app.client.post(api, json={"request_id": "n-2", "text": "x"}, headers={"X-CSRF-Token": csrf_of(form)})
    assert with_header.status_code == 201, with_header.text
