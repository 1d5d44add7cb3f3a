"""The JSON API (``/api/v1``): customers, timelines, the agenda, evidence and the actions of a credit team.

Every answer has a pydantic model, so ``/api/openapi.json`` is typed. Every read is scoped to a tenant the user holds
a role in; anything else is a 404 exactly like an unknown tenant or customer. An action is checked against the
user's roles in the tenant (:func:`services.workspace.roles.allowed`: 403 without), then recorded by
:func:`services.workspace.actions.perform` with the user as author and ``source`` "api": 201 when applied, 200 for
the same request id sent again, 404 / 409 / 422 as the action layer refuses.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from datetime import date
from email.message import EmailMessage
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from services.workspace import actions, auth
from services.workspace.auth import Principal, api_user
from services.workspace.ports import Evidence, Ports
from services.workspace.roles import READ, allowed
from services.workspace.views import (
    AgendaEntry,
    CustomerRow,
    CustomerView,
    TimelineEntry,
    agenda_entry,
    customer_row,
    customer_view,
    known,
    timeline,
)
from shared.ledger.state import CustomerState
from shared.ledger.store import Ledger

router = APIRouter(prefix="/api/v1", tags=["workspace"])
User = Annotated[Principal, Depends(api_user)]


# ----------------------------------------------------------------------------------------------- shared reads
def ports_of(request: Request) -> Ports:
    ports: Ports = request.app.state.ports
    return ports


def today(ports: Ports) -> date:
    return ports.now().date()


def require_tenant(user: Principal, tenant: str, permission: str = READ) -> None:
    """404 for a tenant the user holds no role in (as for one that does not exist)."""
    if not user.roles_in(tenant) or not allowed(user.roles_in(tenant), READ):
        raise HTTPException(status_code=404, detail="not found")
    if permission != READ and not allowed(user.roles_in(tenant), permission):
        raise HTTPException(status_code=403, detail=f"your roles in {tenant} do not allow {permission}")


def customer_state(ledger: Ledger, tenant: str, customer_id: str) -> CustomerState:
    state = ledger.state(tenant, customer_id)
    if not known(state):
        raise HTTPException(status_code=404, detail="not found")
    return state


def customer_rows(ledger: Ledger, tenant: str, on: date, q: str | None = None) -> list[CustomerRow]:
    """The tenant's customers as listed on ``on``; with ``q``, those whose name or id contains it (any case)."""
    rows = [customer_row(s, on) for s in tenant_states(ledger, tenant) if known(s)]
    if q:
        wanted = q.casefold()
        rows = [r for r in rows if wanted in r.name.casefold() or wanted in r.customer_id.casefold()]
    return rows


def tenant_states(ledger: Ledger, tenant: str) -> list[CustomerState]:
    keys = ledger.streams(tenant)
    states = ledger.states(keys)
    return [states[k] for k in keys if k in states]


def agenda_entries(
    ports: Ports, ledger: Ledger, tenant: str, on: date, assignee: str | None = None, kind: str | None = None
) -> list[AgendaEntry]:
    states = tenant_states(ledger, tenant)
    numbers = {i.invoice_id: i.number for s in states for i in s.invoices.values()}
    entries = [agenda_entry(item, numbers) for item in ports.agenda(states, on)]
    if assignee:
        entries = [e for e in entries if e.assignee == assignee]
    if kind:
        entries = [e for e in entries if e.kind == kind]
    return entries


def evidence_of(ports: Ports, ledger: Ledger, tenant: str, command_id: str) -> Evidence:
    found = ports.evidence(ledger, tenant, command_id)
    if found is None or found.tenant != tenant:
        raise HTTPException(status_code=404, detail="not found")
    return found


class Header(BaseModel):
    name: str
    value: str


class EvidenceView(BaseModel):
    tenant: str
    customer_id: str
    command_id: str
    message_id: str
    subject: str
    headers: list[Header]
    text: str
    recorded_sha256: str
    recomputed_sha256: str
    verified: bool
    outcome: str
    size: int


def evidence_view(found: Evidence) -> EvidenceView:
    message = email.message_from_bytes(found.mime, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("plain",))
    text = ""
    if body is not None:
        try:
            text = str(body.get_content())  # type: ignore[attr-defined]
        except (LookupError, ValueError):
            text = ""
    return EvidenceView(
        tenant=found.tenant,
        customer_id=found.customer_id,
        command_id=found.command_id,
        message_id=found.message_id,
        subject=str(message.get("Subject", "")),
        headers=[Header(name=k, value=str(v)) for k, v in message.items()],
        text=text,
        recorded_sha256=found.recorded_sha256,
        recomputed_sha256=found.recomputed_sha256,
        verified=found.verified,
        outcome=found.outcome,
        size=len(found.mime),
    )


# ----------------------------------------------------------------------------------------------- endpoints
class TenantRoles(BaseModel):
    tenant: str
    roles: list[str]


class Me(BaseModel):
    login: str
    display_name: str
    tenants: list[TenantRoles]


@router.get("/me", response_model=Me)
def me(user: User) -> Me:
    return Me(
        login=user.login,
        display_name=user.display_name,
        tenants=[TenantRoles(tenant=t, roles=sorted(user.roles_in(t))) for t in user.tenants()],
    )


class CustomerList(BaseModel):
    tenant: str
    customers: list[CustomerRow]


@router.get("/tenants/{tenant}/customers", response_model=CustomerList)
def customers(request: Request, tenant: str, user: User, q: str | None = None) -> CustomerList:
    require_tenant(user, tenant)
    ports = ports_of(request)
    return CustomerList(tenant=tenant, customers=customer_rows(ports.ledger(), tenant, today(ports), q))


@router.get("/tenants/{tenant}/customers/{customer_id}", response_model=CustomerView)
def customer(request: Request, tenant: str, customer_id: str, user: User) -> CustomerView:
    require_tenant(user, tenant)
    ports = ports_of(request)
    return customer_view(customer_state(ports.ledger(), tenant, customer_id), today(ports))


class Timeline(BaseModel):
    tenant: str
    customer_id: str
    entries: list[TimelineEntry]


@router.get("/tenants/{tenant}/customers/{customer_id}/timeline", response_model=Timeline)
def customer_timeline(request: Request, tenant: str, customer_id: str, user: User) -> Timeline:
    require_tenant(user, tenant)
    ledger = ports_of(request).ledger()
    state = customer_state(ledger, tenant, customer_id)
    entries = timeline(ledger.read_stream(tenant, customer_id), state)
    return Timeline(tenant=tenant, customer_id=customer_id, entries=entries)


class Agenda(BaseModel):
    tenant: str
    on: date
    items: list[AgendaEntry]


@router.get("/tenants/{tenant}/agenda", response_model=Agenda)
def agenda(
    request: Request,
    tenant: str,
    user: User,
    on: date | None = None,
    assignee: str | None = None,
    kind: str | None = None,
) -> Agenda:
    require_tenant(user, tenant)
    ports = ports_of(request)
    day = on or today(ports)
    return Agenda(tenant=tenant, on=day, items=agenda_entries(ports, ports.ledger(), tenant, day, assignee, kind))


@router.get("/tenants/{tenant}/evidence/{command_id}", response_model=EvidenceView)
def evidence(request: Request, tenant: str, command_id: str, user: User) -> EvidenceView:
    require_tenant(user, tenant)
    ports = ports_of(request)
    return evidence_view(evidence_of(ports, ports.ledger(), tenant, command_id))


@router.get(
    "/tenants/{tenant}/evidence/{command_id}/eml",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}, "description": "the message's exact bytes"}},
)
def evidence_eml(request: Request, tenant: str, command_id: str, user: User) -> Response:
    require_tenant(user, tenant)
    ports = ports_of(request)
    return eml_response(evidence_of(ports, ports.ledger(), tenant, command_id))


def eml_response(found: Evidence) -> Response:
    safe = "".join(c for c in found.command_id if c.isalnum() or c in "-_.")[:100] or "message"
    return Response(
        content=found.mime,
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{safe}.eml"', "X-Content-Type-Options": "nosniff"},
    )


# ----------------------------------------------------------------------------------------------- actions
class ActionAnswer(BaseModel):
    action: str
    status: Literal["applied", "duplicate"]
    event_ids: list[str]
    summary: str


class Refusal(BaseModel):
    detail: str


def run_action(
    ports: Ports, user: Principal, tenant: str, customer_id: str, action: str, payload: dict[str, Any], source: str
) -> actions.ActionResult:
    """Check the tenant, the customer and the role, then record the action (refusals as HTTPException)."""
    require_tenant(user, tenant)
    ledger = ports.ledger()
    customer_state(ledger, tenant, customer_id)
    if not allowed(user.roles_in(tenant), action):
        raise HTTPException(status_code=403, detail=f"your roles in {tenant} do not allow {action}")
    try:
        return actions.perform(
            ledger, tenant, customer_id, action, payload, author=user.login, source=source, now=ports.now()
        )
    except actions.ActionRefused as refused:
        raise HTTPException(status_code=refused.status, detail=refused.reason) from None


def _action_endpoint(name: str, model: type[actions.ActionRequest]) -> Callable[..., Any]:
    def endpoint(request: Request, tenant: str, customer_id: str, body: Any, user: User) -> JSONResponse:
        payload = body.model_dump(mode="json", exclude_unset=True)
        result = run_action(ports_of(request), user, tenant, customer_id, name, payload, "api")
        answer = ActionAnswer(
            action=result.action, status=result.status, event_ids=list(result.event_ids), summary=result.summary
        )
        return JSONResponse(answer.model_dump(), status_code=201 if result.status == "applied" else 200)

    endpoint.__annotations__ = {**endpoint.__annotations__, "body": model}
    endpoint.__name__ = f"action_{name}"
    return endpoint


for _name, _model in actions.ACTIONS.items():
    router.add_api_route(
        f"/tenants/{{tenant}}/customers/{{customer_id}}/actions/{_name}",
        _action_endpoint(_name, _model),
        methods=["POST"],
        status_code=201,
        response_model=ActionAnswer,
        responses={
            200: {"model": ActionAnswer, "description": "the same request id again: the first result"},
            403: {"model": Refusal, "description": "your roles in the tenant do not allow this action"},
            404: {"model": Refusal, "description": "no such tenant, customer, task or invoice for you"},
            409: {"model": Refusal, "description": "this request id was used with another payload"},
            422: {"model": Refusal, "description": "the action cannot be done, and why"},
        },
        summary=f"{_name.replace('_', ' ')}",
    )

__all__ = ["auth", "router"]
