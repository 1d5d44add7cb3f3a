"""The fold of people's actions: tasks completed, snoozed, assigned; follow-ups; pauses; credit-limit proposals."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from shared.ledger.state import CustomerState
from shared.ledger.tasks import paused_on
from tests.factories import Ev, fold, invoice


def act(event_type: str, event_id: str, **data: Any) -> Ev:
    return Ev(event_type, {"author": "claire", **data}, event_id, metadata={"source": "workspace", "author": "claire"})


TASK = Ev(
    "task.created",
    {
        "task_id": "T-1",
        "kind": "phone_call",
        "due_on": "2026-11-10",
        "invoice_ids": ["INV-1"],
        "currency": "EUR",
        "amount_at_risk": "100.00",
        "note": "call",
    },
    "task-1",
)


def round_trip(state: CustomerState) -> CustomerState:
    return CustomerState.from_json(json.loads(json.dumps(state.to_json())))


def test_a_task_completed_snoozed_and_assigned_keeps_its_data_and_says_so() -> None:
    state = fold(
        [
            invoice("INV-1", "100.00"),
            TASK,
            act("task.snoozed", "a1", task_id="T-1", until="2026-11-20"),
            act("task.assigned", "a2", task_id="T-1", assignee="marc"),
            act("task.completed", "a3", task_id="T-1", outcome="reached, will pay"),
        ]
    )
    task = state.tasks["T-1"]
    assert task["kind"] == "phone_call" and task["invoice_ids"] == ["INV-1"]
    assert task["snoozed_until"] == "2026-11-20" and task["assignee"] == "marc"
    assert task["status"] == "done" and task["outcome"] == "reached, will pay" and task["done_by"] == "claire"
    assert task["done_at"].startswith("2026-11-02T09:00")
    assert round_trip(state) == state


def test_an_action_on_a_task_the_state_does_not_know_changes_nothing() -> None:
    state = fold([act("task.completed", "a1", task_id="nope", outcome="x")])
    assert state.tasks == {}


def test_a_call_with_a_next_action_day_leaves_a_follow_up_task() -> None:
    note = "x" * 300
    state = fold(
        [
            act("call.logged", "c1", call_id="CALL-1", outcome="no_answer", note=note, next_action_on="2026-11-05"),
            act("call.logged", "c2", call_id="CALL-2", outcome="reached", note="fine"),
        ]
    )
    assert state.tasks == {
        "follow-up-CALL-1": {
            "kind": "follow_up",
            "due_on": "2026-11-05",
            "invoice_ids": [],
            "currency": "",
            "note": "x" * 200,
            "assignee": "claire",
            "source_id": "CALL-1",
        }
    }


def test_a_pause_holds_through_its_last_day_and_ends_when_resumed() -> None:
    paused = [act("customer.paused", "p1", pause_id="P-1", reason="insolvency talks", until="2026-11-30")]
    state = fold(paused)
    assert state.pause is not None and state.pause["pause_id"] == "P-1" and state.pause["author"] == "claire"
    assert paused_on(state, date(2026, 11, 30)) and not paused_on(state, date(2026, 12, 1))
    assert round_trip(state) == state
    other = fold([*paused, act("customer.resumed", "r1", pause_id="P-0")])
    assert other.pause is not None  # a resumption names the pause it ends
    resumed = fold([*paused, act("customer.resumed", "r2", pause_id="P-1", reason="agreed")])
    assert resumed.pause is None and not paused_on(resumed, date(2026, 11, 10))


def test_credit_limit_proposals_and_their_decisions() -> None:
    state = fold(
        [
            act("credit_limit.proposed", "l1", proposal_id="L-1", currency="EUR", amount="5000.00", reason="growth"),
            act("credit_limit.proposed", "l2", proposal_id="L-2", currency="EUR", amount="90000.00", reason="big"),
            Ev(
                "credit_limit.approved",
                {"author": "dana", "proposal_id": "L-1", "currency": "EUR", "amount": "5000.00"},
                "l3",
            ),
            Ev("credit_limit.rejected", {"author": "dana", "proposal_id": "L-2", "note": "too much"}, "l4"),
        ]
    )
    one, two = state.limit_proposals["L-1"], state.limit_proposals["L-2"]
    assert (one["status"], one["decided_by"], one["amount"], one["author"]) == ("approved", "dana", "5000.00", "claire")
    assert (two["status"], two["note"]) == ("rejected", "too much")
    assert round_trip(state) == state


def test_a_snapshot_written_before_people_acted_loads_with_no_pause_nor_proposal() -> None:
    raw = fold([invoice("INV-1", "100.00"), TASK]).to_json()
    del raw["pause"], raw["limit_proposals"]
    old = CustomerState.from_json(raw)
    assert old.pause is None and old.limit_proposals == {} and "status" not in old.tasks["T-1"]


def test_the_erp_refusing_a_persons_promise_is_a_task_a_new_credit_command_does_not_clear() -> None:
    refused = Ev(
        "erp.command_acknowledged",
        {"command_id": "act-1", "command": "erp.promise_to_pay", "status": "rejected", "reason": "unknown invoice"},
        "ack-1",
    )
    block = Ev(
        "credit.blocked",
        {
            "block_id": "B-1",
            "reason": "level",
            "overdue": {"EUR": "100.00"},
            "policy": "p",
            "policy_version": "v",
            "as_of": "2026-11-02T09:00:00Z",
        },
        "blk-1",
    )
    state = fold([refused, block])
    assert state.tasks["erp-ack:act-1"]["kind"] == "erp_command_rejected"
    assert "erp.promise_to_pay" in state.tasks["erp-ack:act-1"]["note"]
    applied = Ev(
        "erp.command_acknowledged",
        {"command_id": "act-1", "command": "erp.promise_to_pay", "status": "applied"},
        "ack-2",
    )
    assert "erp-ack:act-1" not in fold([refused, block, applied.at(refused.occurred_at.replace(hour=10))]).tasks
