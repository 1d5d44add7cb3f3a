"""The workspace's pages on a SQLite ledger: what each shows, hostile ERP text rendered inert, other tenants' pages a
404, the action forms (posted twice, recorded once), the e-mail as sent, the admin pages, both languages."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.unit.workspace.web import COMMAND, CUSTOMER, OTHER, TENANT, THEIRS, Web, principal, web


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Web]:
    yield from web(sqlite_url)


def page(app: Web, path: str, status: int = 200) -> str:
    response = app.client.get(path)
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    return str(response.text)


def test_home_opens_the_first_tenants_agenda(app: Web) -> None:
    response = app.client.get("/")
    assert response.status_code == 303 and response.headers["location"] == f"/t/{TENANT}/agenda"


def test_agenda_groups_items_per_customer_with_invoice_numbers(app: Web) -> None:
    html = page(app, f"/t/{TENANT}/agenda?who=team")
    assert 'data-testid="agenda-item" data-customer="C-0042" data-kind="phone_call"' in html
    assert "F-2026-&lt;i&gt;1&lt;/i&gt;" in html and "€1,500.00" in html
    filtered = page(app, f"/t/{TENANT}/agenda?who=team&kind=hand_over")
    assert 'data-testid="agenda-item"' not in filtered


def test_the_agenda_for_me_leaves_out_what_is_assigned_to_someone_else(app: Web) -> None:
    app.sign_in(principal("carl", acme_fr="credit_manager"))
    url = f"/api/v1/tenants/{TENANT}/customers/{CUSTOMER}/actions/assign_task"
    assert app.client.post(url, json={"request_id": "a-1", "task_id": "call-1", "assignee": "bob"}).status_code == 201
    mine = page(app, f"/t/{TENANT}/agenda?who=me")
    team = page(app, f"/t/{TENANT}/agenda?who=team")
    assert 'data-kind="phone_call"' not in mine and 'data-kind="phone_call"' in team


def test_hostile_erp_text_renders_inert_everywhere(app: Web) -> None:
    for path in (
        f"/t/{TENANT}/agenda?who=team",
        f"/t/{TENANT}/customers",
        f"/t/{TENANT}/customers/{CUSTOMER}",
        f"/t/{TENANT}/customers/{CUSTOMER}/actions/log_call",
    ):
        html = page(app, path)
        assert "<script>alert(1)</script>" not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
        assert "{{ 7*7 }}" in html and "49 \u202eevil" not in html, path  # template syntax in data stays text
        assert "\u202e" not in html and re.search(r"<bdi>[^<]*\[U\+202E\]evil", html), path  # shown, not obeyed
        assert "<i>1</i>" not in html, path
    scripts = re.findall(r"<script[^>]*>", page(app, f"/t/{TENANT}/customers/{CUSTOMER}"))
    assert scripts == ['<script src="/static/htmx.min.js" defer>']  # no inline script anywhere


def test_customer_page_shows_the_account_per_currency_invoices_and_timeline(app: Web) -> None:
    html = page(app, f"/t/{TENANT}/customers/{CUSTOMER}")
    assert "€1,500.00" in html and "US$200.00" in html  # per currency, never added up
    assert "€1,700.00" not in html
    assert 'data-testid="open-invoices"' in html and "first" in html
    assert 'data-testid="timeline"' in html
    types = re.findall(r'data-testid="timeline-entry" data-type="([^"]+)"', html)
    assert types[0] == "reminder.sent" and types[-1] == "customer.upserted" and len(types) == 8
    assert f'href="/t/{TENANT}/evidence/{COMMAND}"' in html
    for action in ("log_call", "add_note", "record_promise", "open_dispute", "complete_task"):
        assert f'data-action="{action}"' in html
    assert 'data-action="pause"' not in html  # a collector's page offers a collector's actions


def test_the_page_speaks_french_when_asked(app: Web) -> None:
    html = page(app, f"/t/{TENANT}/customers/{CUSTOMER}?lang=fr")
    assert "Factures ouvertes" in html and "1\u202f500,00\xa0€" in html
    assert app.client.cookies.get("relance_lang") == "fr"
    assert "Factures ouvertes" in page(app, f"/t/{TENANT}/customers/{CUSTOMER}")
    app.client.cookies.clear()
    response = app.client.get(f"/t/{TENANT}/customers", headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"})
    assert "Clients" in response.text and 'lang="fr"' in response.text


@pytest.mark.parametrize(
    "path",
    [
        f"/t/{OTHER}/agenda",
        f"/t/{OTHER}/customers",
        f"/t/{OTHER}/customers/{THEIRS}",
        f"/t/{TENANT}/customers/{THEIRS}",
        f"/t/{OTHER}/customers/{THEIRS}/actions/add_note",
        f"/t/{OTHER}/evidence/{COMMAND}",
        f"/t/{OTHER}/evidence/{COMMAND}.eml",
        f"/t/{TENANT}/customers/NO-SUCH",
        "/t/no-such-tenant/agenda",
    ],
)
def test_another_tenants_page_is_a_404_like_an_unknown_one(app: Web, path: str) -> None:
    html = page(app, path, 404)
    assert "Not found" in html and "Globex" not in html


def test_a_posted_form_records_once_and_returns_to_the_customer(app: Web) -> None:
    form = page(app, f"/t/{TENANT}/customers/{CUSTOMER}/actions/log_call?task_id=call-1")
    request_id = re.search(r'name="request_id" value="([^"]+)"', form)
    assert request_id and 'name="csrf_token"' in form and 'data-testid="action-submit"' in form
    for name in ("outcome", "note", "next_action_on", "with_promise", "promised_date", "promise_amount"):
        assert f'name="{name}"' in form
    fields = {
        "request_id": request_id.group(1),
        "outcome": "promised",
        "note": "Spoke to <b>Mme Martin</b>",
        "task_id": "call-1",
        "with_promise": "on",
        "promised_date": "2026-12-10",
        "promise_amount": "1000.00",
        "promise_currency": "EUR",
        "promise_invoice_ids": "INV-1",
    }
    url = f"/t/{TENANT}/customers/{CUSTOMER}/actions/log_call"
    first = app.client.post(url, data=fields)
    assert first.status_code == 303, first.text[:800]
    assert first.headers["location"] == f"/t/{TENANT}/customers/{CUSTOMER}?done=log_call"
    assert app.client.post(url, data=fields).status_code == 303  # the same form posted again
    stream = app.ledger.read_stream(TENANT, CUSTOMER)
    calls = [e for e in stream if e.event_type == "call.logged"]
    assert len(calls) == 1 and calls[0].metadata["source"] == "workspace" and calls[0].metadata["author"] == "ann"
    assert any(e.event_type == "promise_to_pay.recorded" for e in stream)
    html = page(app, f"/t/{TENANT}/customers/{CUSTOMER}?done=log_call")
    assert 'data-type="call.logged"' in html and "Spoke to &lt;b&gt;Mme Martin&lt;/b&gt;" in html


def test_a_refused_form_is_shown_again_with_the_reason(app: Web) -> None:
    url = f"/t/{TENANT}/customers/{CUSTOMER}/actions/record_promise"
    fields = {"request_id": "p-1", "promised_date": "2020-01-01", "amount": "10.00", "currency": "EUR"}
    response = app.client.post(url, data=fields)
    assert response.status_code == 422 and 'role="alert"' in response.text
    assert 'value="2020-01-01"' in response.text


def test_an_htmx_form_is_a_fragment_and_its_post_redirects_by_header(app: Web) -> None:
    headers = {"HX-Request": "true"}
    fragment = app.client.get(f"/t/{TENANT}/customers/{CUSTOMER}/actions/add_note", headers=headers)
    assert fragment.status_code == 200 and "<html" not in fragment.text and "<form" in fragment.text
    url = f"/t/{TENANT}/customers/{CUSTOMER}/actions/add_note"
    response = app.client.post(url, data={"request_id": "n-1", "text": "hello"}, headers=headers)
    assert response.status_code == 204 and response.headers["HX-Redirect"].endswith("?done=add_note")


def test_a_form_the_role_does_not_allow_is_a_403(app: Web) -> None:
    assert app.client.get(f"/t/{TENANT}/customers/{CUSTOMER}/actions/pause").status_code == 403
    app.sign_in(principal("audrey", acme_fr="auditor"))
    response = app.client.post(
        f"/t/{TENANT}/customers/{CUSTOMER}/actions/add_note", data={"request_id": "x", "text": "hi"}
    )
    assert response.status_code == 403
    assert 'data-action="' not in page(app, f"/t/{TENANT}/customers/{CUSTOMER}")


def test_the_email_page_shows_it_as_sent_with_its_verdict(app: Web) -> None:
    html = page(app, f"/t/{TENANT}/evidence/{COMMAND}")
    subject = re.search(r'data-testid="email-subject"><bdi>([^<]*)</bdi>', html)
    assert subject and subject.group(1) == "Relance : facture &lt;b&gt;INV-1&lt;/b&gt; échue"
    assert 'data-testid="email-body"' in html and "&lt;script&gt;x()&lt;/script&gt;" in html
    assert "Intact" in html and f'href="/t/{TENANT}/evidence/{COMMAND}.eml"' in html
    eml = app.client.get(f"/t/{TENANT}/evidence/{COMMAND}.eml")
    assert eml.status_code == 200 and eml.headers["content-type"].startswith("message/rfc822")
    assert "attachment" in eml.headers["content-disposition"]
    page(app, f"/t/{TENANT}/evidence/unknown", 404)


def test_the_admin_pages_are_for_administrators(app: Web) -> None:
    page(app, f"/t/{TENANT}/admin/outbox", 403)
    page(app, f"/t/{TENANT}/admin/dead-letters", 403)
    app.sign_in(principal("root", acme_fr="administrator"))
    url = f"/api/v1/tenants/{TENANT}/customers/{CUSTOMER}/actions/open_dispute"
    assert app.client.post(url, json={"request_id": "d", "invoice_id": "INV-1", "reason": "x"}).status_code == 403
    app.sign_in(principal("root", acme_fr="administrator,collector"))
    assert app.client.post(url, json={"request_id": "d", "invoice_id": "INV-1", "reason": "x"}).status_code == 201
    html = page(app, f"/t/{TENANT}/admin/outbox")
    assert 'data-testid="outbox"' in html and "erp.dispute_opened" in html
    assert 'data-testid="dead-letters"' in page(app, f"/t/{TENANT}/admin/dead-letters")


def test_static_files_are_served(app: Web) -> None:
    assert app.client.get("/static/relance.css").status_code == 200
    assert app.client.get("/static/htmx.min.js").status_code == 200
