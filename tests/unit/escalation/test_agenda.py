"""A collector's day: tasks due, promises falling due, blocked accounts, the largest amount at risk first."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D
from typing import Any

from services.escalation.agenda import build_agenda, render_agenda
from services.escalation.interest import RateTable
from tests.factories import Ev, customer, fold, invoice, payment, promise

DAY = date(2026, 12, 1)


def task(task_id: str, kind: str, due_on: str, invoice_ids: list[str], currency: str = "EUR", **extra: Any) -> Ev:
    data = {
        "task_id": task_id,
        "kind": kind,
        "due_on": due_on,
        "invoice_ids": invoice_ids,
        "currency": currency,
        "amount_at_risk": "0",
        "note": "",
        **extra,
    }
    return Ev("task.created", data, f"task-{task_id}")


def blocked(block_id: str) -> Ev:
    data = {"block_id": block_id, "reason": "level", "overdue": {"EUR": "0"}, "as_of": "2026-11-20T00:00:00Z"}
    return Ev("credit.blocked", data, f"block-{block_id}")


def test_the_day_lists_due_tasks_promises_and_blocks_largest_amount_first() -> None:
    # Given a small debtor with a call due, a large one with a promise due today, and a blocked one
    small = fold(
        [
            customer("Petit SARL"),
            invoice("S-1", "300.00", due_date="2026-11-01"),
            task("t1", "phone_call", "2026-11-30", ["S-1"]),
        ],
        customer_id="C-SMALL",
    )
    large = fold(
        [
            customer("Grand SA"),
            invoice("L-1", "9000.00", due_date="2026-10-15"),
            promise("p1", "2026-12-01", "9000.00", ["L-1"]),
        ],
        customer_id="C-LARGE",
    )
    stuck = fold(
        [customer("Moyen SAS"), invoice("M-1", "2500.00", due_date="2026-10-01"), blocked("b1")], customer_id="C-MID"
    )

    # When the agenda of the day is built
    items = build_agenda([small, large, stuck], DAY)

    # Then each appears once, sorted by the overdue amount at risk
    assert [(i.customer_id, i.kind) for i in items] == [
        ("C-LARGE", "promise_due"),
        ("C-MID", "credit_blocked"),
        ("C-SMALL", "phone_call"),
    ]
    assert [str(i.at_risk) for i in items] == ["9000.00", "2500.00", "300.00"]
    assert "Grand SA" in render_agenda(items, "acme-fr", DAY)


def test_a_task_for_settled_invoices_or_due_later_is_left_out() -> None:
    # Given a call about an invoice since paid, and a call planned for next week
    state = fold(
        [
            invoice("I-1", "100.00", due_date="2026-11-01"),
            invoice("I-2", "200.00", due_date="2026-11-02"),
            payment("P-1", "100.00", allocations={"I-1": "100.00"}),
            task("t-paid", "phone_call", "2026-11-25", ["I-1"]),
            task("t-later", "phone_call", "2026-12-08", ["I-2"]),
        ]
    )
    # When the agenda is built, Then there is nothing to do today
    assert build_agenda([state], DAY) == []
    assert "nothing to do" in render_agenda([], "acme-fr", DAY)


def test_calls_asked_at_several_levels_make_one_item_naming_the_invoices_still_open() -> None:
    # Given a call asked at one level for I-1 and I-2, again at a later level for I-2 and I-3, and I-1 since paid
    state = fold(
        [
            customer("Garage Dubois SARL"),
            invoice("I-1", "100.00", due_date="2026-10-01"),
            invoice("I-2", "200.00", due_date="2026-10-05"),
            invoice("I-3", "300.00", due_date="2026-10-20"),
            task("t1", "phone_call", "2026-10-21", ["I-1", "I-2"]),
            task("t2", "phone_call", "2026-11-09", ["I-2", "I-3"]),
            payment("P-1", "100.00", allocations={"I-1": "100.00"}),
        ]
    )
    # When the agenda is built
    (call,) = build_agenda([state], DAY)
    # Then one call, the later one (it names every invoice the first still names: the first is superseded), about
    # the invoices still open
    assert (call.kind, call.due_on.isoformat(), call.invoices) == ("phone_call", "2026-11-09", ("I-2", "I-3"))
    assert call.task_ids == ("t2",)
    assert str(call.at_risk) == "500.00"


def test_the_credit_team_sees_a_semester_without_a_rate_first_and_a_held_invoice_until_the_rate_is_added() -> None:
    # Given a rate table without the semester starting 2027-01-01, and an invoice held for that missing rate
    without = RateTable({date(2026, 1, 1): D("2.15"), date(2026, 7, 1): D("2.15")})
    held = task("t9", "interest_unavailable", "2026-11-30", ["H-1"])
    held = Ev(held.event_type, {**held.data, "semester": "2027-01-01"}, held.event_id)
    state = fold([customer("Grand SA"), invoice("H-1", "9000.00", due_date="2026-10-15"), held], customer_id="C-H")
    # When the agenda of 1 December is built with that table
    items = build_agenda([state], DAY, without)
    # Then the missing rate comes first, with the days left and the line to add, then the held invoice
    first, second = items
    assert (first.kind, first.due_on) == ("reference_rate_missing", date(2027, 1, 1))
    assert "semester starting 2027-01-01 needed in 31 day(s)" in first.title
    assert "2027-01-01,<rate in percent>" in first.note
    assert (second.kind, second.invoices) == ("interest_unavailable", ("H-1",))
    assert "add the missing reference rate" in second.title
    assert "(credit team)" in render_agenda(items, "acme-fr", DAY)
    # When the rate is added
    added = RateTable({**without.semesters(), date(2027, 1, 1): D("2.15")})
    # Then neither item is left
    assert build_agenda([state], DAY, added) == []


def act(event_type: str, event_id: str, **data: Any) -> Ev:
    return Ev(event_type, {"author": "claire", **data}, event_id, metadata={"source": "workspace", "author": "claire"})


def test_one_line_per_customer_and_kind_the_largest_currency_first_the_others_said() -> None:
    # Given calls asked in two currencies
    state = fold(
        [
            customer("Garage Dubois SARL"),
            invoice("E-1", "900.00", due_date="2026-10-01", number="FA-2026-0001"),
            invoice("U-1", "300.00", currency="USD", due_date="2026-10-01", number="FA-2026-0002"),
            task("t-eur", "phone_call", "2026-11-02", ["E-1"]),
            task("t-usd", "phone_call", "2026-10-25", ["U-1"], currency="USD"),
        ]
    )
    # When the agenda is built
    (call,) = build_agenda([state], DAY)
    # Then one line: the euro call first (most at risk), the dollars said, both tasks completed with it
    assert (call.kind, call.currency, str(call.at_risk)) == ("phone_call", "EUR", "900.00")
    assert call.others == (("USD", D("300.00")),)
    assert "also 300.00 USD" in call.title
    assert call.invoices == ("E-1", "U-1") and call.numbers == ("FA-2026-0001", "FA-2026-0002")
    assert set(call.task_ids) == {"t-eur", "t-usd"}
    # since the oldest of them
    assert (call.opened_on, call.age_days, call.due_on) == (date(2026, 10, 25), 37, date(2026, 10, 25))
    shown = render_agenda([call], "acme-fr", DAY)
    assert "FA-2026-0001, FA-2026-0002" in shown and "E-1," not in shown


def test_done_closed_and_snoozed_work_is_left_out_and_a_snoozed_task_returns_on_its_day() -> None:
    state = fold(
        [
            customer("Garage Dubois SARL"),
            invoice("I-1", "100.00", due_date="2026-10-01"),
            task("call", "phone_call", "2026-11-10", ["I-1"]),
            task("letter", "send_letter", "2026-11-10", ["I-1"]),
            task("hand", "hand_over", "2026-11-10", ["I-1"]),
            act("task.completed", "a1", task_id="call", outcome="reached"),
            act("task.snoozed", "a2", task_id="letter", until="2026-12-03"),
        ]
    )
    assert [i.kind for i in build_agenda([state], DAY)] == ["hand_over"]
    assert sorted(i.kind for i in build_agenda([state], date(2026, 12, 3))) == ["hand_over", "send_letter"]


def test_the_agenda_of_one_person_holds_the_lines_with_a_task_of_theirs() -> None:
    state = fold(
        [
            customer("Garage Dubois SARL"),
            invoice("I-1", "100.00", due_date="2026-10-01"),
            task("call", "phone_call", "2026-11-10", ["I-1"]),
            task("hand", "hand_over", "2026-11-10", ["I-1"]),
            act("task.assigned", "a1", task_id="call", assignee="marc"),
            blocked("b1"),
        ]
    )
    (mine,) = build_agenda([state], DAY, assignee="marc")
    assert (mine.kind, mine.assignee) == ("phone_call", "marc")
    assert build_agenda([state], DAY, assignee="claire") == []
    assert len(build_agenda([state], DAY)) == 3
    assert "[marc]" in render_agenda([mine], "acme-fr", DAY, "marc")


def test_a_promise_due_today_and_already_kept_is_left_out() -> None:
    state = fold(
        [
            customer("Grand SA"),
            invoice("L-1", "9000.00", due_date="2026-10-15"),
            invoice("L-2", "100.00", due_date="2026-10-15"),
            promise("p1", "2026-12-01", "9000.00", ["L-1", "L-2"]),
            payment("P-9", "9000.00", received_on="2026-11-30", allocations={"L-1": "9000.00"}),
        ]
    )
    assert build_agenda([state], DAY) == []
