"""``erp.command_acknowledged``: the ERP's word on a command, at the door and folded into the customer's state."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.escalation.agenda import build_agenda, render_agenda
from shared.contracts.commands import parse_command
from shared.contracts.erp import CommandAcknowledged, InvalidMessage, parse_event
from shared.contracts.examples import COMMAND_EXAMPLES, EXAMPLES
from shared.contracts.jsonio import JsonRefused
from shared.ledger.dunning import CREDIT_COMMANDS, KEPT_PER_KIND, REJECTED_TASK, Acknowledgement, Task
from shared.ledger.outbox import COMMANDS
from shared.ledger.show import render_stream, stream_document
from shared.ledger.state import CustomerState
from tests.factories import Ev, Feed, fold, invoice, typed

BLOCK, UNBLOCK = "esc-block-1", "esc-unblock-1"
T = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def ack(command_id: str, status: str = "applied", *, at: int = 10, **extra: Any) -> Ev:
    """The ERP's acknowledgement, ``at`` minutes after 08:00; the event id tells apart its deliveries."""
    command = "erp.credit_unblock" if "unblock" in command_id else "erp.credit_block"
    data = {"command_id": command_id, "command": command, "status": status, **extra}
    moment = T.replace(minute=at)
    return Ev("erp.command_acknowledged", data, f"ack-{command_id}-{status}-{at}-{len(extra)}", moment)


def blocked(command_id: str = BLOCK, block_id: str = "B-1") -> Ev:
    data = {"block_id": block_id, "reason": "level", "overdue": {"EUR": "900.00"}, "as_of": "2026-12-01T08:00:00Z"}
    return Ev("credit.blocked", data, command_id, T)


def unblocked(command_id: str = UNBLOCK, block_id: str = "B-1") -> Ev:
    data = {"block_id": block_id, "reason": "cleared", "overdue": {}, "as_of": "2026-12-20T08:00:00Z"}
    return Ev("credit.unblocked", data, command_id, T.replace(day=20))


def acknowledgement(state: CustomerState) -> Acknowledgement:
    """The ERP's word on the customer's credit block, which the test expects to be there."""
    assert state.credit_block is not None
    known = state.credit_block["acknowledgement"]
    assert known is not None
    return known


def rejection_tasks(state: CustomerState) -> dict[str, Task]:
    return {k: t for k, t in state.tasks.items() if t["kind"] == REJECTED_TASK}


def refusal(data: dict[str, Any]) -> InvalidMessage:
    raw = copy.deepcopy(EXAMPLES["erp.command_acknowledged"])
    raw["data"] = data
    with pytest.raises(InvalidMessage) as caught:
        parse_event(json.dumps(raw).encode())
    return caught.value


# ---------------------------------------------------------------------------------------------------- contract
def test_the_example_parses_and_keeps_every_field() -> None:
    raw = EXAMPLES["erp.command_acknowledged"]
    event = parse_event(json.dumps(raw).encode())
    assert event.event_type == "erp.command_acknowledged" and event.data_json() == raw["data"]


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_rejection_without_a_reason_is_refused_saying_so(reason: str | None) -> None:
    data = {"command_id": BLOCK, "command": "erp.credit_block", "status": "rejected"}
    if reason is not None:
        data["reason"] = reason
    error = refusal(data)
    assert error.kind == "schema" and "reason is required when status is rejected" in error.reason, error.reason


def test_a_rejection_with_a_reason_is_accepted() -> None:
    raw = copy.deepcopy(EXAMPLES["erp.command_acknowledged"])
    raw["data"].update(status="rejected", reason="customer C-0042 is archived in the ERP")
    assert parse_event(json.dumps(raw).encode()).data_json()["reason"] == "customer C-0042 is archived in the ERP"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"command": "notifier.send_reminder"}, "data.command"),
        ({"command": "erp.credit_hold"}, "data.command"),
        ({"status": "done"}, "data.status"),
        ({"command_id": ""}, "data.command_id"),
        ({"erp_reference": "BLK\r\n1"}, "data.erp_reference"),
        ({"applied_at": "2026-12-01"}, "data.applied_at"),
    ],
)
def test_a_malformed_acknowledgement_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    error = refusal({**EXAMPLES["erp.command_acknowledged"]["data"], **change})
    assert error.kind == "schema" and field in error.reason, error.reason


@pytest.mark.parametrize("missing", ["command_id", "command", "status"])
def test_each_required_field_is_required(missing: str) -> None:
    data = dict(EXAMPLES["erp.command_acknowledged"]["data"])
    del data[missing]
    error = refusal(data)
    assert f"data.{missing}" in error.reason and "required" in error.reason.lower(), error.reason


def test_the_json_schema_also_requires_a_reason_for_a_rejection() -> None:
    schema = CommandAcknowledged.model_json_schema()
    assert schema["if"]["properties"]["status"] == {"const": "rejected"}
    assert schema["then"]["required"] == ["reason"]


# ---------------------------------------------------------------------------------------------------- fold
def test_the_fold_knows_the_credit_commands_the_outbox_sends_the_erp() -> None:
    # every command to the ERP but the hand-over and the credit-limit change, which no block episode follows
    erp = {event: kind for event, kind in COMMANDS.items() if kind.startswith("erp.")}
    others = ("erp.collection_handover", "erp.credit_limit_change")
    assert {event: kind for event, kind in erp.items() if kind not in others} == CREDIT_COMMANDS


def test_the_current_block_shows_the_erps_acknowledgement() -> None:
    # Given a block relance decided, then the ERP applying it
    state = fold([blocked(), ack(BLOCK, erp_reference="BLK-917")])
    # Then the block names its command and what the ERP said, and the acknowledgement is kept by command id
    assert state.credit_block is not None and state.credit_block["command_id"] == BLOCK
    assert state.credit_block["acknowledgement"] == {
        "command": "erp.credit_block",
        "status": "applied",
        "erp_reference": "BLK-917",
        "at": T.replace(minute=10).isoformat(),
    }
    assert state.acknowledgements[BLOCK]["status"] == "applied"
    assert rejection_tasks(state) == {}


def test_a_block_not_yet_acknowledged_says_so() -> None:
    state = fold([blocked()])
    assert state.credit_block is not None and state.credit_block["acknowledgement"] is None
    assert "not yet acknowledged by the ERP" in render_stream([], state)


def test_a_rejection_is_a_task_on_the_agenda_until_the_erp_applies_the_command() -> None:
    # Given a customer with an overdue invoice, blocked, and the ERP refusing the block
    feed = Feed(CustomerState("acme-fr", "C-0042"))
    feed.deliver([invoice("INV-1", "900.00", issue_date="2026-09-01"), blocked()])
    feed.deliver([ack(BLOCK, "rejected", reason="account archived")])
    # Then a collector's task names the command and the reason, and the agenda of the day shows it
    [task] = rejection_tasks(feed.state).values()
    assert task["due_on"] == "2026-12-01" and task["command_id"] == BLOCK and "account archived" in task["note"]
    items = [i for i in build_agenda([feed.state], date(2026, 12, 1)) if i.kind == REJECTED_TASK]
    assert len(items) == 1 and items[0].at_risk > 0 and "account archived" in items[0].note
    assert "ERP refused a credit command" in render_agenda(items, "acme-fr", date(2026, 12, 1))
    assert feed.state.credit_block is not None and acknowledgement(feed.state)["status"] == "rejected"
    # When the ERP applies it after all
    feed.deliver([ack(BLOCK, "applied", at=40)])
    # Then the task is gone and the block shows the application
    assert rejection_tasks(feed.state) == {}
    assert acknowledgement(feed.state)["status"] == "applied"


def test_a_newer_credit_decision_supersedes_a_refused_one() -> None:
    state = fold([blocked(), ack(BLOCK, "rejected", reason="archived")])
    assert rejection_tasks(state)
    Feed(state).deliver([unblocked()])
    assert rejection_tasks(state) == {}


def test_a_late_refusal_of_a_superseded_command_is_recorded_without_a_task() -> None:
    state = fold([blocked(), unblocked(), ack(BLOCK, "rejected", reason="archived")])
    assert state.acknowledgements[BLOCK]["status"] == "rejected"
    assert rejection_tasks(state) == {}
    # while a refusal of the current command (the unblock) is a task
    Feed(state).deliver([ack(UNBLOCK, "rejected", reason="credit hold set by hand")])
    assert [t["command_id"] for t in rejection_tasks(state).values()] == [UNBLOCK]


def test_an_acknowledgement_of_an_unknown_command_is_recorded_never_rejected() -> None:
    # Given an empty state, and an ERP acknowledging a command this state never saw
    state = CustomerState("acme-fr", "C-0042")
    event = ack("esc-from-elsewhere", "rejected", reason="no such customer")
    # Then it is new, recorded, and its refusal is a task (nobody else would notice it)
    assert state.check(typed(event)).verdict == "new"
    Feed(state).deliver([event])
    assert state.acknowledgements["esc-from-elsewhere"]["reason"] == "no such customer"
    assert list(rejection_tasks(state)) == ["erp-ack:esc-from-elsewhere"]
    assert "(a command this ledger does not know)" in render_stream([], state)


def test_an_acknowledgement_before_its_block_is_known_shows_once_the_block_is() -> None:
    state = fold([ack(BLOCK, erp_reference="BLK-917"), blocked()])
    assert state.credit_block is not None
    assert acknowledgement(state)["erp_reference"] == "BLK-917"


def test_the_same_acknowledgement_again_is_a_duplicate_and_a_different_one_is_new() -> None:
    feed = Feed(CustomerState("acme-fr", "C-0042"))
    first = ack(BLOCK, erp_reference="BLK-917")
    assert feed.deliver([first, first.with_id("resent-under-another-id")]) == ["new", "duplicate"]
    assert feed.deliver([ack(BLOCK, "rejected", at=20, reason="reverted")]) == ["new"]


def test_the_acknowledgement_that_occurred_last_stands_whatever_the_arrival_order() -> None:
    later, earlier = ack(BLOCK, "applied", at=30), ack(BLOCK, "rejected", at=5, reason="locked")
    for order in ([earlier, later], [later, earlier]):
        state = fold([blocked(), *order])
        assert state.acknowledgements[BLOCK]["status"] == "applied", order
        assert rejection_tasks(state) == {}


def test_acknowledgements_are_bounded_per_command_kind() -> None:
    extra = 5
    events = [ack(f"esc-b{n}", at=n % 60) for n in range(KEPT_PER_KIND + extra)]
    state = fold([*events, ack(UNBLOCK)])
    blocks = [k for k, a in state.acknowledgements.items() if a["command"] == "erp.credit_block"]
    assert blocks == [f"esc-b{n}" for n in range(extra, KEPT_PER_KIND + extra)]
    assert UNBLOCK in state.acknowledgements  # another kind keeps its own


def test_acknowledgements_survive_a_snapshot_and_show_in_ledger_show() -> None:
    state = fold([blocked(), ack(BLOCK, erp_reference="BLK-917"), ack("esc-other", "rejected", reason="unknown")])
    again = CustomerState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state
    document = stream_document([], state)
    assert document["state"]["acknowledgements"] == state.acknowledgements
    assert document["state"]["credit_block"]["acknowledgement"]["erp_reference"] == "BLK-917"
    text = render_stream([], state)
    assert "ERP acknowledgements" in text
    assert f"erp.credit_block   {BLOCK}: applied by the ERP at 2026-12-01 08:10:00, ERP reference BLK-917" in text
    assert "rejected by the ERP at 2026-12-01 08:10:00 — unknown" in text


def test_an_acknowledgement_with_a_duplicated_status_is_refused_naming_it() -> None:
    # Given an acknowledgement that says both "applied" and "rejected": which one a reader keeps depends on it
    body = json.dumps(EXAMPLES["erp.command_acknowledged"]).encode()
    body = body.replace(b'"status": "applied"', b'"status": "rejected", "status": "applied"')
    # Then relance refuses it as schema, naming the key and where it is
    with pytest.raises(InvalidMessage) as caught:
        parse_event(body)
    assert caught.value.kind == "schema"
    assert caught.value.reason.startswith('data.status: duplicate key "status"')


def test_a_command_body_with_a_duplicated_key_is_refused_by_the_erp_side_parser() -> None:
    body = json.dumps(COMMAND_EXAMPLES["erp.credit_block"]).encode()
    assert parse_command(body).command_id == COMMAND_EXAMPLES["erp.credit_block"]["command_id"]
    with pytest.raises(JsonRefused) as caught:
        parse_command(body.replace(b'"reason": "level"', b'"reason": "level", "reason": "credit_limit"'))
    assert caught.value.reason.startswith('reason: duplicate key "reason"')
