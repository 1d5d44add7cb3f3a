"""The workspace's pages: the agenda, customers, a customer's account and timeline, action forms, evidence, admin.

Server-rendered with Jinja2 (autoescape on); htmx loads an action's form into the customer page and posts it, and
the same forms work without it. Every form carries the session's CSRF token (:func:`services.workspace.auth.check_csrf`
refuses a post without it) and a request id made when the form was drawn, so that posting it twice records once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from services.workspace import actions
from services.workspace.api import (
    agenda_entries,
    customer_rows,
    customer_state,
    eml_response,
    evidence_of,
    evidence_view,
    ports_of,
    require_tenant,
    run_action,
    today,
)
from services.workspace.auth import Principal, check_csrf, csrf_field, page_user
from services.workspace.i18n import COOKIE, LANGUAGES, Translator, choose
from services.workspace.i18n import FIELD_LABELS as _FIELD_LABELS
from services.workspace.roles import ADMIN, allowed
from services.workspace.views import customer_view, grouped, timeline
from shared.contracts.events import CALL_OUTCOMES
from shared.ledger import outbox

router = APIRouter(include_in_schema=False)
User = Annotated[Principal, Depends(page_user)]
# the actions offered on a customer page, in this order
CUSTOMER_ACTIONS = (
    "log_call",
    "add_note",
    "record_promise",
    "open_dispute",
    "resolve_dispute",
    "agree_plan",
    "waive_claim",
    "pause",
    "resume",
    "propose_credit_limit",
    "decide_credit_limit",
)
LETTER_ACTIONS = ("letter_posted", "letter_delivered", "letter_returned")  # offered beside each letter
TASK_ACTIONS = ("complete_task", "snooze_task", "assign_task")


def render(
    request: Request, name: str, context: dict[str, Any], user: Principal | None, status: int = 200
) -> HTMLResponse:
    lang = choose(request)
    t = Translator(lang)
    tenant = context.get("tenant")
    base = {
        "t": t,
        "lang": lang,
        "other_lang": "fr" if lang == "en" else "en",
        "user": user,
        "csrf": csrf_field(request),
        "is_admin": bool(user and tenant and allowed(user.roles_in(tenant), ADMIN)),
        "htmx": request.headers.get("HX-Request") == "true",
    }
    environment: Jinja2Templates = request.app.state.templates
    response = environment.TemplateResponse(request, name, {**base, **context}, status_code=status)
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(COOKIE, lang, max_age=365 * 86400, samesite="lax", httponly=True)
    return response


@router.get("/")
def home(request: Request, user: User) -> Response:
    tenants = user.tenants()
    if not tenants:
        return render(request, "error.html", {"status": 403, "title": "relance", "text": "no tenant"}, user, 403)
    return RedirectResponse(f"/t/{tenants[0]}/agenda", status_code=303)


@router.get("/t/{tenant}/agenda")
def agenda_page(
    request: Request,
    tenant: str,
    user: User,
    on: date | None = None,
    who: str = "me",
    kind: str | None = None,
) -> HTMLResponse:
    require_tenant(user, tenant)
    ports = ports_of(request)
    day = on or today(ports)
    everything = agenda_entries(ports, ports.ledger(), tenant, day)
    kinds = sorted({e.kind for e in everything})
    entries = [e for e in everything if not kind or e.kind == kind]
    if who == "me":  # my items: assigned to me, or to nobody
        entries = [e for e in entries if e.assignee in (None, "", user.login)]
    context = {
        "tenant": tenant,
        "day": day,
        "groups": grouped(entries),
        "count": len(entries),
        "kinds": kinds,
        "kind": kind or "",
        "who": who,
        "previous": day - timedelta(days=1),
        "next": day + timedelta(days=1),
    }
    return render(request, "agenda.html", context, user)


@router.get("/t/{tenant}/customers")
def customers_page(request: Request, tenant: str, user: User, q: str | None = None) -> HTMLResponse:
    require_tenant(user, tenant)
    ports = ports_of(request)
    rows = customer_rows(ports.ledger(), tenant, today(ports), q)
    # the largest overdue amount first, each currency's on its own (amounts of two currencies are never added)
    rows.sort(key=lambda r: (-max((Decimal(m.amount) for m in r.overdue), default=Decimal(0)), r.customer_id))
    return render(request, "customers.html", {"tenant": tenant, "rows": rows, "q": q or ""}, user)


@router.get("/t/{tenant}/customers/{customer_id}")
def customer_page(request: Request, tenant: str, customer_id: str, user: User) -> HTMLResponse:
    require_tenant(user, tenant)
    ports = ports_of(request)
    ledger = ports.ledger()
    state = customer_state(ledger, tenant, customer_id)
    view = customer_view(state, today(ports))
    entries = timeline(ledger.read_stream(tenant, customer_id), state)
    offered = [a for a in CUSTOMER_ACTIONS if allowed(user.roles_in(tenant), a)]
    task_actions = [a for a in TASK_ACTIONS if allowed(user.roles_in(tenant), a)]
    letter_actions = [a for a in LETTER_ACTIONS if allowed(user.roles_in(tenant), a)]
    context = {
        "letter_actions": letter_actions,
        "tenant": tenant,
        "customer": view,
        "timeline": entries,
        "offered": offered,
        "task_actions": task_actions,
        "done": request.query_params.get("done", ""),
        "all_events": request.query_params.get("all") == "1",
    }
    return render(request, "customer.html", context, user)


# ----------------------------------------------------------------------------------------------- action forms
@dataclass
class FormField:
    name: str
    label: str
    kind: str  # text | textarea | date | number | select | checkbox | invoices | instalments
    required: bool = False
    value: str = ""
    choices: list[tuple[str, str]] = field(default_factory=list)
    hint: str = ""


_LONG = {"note", "text", "reason", "resolution"}


def _fields(action: str, t: Translator, view: Any, today_: date, values: dict[str, str]) -> list[FormField]:
    """The form of an action, read from its request model's JSON schema (what the API documents too)."""
    model = actions.ACTIONS[action]
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    invoices = [(i.invoice_id, f"{i.number} · {t.money(i.outstanding, i.currency)}") for i in view.open_invoices]
    tasks = [(task.task_id, f"{t.kind(task.kind)} · {t.day(task.due_on)}") for task in view.tasks]
    currencies = [(s.currency, s.currency) for s in view.summary] or [("EUR", "EUR")]
    fields: list[FormField] = []
    for name, prop in schema.get("properties", {}).items():
        if name in ("request_id", "promise", "dispute"):
            continue
        shape = next((p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"), prop)
        label = t(f"field_{name}") if f"field_{name}" in _FIELD_LABELS else name.replace("_", " ")
        need = name in required
        if name == "outcome" and action == "log_call":
            f = FormField(name, label, "select", True, choices=[(o, t.outcome(o)) for o in CALL_OUTCOMES])
        elif name == "invoice_ids":
            f = FormField(name, label, "invoices", need, choices=invoices)
        elif name == "invoice_id":
            f = FormField(name, label, "select", need, choices=invoices)
        elif name == "task_id":
            f = FormField(name, label, "select", need, choices=tasks)
        elif name == "currency":
            f = FormField(name, label, "select", need, choices=currencies)
        elif name == "instalments":
            f = FormField(name, label, "instalments", need, hint="2026-12-31 500.00")
        elif name == "letter_id":
            f = FormField(
                name, label, "select", need, choices=[(lt["letter_id"], _letter_label(lt, t)) for lt in view.letters]
            )
        elif name == "proposal_id":
            pending = [
                (p["proposal_id"], f"{t.money(p.get('amount'), str(p.get('currency', '')))}")
                for p in view.limit_proposals
                if p.get("status", "proposed") == "proposed"
            ]
            f = FormField(name, label, "select", need, choices=pending)
        elif shape.get("type") == "boolean":
            f = FormField(name, label, "checkbox", False, value="on" if prop.get("default") else "")
        elif shape.get("format") == "date":
            f = FormField(name, label, "date", need)
        elif "enum" in shape:
            f = FormField(name, label, "select", need, choices=[(str(v), str(v)) for v in shape["enum"]])
        elif name == "amount":
            f = FormField(name, label, "number", need)
        elif name in _LONG or int(shape.get("maxLength", 0)) > 200:
            f = FormField(name, label, "textarea", need)
        else:
            f = FormField(name, label, "text", need)
        if name in values:
            f.value = values[name]
        fields.append(f)
    return fields


def _letter_label(letter: dict[str, Any], t: Translator) -> str:
    return f"{letter['letter_id']} · {str(letter.get('level', '')).replace('_', ' ')} · {t.day(letter['rendered_at'])}"


def _payload(action: str, form: Any) -> dict[str, Any]:
    """The action's request from a posted form (fields left empty are left out)."""
    model = actions.ACTIONS[action]
    payload: dict[str, Any] = {"request_id": str(form.get("request_id", ""))}
    for name, info in model.model_fields.items():
        if name in ("request_id", "promise", "dispute"):
            continue
        if name == "invoice_ids":
            payload[name] = [str(v) for v in form.getlist(name)]
        elif name == "instalments":
            payload[name] = _instalments(str(form.get(name, "")))
        elif info.annotation is bool:
            payload[name] = form.get(name) == "on"
        else:
            value = str(form.get(name, "")).strip()
            if value:
                payload[name] = value
    if action == "log_call" and form.get("with_promise") == "on":
        payload["promise"] = {
            "promised_date": str(form.get("promised_date", "")),
            "amount": str(form.get("promise_amount", "")),
            "currency": str(form.get("promise_currency", "")),
            "invoice_ids": [str(v) for v in form.getlist("promise_invoice_ids")],
        }
    return payload


def _instalments(text: str) -> list[dict[str, str]]:
    rows = []
    for line in text.splitlines():
        parts = line.replace(";", " ").split()
        if len(parts) == 2:
            try:
                rows.append({"due_date": date.fromisoformat(parts[0]).isoformat(), "amount": str(Decimal(parts[1]))})
            except (ValueError, InvalidOperation):
                rows.append({"due_date": parts[0], "amount": parts[1]})
    return rows


def _form_page(
    request: Request,
    user: Principal,
    tenant: str,
    customer_id: str,
    action: str,
    values: dict[str, str],
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    ports = ports_of(request)
    state = customer_state(ports.ledger(), tenant, customer_id)
    view = customer_view(state, today(ports))
    t = Translator(choose(request))
    context = {
        "tenant": tenant,
        "customer": view,
        "action": action,
        "fields": _fields(action, t, view, today(ports), values),
        "request_id": values.get("request_id") or secrets.token_urlsafe(16),
        "error": error,
        "values": values,
    }
    return render(request, "action.html", context, user, status)


def _check_action(user: Principal, tenant: str, action: str) -> None:
    require_tenant(user, tenant)
    if action not in actions.ACTIONS:
        raise HTTPException(status_code=404, detail="not found")
    if not allowed(user.roles_in(tenant), action):
        raise HTTPException(status_code=403, detail=f"your roles in {tenant} do not allow this action")


@router.get("/t/{tenant}/customers/{customer_id}/actions/{action}")
def action_form(request: Request, tenant: str, customer_id: str, action: str, user: User) -> HTMLResponse:
    _check_action(user, tenant, action)
    values = {k: v for k, v in request.query_params.items() if k != "lang"}
    return _form_page(request, user, tenant, customer_id, action, values)


@router.post("/t/{tenant}/customers/{customer_id}/actions/{action}", dependencies=[Depends(check_csrf)])
async def action_post(request: Request, tenant: str, customer_id: str, action: str, user: User) -> Response:
    _check_action(user, tenant, action)
    form = await request.form()
    payload = _payload(action, form)
    try:
        result = run_action(ports_of(request), user, tenant, customer_id, action, payload, "workspace")
    except HTTPException as refused:
        if refused.status_code in (404, 403):
            raise
        values = {k: str(v) for k, v in form.items() if k != "csrf_token"}
        return _form_page(request, user, tenant, customer_id, action, values, str(refused.detail), 422)
    target = f"/t/{tenant}/customers/{customer_id}?done={action}"
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=204, headers={"HX-Redirect": target})
    del result
    return RedirectResponse(target, status_code=303)


# ----------------------------------------------------------------------------------------------- evidence
@router.get("/t/{tenant}/evidence/{command_id}.eml")
def evidence_eml_page(request: Request, tenant: str, command_id: str, user: User) -> Response:
    require_tenant(user, tenant)
    ports = ports_of(request)
    return eml_response(evidence_of(ports, ports.ledger(), tenant, command_id))


@router.get("/t/{tenant}/evidence/{command_id}")
def evidence_page(request: Request, tenant: str, command_id: str, user: User) -> HTMLResponse:
    require_tenant(user, tenant)
    ports = ports_of(request)
    found = evidence_view(evidence_of(ports, ports.ledger(), tenant, command_id))
    return render(request, "evidence.html", {"tenant": tenant, "evidence": found}, user)


# ----------------------------------------------------------------------------------------------- admin
class _Row(BaseModel):
    customer_id: str
    command_id: str
    kind: str
    created_at: str
    attempts: int
    last_error: str


def _undelivered(request: Request, tenant: str, dead: bool) -> list[_Row]:
    with ports_of(request).engine.connect() as conn:
        commands = outbox.undelivered(conn, dead=dead, tenant=tenant, limit=500)
    return [
        _Row(
            customer_id=c.customer_id,
            command_id=c.command_id,
            kind=c.kind,
            created_at=c.created_at.isoformat(timespec="seconds"),
            attempts=c.attempts,
            last_error=c.last_error or "",
        )
        for c in commands
    ]


def _admin(user: Principal, tenant: str) -> None:
    require_tenant(user, tenant)
    if not allowed(user.roles_in(tenant), ADMIN):
        raise HTTPException(status_code=403, detail="administrators only")


@router.get("/t/{tenant}/admin/outbox")
def outbox_page(request: Request, tenant: str, user: User) -> HTMLResponse:
    _admin(user, tenant)
    rows = _undelivered(request, tenant, dead=False)
    return render(request, "outbox.html", {"tenant": tenant, "rows": rows, "dead": False}, user)


@router.get("/t/{tenant}/admin/dead-letters")
def dead_letters_page(request: Request, tenant: str, user: User) -> HTMLResponse:
    _admin(user, tenant)
    rows = _undelivered(request, tenant, dead=True)
    return render(request, "outbox.html", {"tenant": tenant, "rows": rows, "dead": True}, user)
