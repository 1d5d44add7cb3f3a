"""The action layer on a real ledger (SQLite here; tests/integration/workspace/test_actions_pg.py on PostgreSQL):
every action applied with its author, sent again (a duplicate), its request id reused (409), each refusal, and the
engine seeing the effect as it sees the ERP's own events."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from services.escalation.engine import decide
from services.workspace import actions
from services.workspace.actions import ACTIONS, ActionRefused, perform
from shared.ledger.db import make_engine
from shared.ledger.schema import letters, outbox
from shared.ledger.store import Incoming, Ledger, Outcome
from shared.ledger.tasks import paused_on
from tests.factories import Ev, customer, invoice, payment, promise
from tests.unit.escalation.test_contacts import POLICY
from tests.unit.escalation.test_engine import RATES
from tests.unit.ledger.test_claims import claiming, fee

TENANT, CUSTOMER = "acme-fr", "C-0042"
NOW = datetime(2026, 3, 20, 9, tzinfo=UTC)  # INV-1 is 18 days late, INV-2 8 days
TODAY = NOW.date()
TASK = Ev(
    "task.created",
    {
        "task_id": "T-1",
        "kind": "phone_call",
        "due_on": "2026-03-18",
        "invoice_ids": ["INV-1"],
        "currency": "EUR",
        "amount_at_risk": "1000.00",
        "note": "call about INV-1",
    },
    "task-T-1",
)
LETTER_PDF = b"%PDF-1.7 the formal notice of INV-1"
LETTER = Ev(
    "letter.rendered",
    {
        "letter_id": "L-1",
        "command_id": "esc-notice-1",
        "kind": "reminder",
        "sha256": hashlib.sha256(LETTER_PDF).hexdigest(),
        "pages": 2,
        "reminder_id": "esc-notice-1",
        "level": "formal_notice",
    },
    "ntf-letter-1",
)
POSTED = {"letter_id": "L-1", "posted_on": "2026-03-20", "tracking_number": "1A 234 567 8901 2", "carrier": "La Poste"}
HISTORY = [
    customer(),  # language fr
    invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"),
    invoice("INV-2", "500.00", issue_date="2026-02-10", due_date="2026-03-12"),
    invoice("INV-3", "80.00", issue_date="2026-02-10", due_date="2026-03-12"),
    payment("P-3", "80.00", received_on="2026-03-15", allocations={"INV-3": "80.00"}),  # INV-3 is paid
    invoice("INV-4", "70.00", currency="USD", issue_date="2026-02-10", due_date="2026-03-12"),
    fee("INV-1"),
    claiming("INV-1"),
    TASK,
    LETTER,
]


def seed(ledger: Ledger) -> None:
    items = [
        Incoming(TENANT, CUSTOMER, e.event_id, e.event_type, e.data, NOW, metadata={"source": "erp"}) for e in HISTORY
    ]
    assert [o.status for o in ledger.record(items)] == ["applied"] * len(items)
    # The PDF its letter.rendered names, kept as the notifier keeps it (relance verify checks one against the other)
    kept = {k: LETTER.data[k] for k in ("letter_id", "command_id", "kind", "sha256", "pages")}
    with ledger.engine.begin() as conn:
        conn.execute(
            letters.insert(),
            [{**kept, "tenant": TENANT, "customer_id": CUSTOMER, "pdf": LETTER_PDF, "created_at": NOW}],
        )


@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[Ledger]:
    engine = make_engine(sqlite_url)
    ledger = Ledger(engine)
    seed(ledger)
    yield ledger
    engine.dispose()


def act(ledger: Ledger, action: str, request_id: str = "r-1", **payload: Any) -> actions.ActionResult:
    return perform(
        ledger,
        TENANT,
        CUSTOMER,
        action,
        {"request_id": request_id, **payload},
        author="claire",
        source="workspace",
        now=NOW,
    )


PROMISE: dict[str, Any] = {
    "promised_date": "2026-04-01",
    "amount": "1500.00",
    "currency": "EUR",
    "invoice_ids": ["INV-1", "INV-2"],
}
PLAN: dict[str, Any] = {
    "currency": "EUR",
    "invoice_ids": ["INV-1", "INV-2"],
    "instalments": [{"due_date": "2026-04-15", "amount": "750.00"}, {"due_date": "2026-05-15", "amount": "750.00"}],
}
# action -> (what happens first, the payload, the event types it records)
Case = tuple[list[tuple[str, dict[str, Any]]], dict[str, Any], list[str]]
CASES: dict[str, Case] = {
    "complete_task": ([], {"task_id": "T-1", "outcome": "reached, pays Friday"}, ["task.completed"]),
    "snooze_task": ([], {"task_id": "T-1", "until": "2026-03-25", "note": "on holiday"}, ["task.snoozed"]),
    "assign_task": ([], {"task_id": "T-1", "assignee": "marc"}, ["task.assigned"]),
    "log_call": (
        [],
        {
            "outcome": "promised",
            "note": "Spoke to the accountant.\nCheque on Friday.",
            "contact": "M. Martin",
            "next_action_on": "2026-04-02",
            "task_id": "T-1",
            "promise": PROMISE,
        },
        ["call.logged", "task.completed", "promise_to_pay.recorded"],
    ),
    "add_note": ([], {"text": "Prefers e-mail; accountant is M. Martin."}, ["note.added"]),
    "record_promise": ([], {**PROMISE, "note": "cheque"}, ["promise_to_pay.recorded"]),
    "open_dispute": ([], {"invoice_id": "INV-2", "reason": "two pallets missing"}, ["invoice.disputed"]),
    "resolve_dispute": (
        [("open_dispute", {"invoice_id": "INV-2", "reason": "two pallets missing"})],
        {"invoice_id": "INV-2", "resolution": "delivery note signed"},
        ["invoice.dispute_resolved"],
    ),
    "agree_plan": ([], PLAN, ["payment_plan.agreed", "payment_plan.confirmation_requested"]),
    "waive_claim": (
        [],
        {"invoice_id": "INV-1", "kind": "indemnity", "reason": "long-standing customer"},
        ["claim.waived"],
    ),
    "pause": ([], {"reason": "insolvency talks", "until": "2026-04-30"}, ["customer.paused"]),
    "resume": (
        [("pause", {"reason": "insolvency talks", "until": "2026-04-30"})],
        {"reason": "talks over"},
        ["customer.resumed"],
    ),
    "propose_credit_limit": (
        [],
        {"currency": "EUR", "amount": "5000.00", "reason": "steady payer"},
        ["credit_limit.proposed"],
    ),
    "decide_credit_limit": (
        [("propose_credit_limit", {"currency": "EUR", "amount": "5000.00", "reason": "steady payer"})],
        {"proposal_id": "PROPOSAL", "decision": "approve", "note": "ok"},
        ["credit_limit.approved"],
    ),
    "letter_posted": ([], POSTED, ["letter.posted"]),
    "letter_delivered": (
        [("letter_posted", POSTED)],
        {"letter_id": "L-1", "delivered_on": "2026-03-20", "note": "signed by M. Martin"},
        ["letter.delivered"],
    ),
    "letter_returned": (
        [("letter_posted", POSTED)],
        {"letter_id": "L-1", "returned_on": "2026-03-20", "reason": "unknown at this address"},
        ["letter.returned"],
    ),
}


def prepare(ledger: Ledger, steps: Sequence[tuple[str, dict[str, Any]]], payload: dict[str, Any]) -> dict[str, Any]:
    for n, (action, fields) in enumerate(steps):
        result = act(ledger, action, f"prep-{n}", **fields)
        if payload.get("proposal_id") == "PROPOSAL":
            payload = {**payload, "proposal_id": result.event_ids[0]}
    return payload


def test_every_action_has_a_case() -> None:
    assert set(CASES) == set(ACTIONS)


@pytest.mark.parametrize("action", sorted(CASES))
def test_an_action_is_recorded_once_with_its_author_and_a_retry_is_a_duplicate(ledger: Ledger, action: str) -> None:
    steps, payload, types = CASES[action]
    payload = prepare(ledger, steps, payload)
    before = ledger.state(TENANT, CUSTOMER).version
    # When the action is performed
    result = act(ledger, action, **payload)
    # Then its events are in the stream, in one append, with deterministic ids, who and where
    assert result.status == "applied" and result.summary
    assert result.event_ids == actions.action_event_ids(TENANT, CUSTOMER, action, "r-1", len(types))
    recorded = ledger.read_stream(TENANT, CUSTOMER, before + 1)
    assert [e.event_type for e in recorded] == types
    assert [e.event_id for e in recorded] == result.event_ids
    for event in recorded:
        assert {k: event.metadata[k] for k in ("source", "author", "request_id")} == {
            "source": "workspace",
            "author": "claire",
            "request_id": "r-1",
        }
        if "author" in event.data or not event.event_type.startswith(("promise", "invoice", "payment_plan.agreed")):
            assert event.data["author"] == "claire"
    # And sent again, it records nothing more and answers the first result
    again = act(ledger, action, **payload)
    assert (again.status, again.event_ids) == ("duplicate", result.event_ids)
    assert ledger.state(TENANT, CUSTOMER).version == before + len(types)
    # And the same request id with another payload is refused
    changed: dict[str, dict[str, Any]] = {
        "agree_plan": {"send_confirmation": False},
        "assign_task": {"assignee": "zoe"},
        "add_note": {"text": "2"},
        "resolve_dispute": {"resolution": "other"},
        "letter_posted": {"tracking_number": "2B"},
    }
    other = {**payload, **changed.get(action, {"reason": "else"} if "reason" in payload else {"note": "changed"})}
    with pytest.raises(ActionRefused) as refused:
        act(ledger, action, **other)
    assert refused.value.status == 409 and "request id 'r-1' was already used" in refused.value.reason


def test_another_person_sending_the_same_request_id_is_refused(ledger: Ledger) -> None:
    act(ledger, "add_note", text="one")
    with pytest.raises(ActionRefused) as refused:
        perform(
            ledger,
            TENANT,
            CUSTOMER,
            "add_note",
            {"request_id": "r-1", "text": "one"},
            author="marc",
            source="api",
            now=NOW,
        )
    assert refused.value.status == 409


def test_the_fold_shows_what_people_did(ledger: Ledger) -> None:
    act(ledger, "log_call", **CASES["log_call"][1])
    act(ledger, "pause", "r-2", reason="insolvency talks", until="2026-04-30")
    state = ledger.state(TENANT, CUSTOMER)
    task = state.tasks["T-1"]
    assert (task["status"], task["outcome"], task["done_by"]) == ("done", "call: promised", "claire")
    [promise_id] = state.promises
    assert state.promises[promise_id]["invoice_ids"] == ["INV-1", "INV-2"]
    [call_id] = [e.data["call_id"] for e in ledger.read_stream(TENANT, CUSTOMER) if e.event_type == "call.logged"]
    follow_up = state.tasks[f"follow-up-{call_id}"]
    assert (follow_up["kind"], follow_up["due_on"]) == ("follow_up", "2026-04-02")
    assert follow_up["note"] == "Spoke to the accountant.\nCheque on Friday."
    assert paused_on(state, date(2026, 4, 30)) and not paused_on(state, date(2026, 5, 1))


def test_after_a_promise_the_engine_sends_no_reminder_for_the_promised_invoices(ledger: Ledger) -> None:
    def reminded() -> set[str]:
        decisions = decide(ledger.state(TENANT, CUSTOMER), POLICY, NOW, RATES)
        return {i for d in decisions if d.event_type == "reminder.requested" for i in d.data["invoice_ids"]}

    assert "INV-1" in reminded()  # without the promise, INV-1 is reminded today
    act(ledger, "record_promise", **PROMISE)
    assert not reminded() & {"INV-1", "INV-2"}


def test_after_a_dispute_the_engine_leaves_the_invoice_alone(ledger: Ledger) -> None:
    act(ledger, "open_dispute", invoice_id="INV-2", reason="two pallets missing")
    decisions = decide(ledger.state(TENANT, CUSTOMER), POLICY, NOW, RATES)
    assert all("INV-2" not in d.data.get("invoice_ids", [d.data.get("invoice_id")]) for d in decisions)


def commands(ledger: Ledger) -> list[tuple[str, dict[str, Any]]]:
    with ledger.engine.connect() as conn:
        return [(r.kind, r.payload) for r in conn.execute(select(outbox).order_by(outbox.c.id))]


def test_a_persons_promise_dispute_and_plan_tell_the_erp_and_a_plan_asks_for_its_confirmation(ledger: Ledger) -> None:
    act(ledger, "open_dispute", "r-1", invoice_id="INV-2", reason="two pallets missing")
    act(ledger, "resolve_dispute", "r-2", invoice_id="INV-2")
    act(ledger, "agree_plan", "r-3", **PLAN)
    act(
        ledger,
        "record_promise",
        "r-4",
        promised_date="2026-04-10",
        amount="70.00",
        currency="USD",
        invoice_ids=["INV-4"],
    )
    sent = commands(ledger)
    assert [kind for kind, _ in sent] == [
        "erp.dispute_opened",
        "erp.dispute_resolved",
        "erp.payment_plan",
        "notifier.send_confirmation",
        "erp.promise_to_pay",
    ]
    plan = sent[2][1]
    assert plan["author"] == "claire" and plan["instalments"][0] == {"due_date": "2026-04-15", "amount": "750.00"}
    confirmation = sent[3][1]
    assert confirmation["language"] == "fr" and confirmation["plan_id"] == plan["plan_id"]
    # And the log alone gives back the same streams, projections and outbox rows
    report = ledger.verify()
    assert report.ok, report.problems


def test_a_plan_without_its_confirmation_records_the_plan_alone(ledger: Ledger) -> None:
    result = act(ledger, "agree_plan", **PLAN, send_confirmation=False)
    assert len(result.event_ids) == 1 and [k for k, _ in commands(ledger)] == ["erp.payment_plan"]


def test_the_erps_own_promise_is_not_echoed_back(ledger: Ledger) -> None:
    ev = promise("PR-ERP", "2026-04-01", "100.00", ["INV-1"])
    item = Incoming(TENANT, CUSTOMER, ev.event_id, ev.event_type, ev.data, NOW, metadata={"source": "erp"})
    assert [o.status for o in ledger.record([item])] == ["applied"]
    assert commands(ledger) == []


def test_an_approved_credit_limit_asks_the_erp_to_change_it(ledger: Ledger) -> None:
    proposed = act(ledger, "propose_credit_limit", "r-1", currency="EUR", amount="5000.00", reason="steady payer")
    act(ledger, "decide_credit_limit", "r-2", proposal_id=proposed.event_ids[0], decision="approve")
    [(kind, payload)] = commands(ledger)
    assert kind == "erp.credit_limit_change" and (payload["amount"], payload["author"]) == ("5000.00", "claire")
    assert ledger.state(TENANT, CUSTOMER).limit_proposals[proposed.event_ids[0]]["status"] == "approved"


REFUSALS: list[tuple[str, list[tuple[str, dict[str, Any]]], dict[str, Any], int, str]] = [
    ("complete_task", [], {"task_id": "T-9", "outcome": "x"}, 404, "has no task 'T-9'"),
    (
        "complete_task",
        [("complete_task", {"task_id": "T-1", "outcome": "done"})],
        {"task_id": "T-1", "outcome": "again"},
        422,
        "task T-1 is already done",
    ),
    ("snooze_task", [], {"task_id": "T-1", "until": "2026-03-20"}, 422, "must be after today (2026-03-20)"),
    ("log_call", [], {"outcome": "reached", "note": "x", "promise": PROMISE}, 422, "a promise goes with the outcome"),
    ("log_call", [], {"outcome": "shouted", "note": "x"}, 422, "outcome:"),
    ("log_call", [], {"outcome": "reached", "note": "x", "next_action_on": "2026-03-19"}, 422, "is in the past"),
    ("log_call", [], {"outcome": "reached", "note": ""}, 422, "note:"),
    ("log_call", [], {"outcome": "reached", "note": "x" * 4001}, 422, "note:"),
    ("record_promise", [], {**PROMISE, "promised_date": "2026-03-19"}, 422, "is in the past"),
    ("record_promise", [], {**PROMISE, "invoice_ids": ["INV-9"]}, 404, "has no invoice 'INV-9'"),
    ("record_promise", [], {**PROMISE, "invoice_ids": ["INV-3"]}, 422, "is paid"),
    ("record_promise", [], {**PROMISE, "invoice_ids": ["INV-4"]}, 422, "is in USD, not EUR"),
    ("record_promise", [], {**PROMISE, "amount": "1500.001"}, 422, "has more decimals than EUR has (2)"),
    ("record_promise", [], {**PROMISE, "amount": 1500.0}, 422, "must be a decimal string"),
    ("record_promise", [], {**PROMISE, "amount": "9999.00"}, 422, "is more than the 1,500.00 EUR its invoices owe"),
    ("record_promise", [], {**PROMISE, "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ("open_dispute", [], {"invoice_id": "INV-3", "reason": "x"}, 422, "invoice F-INV-3 is paid"),
    (
        "open_dispute",
        [("open_dispute", {"invoice_id": "INV-2", "reason": "x"})],
        {"invoice_id": "INV-2", "reason": "y"},
        422,
        "is already disputed",
    ),
    ("resolve_dispute", [], {"invoice_id": "INV-2"}, 422, "has no open dispute"),
    (
        "agree_plan",
        [],
        {**PLAN, "instalments": [{"due_date": "2026-04-15", "amount": "700.00"}]},
        422,
        "the instalments add up to 700.00 EUR, the invoices owe 1,500.00 EUR",
    ),
    (
        "agree_plan",
        [("open_dispute", {"invoice_id": "INV-2", "reason": "x"})],
        PLAN,
        422,
        "is disputed: resolve the dispute",
    ),
    ("agree_plan", [], {**PLAN, "invoice_ids": ["INV-1", "INV-3"]}, 422, "is paid"),
    (
        "agree_plan",
        [],
        {**PLAN, "instalments": list(reversed(PLAN["instalments"]))},
        422,
        "strictly increasing",
    ),
    ("waive_claim", [], {"invoice_id": "INV-2", "kind": "indemnity", "reason": "x"}, 422, "nothing to waive"),
    ("waive_claim", [], {"invoice_id": "INV-1", "kind": "indemnity", "reason": "x", "amount": "41.00"}, 422, "at most"),
    ("pause", [], {"reason": "x", "until": "2026-03-20"}, 422, "must be after today"),
    ("resume", [], {}, 422, "is not paused"),
    ("decide_credit_limit", [], {"proposal_id": "L-9", "decision": "approve"}, 404, "no credit-limit proposal"),
    (
        "decide_credit_limit",
        [
            ("propose_credit_limit", {"currency": "EUR", "amount": "5.00", "reason": "x"}),
            ("decide_credit_limit", {"proposal_id": "PROPOSAL", "decision": "reject"}),
        ],
        {"proposal_id": "PROPOSAL", "decision": "approve"},
        422,
        "was already rejected by claire",
    ),
    ("add_note", [], {"text": "hello\x1b[2J"}, 422, "U+001B"),
    ("add_note", [], {"text": "evil\u202etxt.exe"}, 422, "U+202E"),
    ("complete_task", [], {"task_id": "T-1", "outcome": "two\nlines"}, 422, "must be one plain line"),
    ("complete_task", [], {"task_id": "T-1", "outcome": "   "}, 422, "must not be blank"),
    ("open_dispute", [], {"invoice_id": "INV-2", "reason": "=?utf-8?q?x?="}, 422, "RFC 2047"),
    ("unknown_action", [], {}, 404, "no action 'unknown_action'"),
]


@pytest.mark.parametrize(("action", "steps", "payload", "status", "message"), REFUSALS)
def test_what_cannot_be_is_refused_saying_why_and_records_nothing(
    ledger: Ledger,
    action: str,
    steps: list[tuple[str, dict[str, Any]]],
    payload: dict[str, Any],
    status: int,
    message: str,
) -> None:
    for n, (step, fields) in enumerate(steps):
        fields = {**fields, "proposal_id": steps_result(ledger)} if fields.get("proposal_id") == "PROPOSAL" else fields
        act(ledger, step, f"prep-{n}", **fields)
    if payload.get("proposal_id") == "PROPOSAL":
        payload = {**payload, "proposal_id": steps_result(ledger)}
    before = ledger.state(TENANT, CUSTOMER).version
    with pytest.raises(ActionRefused) as refused:
        act(ledger, action, **payload)
    assert refused.value.status == status and message in refused.value.reason, refused.value.reason
    assert ledger.state(TENANT, CUSTOMER).version == before


def steps_result(ledger: Ledger) -> str:
    """The id of the last credit-limit proposal recorded."""
    return list(ledger.state(TENANT, CUSTOMER).limit_proposals)[-1]


def test_an_unknown_customer_is_not_found(ledger: Ledger) -> None:
    with pytest.raises(ActionRefused) as refused:
        perform(
            ledger, TENANT, "C-NONE", "add_note", {"request_id": "r", "text": "x"}, author="a", source="api", now=NOW
        )
    assert refused.value.status == 404
    assert ledger.read_stream(TENANT, "C-NONE") == []


def test_the_tenants_zone_moves_today(ledger: Ledger) -> None:
    from zoneinfo import ZoneInfo

    late = datetime(2026, 3, 19, 23, 30, tzinfo=UTC)
    payload = {"request_id": "r", **PROMISE, "promised_date": "2026-03-19"}
    assert perform(ledger, TENANT, CUSTOMER, "record_promise", payload, author="a", source="api", now=late).status
    with pytest.raises(ActionRefused, match="is in the past"):
        payload = {**payload, "request_id": "r-2"}
        perform(
            ledger,
            TENANT,
            CUSTOMER,
            "record_promise",
            payload,
            author="a",
            source="api",
            now=late,
            zone=ZoneInfo("Europe/Paris"),
        )


class Racing(Ledger):
    """A ledger where a payment arrives between the action's read and its append, once."""

    raced = False

    def record(self, items: Sequence[Incoming], **kwargs: Any) -> list[Outcome]:
        if not self.raced and items and items[0].event_id.startswith("act-"):
            self.raced = True
            ev = payment("P-RACE", "40.00", received_on="2026-03-19", allocations={"INV-2": "40.00"})
            super().record([Incoming(TENANT, CUSTOMER, ev.event_id, ev.event_type, ev.data, NOW)])
        return super().record(items, **kwargs)


def test_an_action_racing_with_a_payment_is_checked_again_on_the_new_state(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    ledger = Racing(engine)
    seed(ledger)
    plan: dict[str, Any] = {**PLAN, "instalments": [{"due_date": "2026-04-15", "amount": "1500.00"}]}
    # The plan was right when read, but a payment of 40.00 on INV-2 came in: the instalments no longer add up
    with pytest.raises(ActionRefused, match=r"the invoices owe 1,460\.00 EUR"):
        act(ledger, "agree_plan", **plan)
    assert ledger.raced
    engine.dispose()


def test_an_author_and_a_source_are_required(ledger: Ledger) -> None:
    with pytest.raises(ActionRefused, match="author"):
        perform(
            ledger, TENANT, CUSTOMER, "add_note", {"request_id": "r", "text": "x"}, author=" ", source="api", now=NOW
        )
    with pytest.raises(ValueError, match="source"):
        perform(
            ledger, TENANT, CUSTOMER, "add_note", {"request_id": "r", "text": "x"}, author="a", source="erp", now=NOW
        )


def test_the_waiver_figures_are_the_claims_rules(ledger: Ledger) -> None:
    result = act(ledger, "waive_claim", invoice_id="INV-1", kind="indemnity", reason="goodwill", amount="15.00")
    assert result.summary == "waived 15.00 EUR of indemnity on invoice F-INV-1; still owed 25.00 EUR"
    claim = ledger.state(TENANT, CUSTOMER).claims.get("INV-1", "indemnity")
    assert claim is not None and claim.owed == Decimal("25.00")


def test_ledger_show_says_who_did_a_task_and_the_pause_in_force(ledger: Ledger) -> None:
    from shared.ledger.show import render_stream

    act(ledger, "complete_task", "r-1", task_id="T-1", outcome="reached")
    act(ledger, "pause", "r-2", reason="insolvency talks", until="2026-04-30")
    text = render_stream(ledger.read_stream(TENANT, CUSTOMER), ledger.state(TENANT, CUSTOMER))
    assert "phone call INV-1 (done by claire: reached)" in text
    assert "paused through 2026-04-30 by claire: insolvency talks" in text


def test_a_refused_request_names_each_field_for_a_form(ledger: Ledger) -> None:
    with pytest.raises(ActionRefused) as refused:
        act(ledger, "log_call", outcome="promised", note="", promise={**PROMISE, "amount": "1.001"})
    assert refused.value.kind == "invalid"
    assert set(refused.value.fields) == {"note", "promise"}
    assert "more decimals than EUR" in refused.value.fields["promise"]


def test_the_erp_publishing_back_a_persons_promise_is_a_duplicate(ledger: Ledger) -> None:
    from shared.contracts.erp import parse_event

    act(ledger, "record_promise", **PROMISE)
    [(_, command)] = commands(ledger)
    fields = ("promise_id", "promised_date", "amount", "currency", "invoice_ids")
    echo = {
        "event_id": "erp-echo-1",
        "event_type": "promise_to_pay.recorded",
        "tenant": TENANT,
        "customer_id": CUSTOMER,
        "occurred_at": "2026-03-20T10:00:00Z",
        "data": {k: command[k] for k in fields},
    }
    parsed = parse_event(json.dumps(echo).encode())
    item = Incoming(
        TENANT,
        CUSTOMER,
        parsed.event_id,
        parsed.event_type,
        parsed.data_json(),
        parsed.occurred_at,
        metadata={"source": "erp"},
        dedupe="content",
        event=parsed.data,
    )
    [outcome] = ledger.record([item])
    assert outcome.status == "duplicate", outcome.reason
