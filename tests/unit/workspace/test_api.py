"""The JSON API on a SQLite ledger: every endpoint, other tenants' data answered 404, the actions' status codes, and
the OpenAPI document kept current in shared/contracts/schema/openapi.json."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.workspace import actions
from services.workspace.app import openapi_document
from services.workspace.roles import PERMISSIONS
from tests.unit.workspace.web import (
    COMMAND,
    CUSTOMER,
    HOSTILE,
    OTHER,
    TENANT,
    THEIRS,
    Web,
    json_of,
    mime,
    principal,
    web,
)

API = "/api/v1"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Web]:
    yield from web(sqlite_url)


def test_me_names_the_user_and_their_roles_per_tenant(app: Web) -> None:
    assert json_of(app.client.get(f"{API}/me")) == {
        "login": "ann",
        "display_name": "Ann",
        "tenants": [{"tenant": TENANT, "roles": ["collector"]}],
    }


def test_customers_list_amounts_per_currency_never_summed_across(app: Web) -> None:
    body = json_of(app.client.get(f"{API}/tenants/{TENANT}/customers"))
    [row] = body["customers"]
    assert row["customer_id"] == CUSTOMER and row["name"] == HOSTILE
    assert row["balances"] == [{"amount": "1500.00", "currency": "EUR"}, {"amount": "200.00", "currency": "USD"}]
    assert json_of(app.client.get(f"{API}/tenants/{TENANT}/customers", params={"q": "nobody"}))["customers"] == []


def test_customer_has_its_summary_open_invoices_levels_promises(app: Web) -> None:
    body = json_of(app.client.get(f"{API}/tenants/{TENANT}/customers/{CUSTOMER}"))
    assert [(s["currency"], s["balance"], s["overdue"]) for s in body["summary"]] == [
        ("EUR", "1500.00", "1500.00"),
        ("USD", "200.00", "200.00"),
    ]
    invoices = {i["invoice_id"]: i for i in body["open_invoices"]}
    assert invoices["INV-1"]["number"] == "F-2026-<i>1</i>" and invoices["INV-1"]["level"] == "first"
    assert invoices["INV-2"]["next_step"] == "promised for 2026-12-15"
    assert [p["promise_id"] for p in body["promises"]] == ["P-1"]
    assert [t["task_id"] for t in body["tasks"]] == ["call-1"]
    assert body["block"] is None and body["pause"] is None


def test_timeline_is_the_whole_stream_newest_first_with_the_email_openable(app: Web) -> None:
    body = json_of(app.client.get(f"{API}/tenants/{TENANT}/customers/{CUSTOMER}/timeline"))
    entries = body["entries"]
    assert [e["version"] for e in entries] == list(range(len(entries), 0, -1))
    sent = next(e for e in entries if e["event_type"] == "reminder.sent")
    assert sent["category"] == "email" and sent["evidence"] == COMMAND


def test_agenda_names_invoice_numbers_and_filters_by_kind(app: Web) -> None:
    body = json_of(app.client.get(f"{API}/tenants/{TENANT}/agenda", params={"on": "2026-11-20"}))
    [call] = [i for i in body["items"] if i["kind"] == "phone_call"]
    assert call["customer_id"] == CUSTOMER and call["invoices"] == ["F-2026-<i>1</i>", "F-INV-2"]
    assert call["at_risk"] == "1500.00" and call["currency"] == "EUR"
    kinds = {i["kind"] for i in json_of(app.client.get(f"{API}/tenants/{TENANT}/agenda?kind=nothing"))["items"]}
    assert kinds == set()


def test_evidence_gives_the_message_its_verdict_and_the_exact_bytes(app: Web) -> None:
    body = json_of(app.client.get(f"{API}/tenants/{TENANT}/evidence/{COMMAND}"))
    assert body["verified"] is True and body["recorded_sha256"] == hashlib.sha256(mime()).hexdigest()
    assert body["subject"] == "Relance : facture <b>INV-1</b> échue" and "reste due" in body["text"]
    eml = app.client.get(f"{API}/tenants/{TENANT}/evidence/{COMMAND}/eml")
    assert eml.status_code == 200 and eml.content == mime()
    assert eml.headers["content-type"].startswith("message/rfc822")
    assert app.client.get(f"{API}/tenants/{TENANT}/evidence/nope").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        f"/tenants/{OTHER}/customers",
        f"/tenants/{OTHER}/customers/{THEIRS}",
        f"/tenants/{OTHER}/customers/{THEIRS}/timeline",
        f"/tenants/{OTHER}/agenda",
        f"/tenants/{OTHER}/evidence/{COMMAND}",
        f"/tenants/{TENANT}/customers/{THEIRS}",
        "/tenants/no-such-tenant/customers",
        f"/tenants/{TENANT}/customers/NO-SUCH",
    ],
)
def test_another_tenants_data_is_a_404_exactly_like_unknown_data(app: Web, path: str) -> None:
    response = app.client.get(API + path)
    assert response.status_code == 404 and response.json() == {"detail": "not found"}


def test_another_tenants_customer_cannot_be_acted_on(app: Web) -> None:
    body = {"request_id": "r-1", "text": "hello"}
    for tenant, customer in ((OTHER, THEIRS), (TENANT, THEIRS)):
        response = app.client.post(f"{API}/tenants/{tenant}/customers/{customer}/actions/add_note", json=body)
        assert response.status_code == 404
    assert app.ledger.state(OTHER, THEIRS).version == 2


def test_an_action_is_applied_once_per_request_id(app: Web) -> None:
    url = f"{API}/tenants/{TENANT}/customers/{CUSTOMER}/actions/add_note"
    first = app.client.post(url, json={"request_id": "r-1", "text": "called, <b>no answer</b>"})
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "applied"
    again = app.client.post(url, json={"request_id": "r-1", "text": "called, <b>no answer</b>"})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert again.json()["event_ids"] == first.json()["event_ids"]
    other = app.client.post(url, json={"request_id": "r-1", "text": "something else"})
    assert other.status_code == 409
    stream = app.ledger.read_stream(TENANT, CUSTOMER)
    [note] = [e for e in stream if e.event_type == "note.added"]
    assert {k: note.metadata[k] for k in ("source", "author", "request_id")} == {
        "source": "api",
        "author": "ann",
        "request_id": "r-1",
    }


def test_an_invalid_request_is_a_422(app: Web) -> None:
    url = f"{API}/tenants/{TENANT}/customers/{CUSTOMER}/actions/add_note"
    assert app.client.post(url, json={"request_id": "r-2"}).status_code == 422
    assert app.client.post(url, json={"request_id": "r-2", "text": "x", "extra": 1}).status_code == 422


@pytest.mark.parametrize("action", sorted(actions.ACTIONS))
def test_an_auditor_may_do_no_action(app: Web, action: str) -> None:
    app.sign_in(principal("audrey", acme_fr="auditor"))
    response = app.client.post(f"{API}/tenants/{TENANT}/customers/{CUSTOMER}/actions/{action}", json=_example(action))
    assert response.status_code == 403, response.text
    assert app.ledger.state(TENANT, CUSTOMER).version == 8


def test_a_collector_may_not_commit_the_company(app: Web) -> None:
    managers_only = sorted(a for a, roles in PERMISSIONS.items() if a in actions.ACTIONS and "collector" not in roles)
    assert managers_only == ["agree_plan", "decide_credit_limit", "pause", "resume", "waive_claim"]
    for action in managers_only:
        url = f"{API}/tenants/{TENANT}/customers/{CUSTOMER}/actions/{action}"
        assert app.client.post(url, json=_example(action)).status_code == 403


# In an order where each action can be done: a pause before its resume, a proposal before its decision
IN_ORDER = (
    "add_note",
    "log_call",
    "assign_task",
    "snooze_task",
    "complete_task",
    "record_promise",
    "open_dispute",
    "resolve_dispute",
    "agree_plan",
    "pause",
    "resume",
    "propose_credit_limit",
    "decide_credit_limit",
)


def test_each_action_through_the_api_is_recorded_once_with_its_author(app: Web) -> None:
    # the letters' actions need a letter: tests/unit/workspace/test_letters.py records them
    assert set(IN_ORDER) == set(actions.ACTIONS) - {
        "waive_claim",
        "letter_posted",
        "letter_delivered",
        "letter_returned",
    }
    app.sign_in(principal("carl", acme_fr="credit_manager"))
    for action in IN_ORDER:
        body = _example(action)
        if action == "decide_credit_limit":
            body["proposal_id"] = next(iter(app.ledger.state(TENANT, CUSTOMER).limit_proposals))
        url = f"{API}/tenants/{TENANT}/customers/{CUSTOMER}/actions/{action}"
        first = app.client.post(url, json=body)
        assert first.status_code == 201, (action, first.text)
        again = app.client.post(url, json=body)
        assert (again.status_code, again.json()["status"]) == (200, "duplicate"), action
        events = {e.event_id: e for e in app.ledger.read_stream(TENANT, CUSTOMER)}
        for event_id in first.json()["event_ids"]:
            assert events[event_id].metadata["author"] == "carl", action
            assert events[event_id].metadata["source"] == "api", action
    state = app.ledger.state(TENANT, CUSTOMER)
    assert state.pause is None and "P-1" in state.promises


def test_waiving_a_claim_the_invoice_does_not_owe_is_a_422(app: Web) -> None:
    app.sign_in(principal("carl", acme_fr="credit_manager"))
    url = f"{API}/tenants/{TENANT}/customers/{CUSTOMER}/actions/waive_claim"
    response = app.client.post(url, json=_example("waive_claim"))
    assert response.status_code == 422 and response.json()["detail"]


def _example(action: str) -> dict[str, object]:
    """A well-formed request of each action (what the 403 is checked with)."""
    examples: dict[str, dict[str, object]] = {
        "complete_task": {"task_id": "call-1", "outcome": "spoke to accounts"},
        "snooze_task": {"task_id": "call-1", "until": "2026-11-25"},
        "assign_task": {"task_id": "call-1", "assignee": "bob"},
        "log_call": {"outcome": "reached", "note": "spoke to accounts"},
        "add_note": {"text": "a note"},
        "record_promise": {"promised_date": "2026-12-01", "amount": "100.00", "currency": "EUR", "invoice_ids": []},
        "open_dispute": {"invoice_id": "INV-1", "reason": "wrong quantity"},
        "resolve_dispute": {"invoice_id": "INV-1"},
        "agree_plan": {
            "currency": "EUR",
            "invoice_ids": ["INV-1"],
            "instalments": [{"due_date": "2026-12-01", "amount": "1000.00"}],
        },
        "waive_claim": {"invoice_id": "INV-1", "kind": "indemnity", "reason": "goodwill"},
        "pause": {"reason": "negotiating", "until": "2026-12-31"},
        "resume": {"reason": "agreement signed"},
        "propose_credit_limit": {"currency": "EUR", "amount": "5000", "reason": "growing orders"},
        "decide_credit_limit": {"proposal_id": "p-1", "decision": "approve"},
        "letter_posted": {"letter_id": "L-1", "posted_on": "2026-11-20", "tracking_number": "1A 234"},
        "letter_delivered": {"letter_id": "L-1", "delivered_on": "2026-11-20"},
        "letter_returned": {"letter_id": "L-1", "returned_on": "2026-11-20", "reason": "not collected"},
    }
    return {"request_id": f"req-{action}", **examples[action]}


def test_openapi_is_typed_and_the_published_copy_is_current() -> None:
    document = openapi_document()
    paths = document["paths"]
    note = paths["/api/v1/tenants/{tenant}/customers/{customer_id}/actions/add_note"]["post"]
    assert note["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/AddNote"}
    assert {"201", "200", "403", "404", "409", "422"} <= set(note["responses"])
    assert "CustomerView" in document["components"]["schemas"]
    assert "/api/v1/ingest" in paths
    published = ROOT / "shared" / "contracts" / "schema" / "openapi.json"
    assert json.loads(published.read_text(encoding="utf-8")) == document, (
        "shared/contracts/schema/openapi.json is stale: run `relance contract export`"
    )


def test_openapi_is_served(app: Web) -> None:
    assert json_of(app.client.get("/api/openapi.json"))["info"]["title"] == "relance"
