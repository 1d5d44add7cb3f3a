"""A customer's account as of an instant in the API and on the workspace page, on a SQLite ledger: both readings,
the late records between them, the roles and the tenant scoping of every other customer read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.ledger.store import Incoming
from tests.factories import payment
from tests.unit.workspace.web import AT, CUSTOMER, OTHER, TENANT, THEIRS, Web, json_of, principal, web

API = f"/api/v1/tenants/{TENANT}/customers/{CUSTOMER}/as-of"
PAGE = f"/t/{TENANT}/customers/{CUSTOMER}/as-of"


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Web]:
    yield from web(sqlite_url)


def late_payment(app: Web) -> str:
    """Given the seeded account recorded, an instant T, then a payment of the 19th (before T) recorded after T."""
    time.sleep(0.01)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    ev = payment("PAY-1", "120.00", received_on="2026-11-19", allocations={"INV-2": "120.00"})
    [outcome] = app.ledger.record([Incoming(TENANT, CUSTOMER, ev.event_id, ev.event_type, ev.data, AT)])
    assert outcome.status == "applied"
    return between


def balances(reading: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["currency"], s["balance"]) for s in reading["customer"]["summary"]]


def test_both_readings_differ_by_the_payment_recorded_after_the_instant(app: Web) -> None:
    at = late_payment(app)
    body = json_of(app.client.get(API, params={"at": at}))
    known, occurred = body["readings"]["known"], body["readings"]["occurred"]
    assert known["meaning"].startswith("what relance knew") and occurred["meaning"].startswith("the business view")
    assert balances(known) == [("EUR", "1500.00"), ("USD", "200.00")]
    assert balances(occurred) == [("EUR", "1380.00"), ("USD", "200.00")]
    assert occurred["version"] == known["version"] + 1
    [late] = body["late_records"]
    assert late["event_id"] == "pay-PAY-1" and late["summary"].startswith("payment PAY-1 of 120.00 EUR occurred on")
    # And one reading alone, by name
    only = json_of(app.client.get(API, params={"at": at, "reading": "known"}))
    assert list(only["readings"]) == ["known"] and balances(only["readings"]["known"]) == balances(known)


def test_a_date_is_the_end_of_that_day_and_before_the_first_event_there_is_nothing(app: Web) -> None:
    # Everything was recorded today: as of the 19th relance knew nothing, though it had all occurred
    body = json_of(app.client.get(API, params={"at": "2026-11-19"}))
    assert body["as_of"] == "2026-11-19T23:59:59.999999Z"
    assert body["readings"]["known"] == {
        "reading": "known",
        "meaning": "what relance knew at that instant (events recorded up to it)",
        "version": 0,
        "customer": None,
    }
    invoices = body["readings"]["occurred"]["customer"]["open_invoices"]
    assert {i["invoice_id"]: i["days_late"] for i in invoices} == {"INV-1": 49, "INV-2": 35, "INV-3": 35}
    before = json_of(app.client.get(API, params={"at": "2026-11-18"}))
    assert all(r["customer"] is None for r in before["readings"].values())
    assert before["first_event_at"] == "2026-11-19T08:00:00Z"


def test_a_bad_instant_or_reading_is_a_422_saying_what_to_write(app: Web) -> None:
    bad = app.client.get(API, params={"at": "yesterday"})
    assert bad.status_code == 422 and "not an ISO 8601 instant or date" in bad.json()["detail"]
    naive = app.client.get(API, params={"at": "2026-11-19T10:00:00"})
    assert naive.status_code == 422 and "no time zone" in naive.json()["detail"]
    assert app.client.get(API, params={"at": "2026-11-19", "reading": "guessed"}).status_code == 422
    assert app.client.get(API).status_code == 422  # at is required


@pytest.mark.parametrize("role", ["collector", "credit_manager", "auditor", "administrator"])
def test_every_role_reads_it_and_another_tenants_customer_is_a_404(app: Web, role: str) -> None:
    app.sign_in(principal("ann", acme_fr=role))
    assert app.client.get(API, params={"at": "2026-11-19"}).status_code == 200
    assert app.client.get(PAGE, params={"at": "2026-11-19"}).status_code == 200
    theirs = f"/api/v1/tenants/{OTHER}/customers/{THEIRS}/as-of"
    assert app.client.get(theirs, params={"at": "2026-11-19"}).status_code == 404
    assert app.client.get(f"/t/{OTHER}/customers/{THEIRS}/as-of", params={"at": "2026-11-19"}).status_code == 404
    # A customer the tenant does not have is a 404 like it, and so is the other tenant's customer under ours
    assert app.client.get(f"/api/v1/tenants/{TENANT}/customers/{THEIRS}/as-of?at=2026-11-19").status_code == 404
    assert app.client.get(f"/t/{TENANT}/customers/{THEIRS}/as-of?at=2026-11-19").status_code == 404


def test_a_user_without_a_role_in_the_tenant_gets_a_404(app: Web) -> None:
    app.sign_in(principal("zoe", globex_de="collector"))
    assert app.client.get(API, params={"at": "2026-11-19"}).status_code == 404
    assert app.client.get(PAGE, params={"at": "2026-11-19"}).status_code == 404


def test_the_customer_page_offers_the_form_and_the_page_shows_both_readings(app: Web) -> None:
    customer_page = app.client.get(f"/t/{TENANT}/customers/{CUSTOMER}")
    assert customer_page.status_code == 200
    assert f'action="/t/{TENANT}/customers/{CUSTOMER}/as-of"' in customer_page.text
    assert 'data-testid="as-of-form"' in customer_page.text and 'name="reading"' in customer_page.text
    at = late_payment(app)
    html = app.client.get(PAGE, params={"at": at}).text
    known, rest = html.split('data-testid="reading-occurred"')
    assert 'data-testid="reading-known"' in known and "what relance knew at that instant" in known
    assert 'data-testid="balance-known-EUR">€1,500.00<' in known
    assert 'data-testid="balance-occurred-EUR">€1,380.00<' in rest
    assert 'data-testid="late-records"' in rest and "payment PAY-1 of 120.00 EUR occurred on 2026-11-19" in rest
    # And ERP text stays inert here too
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # And one reading alone has no differences block; in French, the page's own words too
    one = app.client.get(PAGE, params={"at": "2026-11-19", "reading": "occurred", "lang": "fr"}).text
    assert 'data-testid="reading-known"' not in one and 'data-testid="late-records"' not in one
    assert "survenu : la situation d&#39;alors" in one


def test_the_page_asks_to_sign_in_first(sqlite_url: str) -> None:
    for holder in web(sqlite_url, signed_in_as_test_user=False):
        page = holder.client.get(PAGE, params={"at": "2026-11-19"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert holder.client.get(API, params={"at": "2026-11-19"}).status_code == 401
