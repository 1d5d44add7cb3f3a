"""A customer's account as it stood at an instant, in the API and on the workspace's customer page.

``GET /api/v1/tenants/{tenant}/customers/{customer_id}/as-of?at=...&reading=...`` and the page
``/t/{tenant}/customers/{customer_id}/as-of`` read the customer's whole stream and fold it as of ``at`` in the
readings of :mod:`shared.ledger.asof`: ``known`` (what relance knew then: the events recorded up to ``at``) and
``occurred`` (the business view then, with everything known today: the events that occurred up to ``at``), both when
no reading is asked for. Each reading's account is the customer view of :mod:`services.workspace.views` as of the
day of ``at`` (days late, pause and tasks on that day); the late records are the events that make the two differ.

Scoped as every customer read of :mod:`services.workspace.api`: a tenant the user holds no role in, or a customer it
does not have, is a 404; every role may read. ``at`` is an ISO 8601 instant with its offset, or a date meaning the
end of that day in UTC; anything else is a 422 saying what to write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from services.workspace.api import User, customer_state, ports_of, require_tenant
from services.workspace.auth import Principal, page_user
from services.workspace.pages import render
from services.workspace.views import CustomerView, customer_view
from shared.ledger.asof import READINGS, Reading, account_as_of, first_instant, happened, parse_instant
from shared.ledger.show import late_line

# The page's own words (kept here rather than in i18n.MESSAGES: only this page uses them)
WORDS: dict[str, dict[str, str]] = {
    "as_of": {"en": "As of", "fr": "Au"},
    "account_as_of": {"en": "Account as of {at}", "fr": "Compte au {at}"},
    "both": {"en": "both readings", "fr": "les deux lectures"},
    "known": {"en": "known: what relance knew then", "fr": "connu : ce que relance savait alors"},
    "occurred": {
        "en": "occurred: the business view then, with everything known today",
        "fr": "survenu : la situation d'alors, avec tout ce que l'on sait aujourd'hui",
    },
    "show": {"en": "Show", "fr": "Afficher"},
    "nothing_yet": {"en": "Nothing yet in this reading.", "fr": "Rien encore dans cette lecture."},
    "late_records": {
        "en": "Differences between the two readings: occurred by then, recorded after",
        "fr": "Différences entre les deux lectures : survenu avant, enregistré après",
    },
    "no_late_records": {
        "en": "None: everything that had occurred was already recorded.",
        "fr": "Aucune : tout ce qui était survenu était déjà enregistré.",
    },
    "back": {"en": "Back to the account today", "fr": "Retour au compte d'aujourd'hui"},
}

router = APIRouter(prefix="/api/v1", tags=["workspace"])
pages = APIRouter(include_in_schema=False)
PageUser = Annotated[Principal, Depends(page_user)]


class ReadingView(BaseModel):
    reading: Reading
    meaning: str
    version: int  # of the last event folded in; 0 when the reading holds nothing yet
    customer: CustomerView | None  # None when the reading holds nothing yet


class LateRecord(BaseModel):
    """An event that occurred by the instant but was recorded after it: in ``occurred``, not in ``known``."""

    version: int
    event_id: str
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    summary: str


class AccountAsOf(BaseModel):
    tenant: str
    customer_id: str
    as_of: datetime
    first_event_at: datetime  # before it, neither reading holds anything
    readings: dict[Reading, ReadingView]
    late_records: list[LateRecord]


def account(request: Request, user: Principal, tenant: str, customer_id: str, at: str, reading: str) -> AccountAsOf:
    """The account as of ``at`` (422 if ``at`` or ``reading`` cannot be read; 404 outside the user's tenants)."""
    require_tenant(user, tenant)
    try:
        instant = parse_instant(at)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=f"at: {exc}") from None
    if reading and reading not in READINGS:
        raise HTTPException(status_code=422, detail=f"reading: one of {', '.join(READINGS)}, or none for both")
    ledger = ports_of(request).ledger()
    customer_state(ledger, tenant, customer_id)  # 404 for a customer the tenant does not have
    stream = ledger.read_stream(tenant, customer_id)
    readings: tuple[Reading, ...] = (reading,) if reading else ("known", "occurred")
    found = account_as_of(stream, instant, readings, tenant=tenant, customer_id=customer_id)
    first = first_instant(stream)
    assert first is not None  # a known customer has events
    return AccountAsOf(
        tenant=tenant,
        customer_id=customer_id,
        as_of=found.at,
        first_event_at=first,
        readings={
            r: ReadingView(
                reading=r,
                meaning=READINGS[r],
                version=state.version,
                customer=customer_view(state, found.at.date()) if state.version else None,
            )
            for r, state in found.states.items()
        },
        late_records=[
            LateRecord(
                version=e.version,
                event_id=e.event_id,
                event_type=e.event_type,
                occurred_at=happened(e),
                recorded_at=e.recorded_at,
                summary=late_line(e),
            )
            for e in found.late
        ],
    )


At = Annotated[
    str,
    Query(
        description="an ISO 8601 instant with its offset (2026-09-30T18:00:00Z), or a date: the end of that day in UTC"
    ),
]
AskedReading = Annotated[
    Reading | None,
    Query(
        description="known: the events recorded up to the instant; occurred: those that occurred up to it; default both"
    ),
]


@router.get("/tenants/{tenant}/customers/{customer_id}/as-of", response_model=AccountAsOf)
def customer_as_of(
    request: Request, tenant: str, customer_id: str, at: At, user: User, reading: AskedReading = None
) -> AccountAsOf:
    """The customer's account at ``at`` in ``reading`` (both when not given), and the late records between them."""
    return account(request, user, tenant, customer_id, at, reading or "")


@pages.get("/t/{tenant}/customers/{customer_id}/as-of")
def customer_as_of_page(
    request: Request, tenant: str, customer_id: str, user: PageUser, at: str = "", reading: str = ""
) -> HTMLResponse:
    if not at:
        ports = ports_of(request)
        at = ports.now().date().isoformat()
    found = account(request, user, tenant, customer_id, at, reading)
    context = {
        "tenant": tenant,
        "account": found,
        "at": at,
        "reading": reading if reading in READINGS else "",
        "name": next((r.customer.name for r in found.readings.values() if r.customer and r.customer.name), ""),
    }
    return render(request, "asof.html", context, user)


def words(lang: str) -> dict[str, str]:
    """The as-of form's and page's words in ``lang`` (English for a language they lack); a template global."""
    return {key: text.get(lang) or text["en"] for key, text in WORDS.items()}
