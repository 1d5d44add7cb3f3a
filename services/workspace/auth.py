"""Who is signed in (temporary stand-in with the names of the workspace's auth module; replaced by the real one).

Every request is refused until the real module is merged; tests override :func:`page_user` / :func:`api_user`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from markupsafe import Markup

from services.workspace.roles import allowed

router = APIRouter()


@dataclass(frozen=True)
class Principal:
    login: str
    display_name: str
    roles: dict[str, frozenset[str]] = field(default_factory=dict)

    def tenants(self) -> list[str]:
        return sorted(t for t, r in self.roles.items() if r)

    def roles_in(self, tenant: str) -> frozenset[str]:
        return self.roles.get(tenant, frozenset())

    def can(self, tenant: str, permission: str) -> bool:
        return allowed(self.roles_in(tenant), permission)


def page_user(request: Request) -> Principal:
    raise HTTPException(status_code=303, headers={"Location": "/login"})


def api_user(request: Request) -> Principal:
    raise HTTPException(status_code=401, detail="sign in first")


def csrf_field(request: Request) -> Markup:
    return Markup('<input type="hidden" name="csrf_token" value="">')


async def check_csrf(request: Request) -> None:
    return None


def install(app: FastAPI, ports: Any) -> None:
    return None
