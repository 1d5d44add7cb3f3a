"""A customer's tasks on a day: open, snoozed, done, or closed by themselves when their cause has gone, and why."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from shared.ledger.dunning import Escalation
from shared.ledger.state import CustomerState
from shared.ledger.tasks import TaskView, open_tasks, paused_on, task_views
from tests.factories import T0, Ev, cancellation, dispute, fold, invoice, payment, promise

DAY = date(2026, 11, 20)


def task(task_id: str, kind: str, due_on: str, invoice_ids: list[str], **extra: Any) -> Ev:
    data = {
        "task_id": task_id,
        "kind": kind,
        "due_on": due_on,
        "invoice_ids": invoice_ids,
        "currency": "EUR",
        "amount_at_risk": "0",
        "note": "",
        **extra,
    }
    return Ev("task.created", data, f"task-{task_id}")


def act(event_type: str, event_id: str, at: datetime = T0, **data: Any) -> Ev:
    ev = Ev(event_type, {"author": "claire", **data}, event_id, metadata={"source": "workspace", "author": "claire"})
    return ev.at(at)


def blocked(block_id: str = "b1", on: str = "2026-11-01") -> Ev:
    data = {"block_id": block_id, "reason": "level", "overdue": {"EUR": "0"}, "as_of": f"{on}T09:00:00Z"}
    return Ev("credit.blocked", data, f"block-{block_id}")


def unblocked(block_id: str = "b1") -> Ev:
    data = {"block_id": block_id, "reason": "cleared", "overdue": {"EUR": "0"}, "as_of": "2026-11-03T09:00:00Z"}
    return Ev("credit.unblocked", data, f"unblock-{block_id}")


def view(state: CustomerState, task_id: str, on: date = DAY) -> TaskView:
    (found,) = [v for v in task_views(state, on) if v.task_id == task_id]
    return found


def test_an_open_task_is_open_with_its_fields() -> None:
    state = fold([invoice("I-1", "100.00"), task("t", "phone_call", "2026-11-10", ["I-1"], note="level call")])
    found = view(state, "t")
    assert (found.status, found.cause, found.kind, found.invoice_ids) == ("open", None, "phone_call", ("I-1",))
    assert (found.due_on, found.created_on, found.currency, found.note) == (
        date(2026, 11, 10),
        date(2026, 11, 10),
        "EUR",
        "level call",
    )
    assert [v.task_id for v in open_tasks(state, DAY)] == ["t"]


def test_a_task_done_closes_saying_who_did_it() -> None:
    state = fold(
        [
            invoice("I-1", "100.00"),
            task("t", "follow_up", "2026-11-10", []),
            act("task.completed", "a1", task_id="t", outcome="called back"),
        ]
    )
    assert (view(state, "t").status, view(state, "t").cause) == ("done", "done by claire")
    assert open_tasks(state, DAY) == []


def test_a_follow_up_stays_open_until_done() -> None:
    state = fold([invoice("I-1", "100.00"), task("f", "follow_up", "2026-11-10", [])])
    assert view(state, "f").status == "open"


def test_a_letter_completed_as_posted_says_the_letter_was_posted() -> None:
    state = fold(
        [
            invoice("I-1", "100.00"),
            task("l", "send_letter", "2026-11-10", ["I-1"]),
            act("task.completed", "a1", task_id="l", outcome="posted"),
        ]
    )
    assert (view(state, "l").status, view(state, "l").cause) == ("done", "letter posted by claire")


def test_a_task_whose_invoices_are_paid_or_cancelled_closes_by_itself() -> None:
    state = fold(
        [
            invoice("I-1", "100.00"),
            invoice("I-2", "200.00"),
            payment("P-1", "100.00", allocations={"I-1": "100.00"}),
            cancellation("I-2"),
            task("paid", "phone_call", "2026-11-10", ["I-1"]),
            task("cancelled", "hand_over", "2026-11-10", ["I-2"]),
        ]
    )
    assert (view(state, "paid").status, view(state, "paid").cause) == ("closed", "invoice paid")
    assert view(state, "cancelled").cause == "invoice cancelled"


def test_a_task_whose_open_invoices_are_all_disputed_closes_by_itself() -> None:
    state = fold(
        [invoice("I-1", "100.00"), dispute("I-1"), task("t", "payment_behaviour_changed", "2026-11-10", ["I-1"])]
    )
    assert (view(state, "t").status, view(state, "t").cause) == ("closed", "invoice disputed")


def test_a_check_promise_task_closes_when_the_promise_is_kept() -> None:
    note = "promise PR-1: 100.00 EUR by 2026-11-15"
    check = task("c", "check_promise", "2026-11-15", ["I-1", "I-2"], note=note)
    waiting = fold(
        [invoice("I-1", "100.00"), invoice("I-2", "50.00"), promise("PR-1", "2026-11-15", "100.00", []), check]
    )
    assert view(waiting, "c").status == "open"
    kept = fold(
        [
            invoice("I-1", "100.00"),
            invoice("I-2", "50.00"),
            promise("PR-1", "2026-11-15", "100.00", []),
            check,
            payment("P-1", "100.00", received_on="2026-11-14"),  # unallocated yet: the promise is kept all the same
        ]
    )
    assert (view(kept, "c").status, view(kept, "c").cause) == ("closed", "promise kept")


def test_a_task_about_a_credit_block_closes_when_the_block_is_lifted() -> None:
    failed = task("f", "erp_command_failed", "2026-11-02", [], command="erp.credit_block")
    state = fold([invoice("I-1", "100.00"), blocked(), failed])
    assert view(state, "f").status == "open"
    unknown = fold([invoice("I-1", "100.00"), failed])  # a block this state does not know of: the task stands
    assert view(unknown, "f").status == "open"
    lifted = fold([invoice("I-1", "100.00"), blocked(), failed, unblocked()])
    assert (view(lifted, "f").status, view(lifted, "f").cause) == ("closed", "block lifted")


def test_a_task_about_an_unblock_closes_when_the_customer_is_blocked_again() -> None:
    failed = task("u", "erp_command_failed", "2026-11-04", [], command="erp.credit_unblock")
    state = fold([invoice("I-1", "100.00"), blocked(), unblocked(), failed])
    assert view(state, "u").status == "open"
    again = fold([invoice("I-1", "100.00"), blocked(), unblocked(), failed, blocked("b2", "2026-11-06")])
    assert view(again, "u").cause == "blocked again"


def test_a_letter_closes_when_a_later_reminder_of_its_currency_supersedes_it() -> None:
    state = fold([invoice("I-1", "100.00"), task("l", "send_letter", "2026-11-10", ["I-1"])])
    assert view(state, "l").status == "open"
    # a reminder of the currency decided after the letter (the fold's record of the currency's last reminder)
    state.dunning.reminded["EUR"] = {"reminder_id": "r2", "level": "hand_over", "on": "2026-11-18"}
    assert (view(state, "l").status, view(state, "l").cause) == ("closed", "superseded by a later reminder")


def test_a_call_closes_when_a_call_is_logged_after_it_was_created() -> None:
    state = fold(
        [
            invoice("I-1", "100.00"),
            task("before", "phone_call", "2026-11-10", ["I-1"]),
            task("after", "phone_call", "2026-11-19", ["I-1"]),
            act(
                "call.logged",
                "c1",
                at=datetime.fromisoformat("2026-11-12T10:00:00+00:00"),
                call_id="CALL-1",
                outcome="reached",
                note="will pay on Friday",
            ),
        ]
    )
    assert (view(state, "before").status, view(state, "before").cause) == ("closed", "call logged")
    assert view(state, "after").status == "open"


def test_a_call_is_superseded_by_a_later_call_naming_every_invoice_it_still_names() -> None:
    state = fold(
        [
            invoice("I-1", "100.00"),
            invoice("I-2", "200.00"),
            invoice("I-3", "300.00"),
            task("first", "phone_call", "2026-10-21", ["I-1", "I-2"]),
            task("second", "phone_call", "2026-11-09", ["I-2", "I-3"]),
        ]
    )
    assert view(state, "first").status == "open"  # I-1 is in the first call alone
    paid = fold(
        [
            invoice("I-1", "100.00"),
            invoice("I-2", "200.00"),
            invoice("I-3", "300.00"),
            task("first", "phone_call", "2026-10-21", ["I-1", "I-2"]),
            task("second", "phone_call", "2026-11-09", ["I-2", "I-3"]),
            payment("P-1", "100.00", allocations={"I-1": "100.00"}),
        ]
    )
    assert (view(paid, "first").status, view(paid, "first").cause) == ("closed", "superseded")
    assert view(paid, "second").status == "open"


def test_a_call_closes_once_its_invoices_are_handed_over_after_it() -> None:
    state = fold([invoice("I-1", "100.00"), task("t", "phone_call", "2026-11-10", ["I-1"])])
    record = Escalation("I-1", "EUR", level="hand-over", reached_on=date(2026, 11, 16), actions={"hand_over"})
    state.dunning.escalations["I-1"] = record
    assert view(state, "t").cause == "handed over"
    record.reached_on = date(2026, 11, 10)  # handed over the day the call was asked: the call stands
    assert view(state, "t").status == "open"


def test_a_snoozed_task_waits_until_its_day() -> None:
    state = fold(
        [
            invoice("I-1", "100.00"),
            task("t", "phone_call", "2026-11-10", ["I-1"]),
            act("task.snoozed", "a1", task_id="t", until="2026-11-25"),
            act("task.assigned", "a2", task_id="t", assignee="marc"),
        ]
    )
    found = view(state, "t")
    assert (found.status, found.due_on, found.assignee) == ("snoozed", date(2026, 11, 25), "marc")
    assert open_tasks(state, DAY) == []
    assert view(state, "t", date(2026, 11, 25)).status == "open"


def test_a_pause_holds_through_its_end_day_unless_resumed() -> None:
    pause = act("customer.paused", "p1", pause_id="PA-1", reason="takeover talks", until="2026-11-30")
    state = fold([invoice("I-1", "100.00"), pause])
    assert paused_on(state, date(2026, 11, 30)) and not paused_on(state, date(2026, 12, 1))
    resumed = fold([invoice("I-1", "100.00"), pause, act("customer.resumed", "r1", pause_id="PA-1")])
    assert not paused_on(resumed, date(2026, 11, 20))
