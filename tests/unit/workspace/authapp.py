"""A tiny FastAPI application around the auth module, on a migrated SQLite ledger, for the sign-in tests."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from services.workspace import auth
from services.workspace.auth import Principal
from services.workspace.users import UserStore
from shared.config import Settings

PASSWORD = "correct horse battery"


@dataclass
class Clock:
    at: datetime = field(default_factory=lambda: datetime(2026, 12, 1, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


@dataclass
class TestPorts:
    settings: Settings
    engine: Engine
    now: Callable[[], datetime]


def make_app(engine: Engine, clock: Clock, **settings: object) -> FastAPI:
    app = FastAPI()
    values: dict[str, object] = {"workspace_insecure_cookies": True, **settings}
    auth.install(app, TestPorts(Settings(**values), engine, clock))  # type: ignore[arg-type]
    app.include_router(auth.router)

    @app.get("/")
    def home(user: Annotated[Principal, Depends(auth.page_user)]) -> dict[str, object]:
        return {"login": user.login, "tenants": user.tenants()}

    @app.get("/form", response_class=HTMLResponse)
    def form(request: Request, user: Annotated[Principal, Depends(auth.page_user)]) -> str:
        return f'<form method="post" action="/form">{auth.csrf_field(request)}</form>'

    @app.post("/form", dependencies=[Depends(auth.check_csrf)])
    def post_form(user: Annotated[Principal, Depends(auth.page_user)]) -> dict[str, str]:
        return {"posted_by": user.login}

    @app.get("/api/v1/me")
    def me(request: Request, user: Annotated[Principal, Depends(auth.api_user)]) -> dict[str, object]:
        return {"login": user.login, "roles": {t: sorted(r) for t, r in user.roles.items()}}

    @app.post("/api/v1/echo")
    def echo(user: Annotated[Principal, Depends(auth.api_user)]) -> dict[str, str]:
        return {"by": user.login}

    return app


def store(engine: Engine, clock: Clock) -> UserStore:
    return UserStore(engine, now=clock)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: TestClient, login: str, password: str = PASSWORD, **extra: str) -> object:
    session = client.cookies.get("relance_session")  # a signed-in browser is sent on from /login
    client.cookies.delete("relance_session")
    page = client.get("/login")
    if session is not None:
        set_session(client, session)  # and sends it with the form: the old session ends
    return client.post(
        "/login",
        data={"login": login, "password": password, "csrf_token": csrf_of(page.text), **extra},
        follow_redirects=False,
    )


def set_session(client: TestClient, token: str) -> None:
    """Put back a session cookie the browser held (as the server set it: same domain and path)."""
    client.cookies.delete("relance_session")
    client.cookies.set("relance_session", token, domain="testserver.local", path="/")
