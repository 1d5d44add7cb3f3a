"""Letters in the workspace, with its real sign-in: the PDF streamed to whoever may read the customer, another tenant's
letter a 404, and posting, delivery and return recorded through forms that need their CSRF token and a working role."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from services.workspace.users import UserStore
from shared.contracts import events
from shared.ledger import letters
from shared.ledger.store import Incoming, Ledger
from tests.unit.workspace.test_signed_in import PASSWORD, csrf_of
from tests.unit.workspace.web import AT, CUSTOMER, OTHER, TENANT, THEIRS, Web, web

PDF = b"%PDF-1.7\n% the formal notice of C-0042\n%%EOF\n"


def rendered(ledger: Ledger, tenant: str, customer_id: str, command_id: str, pdf: bytes) -> str:
    kept = letters.store(
        ledger.engine, tenant=tenant, customer_id=customer_id, command_id=command_id, kind="reminder", pdf=pdf, pages=1
    )
    event = events.LetterRendered(
        letter_id=kept.letter_id,
        command_id=command_id,
        kind="reminder",
        sha256=kept.sha256,
        pages=1,
        reminder_id=command_id,
        level="formal_notice",
    )
    metadata = {"source": "notifier", "command_id": command_id}
    item = Incoming.of(
        event, stream=(tenant, customer_id), event_id=f"ntf-{command_id}", occurred_at=AT, metadata=metadata
    )
    assert [o.status for o in ledger.record([item])] == ["applied"]
    return kept.letter_id


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Web]:
    for holder in web(sqlite_url, signed_in_as_test_user=False):
        users = UserStore(holder.ledger.engine)
        for login, role in (("ann", "collector"), ("audrey", "auditor")):
            users.add(login, login.title(), password=PASSWORD)
            users.grant(login, TENANT, role)
        yield holder


@pytest.fixture
def ours(app: Web) -> str:
    return rendered(app.ledger, TENANT, CUSTOMER, "esc-notice-1", PDF)


@pytest.fixture
def theirs(app: Web) -> str:
    return rendered(app.ledger, OTHER, THEIRS, "esc-notice-9", b"%PDF-1.7 Globex's letter")


def sign_in(app: Web, login: str = "ann") -> None:
    form = app.client.get("/login")
    fields = {"login": login, "password": PASSWORD, "csrf_token": csrf_of(form.text), "next": "/"}
    assert app.client.post("/login", data=fields).status_code == 303


def test_the_pdf_is_the_stored_bytes_as_an_attachment_for_any_reader_of_the_tenant(app: Web, ours: str) -> None:
    url = f"/t/{TENANT}/customers/{CUSTOMER}/letters/{ours}.pdf"
    assert app.client.get(url).status_code == 303  # sign in first
    sign_in(app, "audrey")  # an auditor reads, and acts on nothing
    response = app.client.get(url)
    assert response.status_code == 200 and response.content == PDF
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == f'attachment; filename="{ours}.pdf"'
    page = app.client.get(f"/t/{TENANT}/customers/{CUSTOMER}").text
    assert f'href="/t/{TENANT}/customers/{CUSTOMER}/letters/{ours}.pdf"' in page
    assert 'data-action="letter_posted"' not in page


def test_another_tenants_letter_is_a_404_however_it_is_asked_for(app: Web, ours: str, theirs: str) -> None:
    sign_in(app)
    assert app.client.get(f"/t/{OTHER}/customers/{THEIRS}/letters/{theirs}.pdf").status_code == 404
    assert app.client.get(f"/t/{TENANT}/customers/{THEIRS}/letters/{theirs}.pdf").status_code == 404
    assert app.client.get(f"/t/{TENANT}/customers/{CUSTOMER}/letters/{theirs}.pdf").status_code == 404
    assert app.client.get(f"/t/{TENANT}/customers/{CUSTOMER}/letters/L-UNKNOWN.pdf").status_code == 404


def test_a_collector_records_the_posting_then_the_delivery_through_forms(app: Web, ours: str) -> None:
    sign_in(app)
    page = app.client.get(f"/t/{TENANT}/customers/{CUSTOMER}").text
    assert 'data-testid="letters"' in page and 'data-action="letter_posted"' in page
    url = f"/t/{TENANT}/customers/{CUSTOMER}/actions/letter_posted"
    form = app.client.get(f"{url}?letter_id={ours}").text
    request_id = re.search(r'name="request_id" value="([^"]+)"', form)
    assert request_id and 'name="tracking_number"' in form and f'value="{ours}"' in form
    fields = {
        "request_id": request_id.group(1),
        "letter_id": ours,
        "posted_on": "2026-11-20",
        "tracking_number": "1A 234 567 8901 2",
    }
    # Without its CSRF token: refused, nothing recorded
    assert app.client.post(url, data=fields).status_code == 403
    assert app.ledger.state(TENANT, CUSTOMER).letters[ours]["status"] == "rendered"
    # With it: recorded once, with who and where
    fields["csrf_token"] = csrf_of(form)
    assert app.client.post(url, data=fields).status_code == 303
    assert app.client.post(url, data=fields).status_code == 303  # posted twice, recorded once
    [posted] = [e for e in app.ledger.read_stream(TENANT, CUSTOMER) if e.event_type == "letter.posted"]
    assert (posted.metadata["source"], posted.metadata["author"]) == ("workspace", "ann")
    # A delivery before the posting is refused with the reason; on the day it is recorded
    delivered = f"/t/{TENANT}/customers/{CUSTOMER}/actions/letter_delivered"
    early = {"request_id": "d-1", "letter_id": ours, "delivered_on": "2026-11-19", "csrf_token": csrf_of(form)}
    refused = app.client.post(delivered, data=early)
    assert refused.status_code == 422 and "it was posted on 2026-11-20" in refused.text
    on_time = {**early, "request_id": "d-2", "delivered_on": "2026-11-20"}
    assert app.client.post(delivered, data=on_time).status_code == 303
    # And the customer page and its timeline show the proof
    page = app.client.get(f"/t/{TENANT}/customers/{CUSTOMER}").text
    assert "1A 234 567 8901 2" in page and 'data-type="letter.delivered"' in page
    assert "delivered on" in page.lower() or "distribuée le" in page.lower()


def test_an_auditor_cannot_record_a_posting(app: Web, ours: str) -> None:
    sign_in(app, "audrey")
    url = f"/t/{TENANT}/customers/{CUSTOMER}/actions/letter_posted"
    assert app.client.get(f"{url}?letter_id={ours}").status_code == 403
    token = csrf_of(app.client.get(f"/t/{TENANT}/customers/{CUSTOMER}").text)
    fields = {"request_id": "x", "letter_id": ours, "posted_on": "2026-11-20", "csrf_token": token}
    assert app.client.post(url, data=fields).status_code == 403
    assert "posted_on" not in app.ledger.state(TENANT, CUSTOMER).letters[ours]


def test_a_letter_is_posted_once(app: Web, ours: str) -> None:
    sign_in(app)
    token = csrf_of(app.client.get(f"/t/{TENANT}/customers/{CUSTOMER}").text)
    url = f"/t/{TENANT}/customers/{CUSTOMER}/actions/letter_posted"
    first = {"request_id": "p-1", "letter_id": ours, "posted_on": "2026-11-20", "csrf_token": token}
    assert app.client.post(url, data=first).status_code == 303
    second = app.client.post(url, data={**first, "request_id": "p-2"})
    assert second.status_code == 422 and "already posted" in second.text
