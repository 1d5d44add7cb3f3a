"""The committee pack's sections worked by hand on two customers: a block and its credit limit, a hand-over, a fee
charged, waived in part and collected, promises kept, broken and pending, a customer paying later, a dispute."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from services.reports.committee import Timeline, build
from services.reports.formats import Cell, Report
from shared.ledger.state import CustomerState
from tests.factories import (
    Ev,
    customer,
    dispute,
    fold,
    invoice,
    payment,
    promise,
)

AS_OF = date(2026, 11, 30)
TIMELINE = Timeline.of(AS_OF, 2)  # the month ends 31 October and 30 November, from 30 September
DECIDED = {"policy": "standard-fr", "policy_version": "1"}


def on(day: str, ev: Ev) -> Ev:
    return ev.at(datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC))


def decided(day: str, event_type: str, event_id: str, **data: Any) -> Ev:
    return on(day, Ev(event_type, {**DECIDED, "as_of": f"{day}T09:00:00Z", **data}, event_id))


def level(day: str, invoice_id: str, key: str, actions: list[str]) -> Ev:
    return decided(
        day,
        "escalation.level_reached",
        f"level-{invoice_id}-{key}",
        invoice_id=invoice_id,
        currency="EUR",
        level=key,
        offset_days=30,
        actions=actions,
        channel="email",
        due_date="2026-08-31",
        step_date=day,
        reached_on=day,
        outstanding="1500.00",
    )


def task(day: str, task_id: str, kind: str, invoice_ids: list[str], note: str) -> Ev:
    data = {"task_id": task_id, "kind": kind, "due_on": day, "invoice_ids": invoice_ids, "currency": "EUR"}
    return on(day, Ev("task.created", {**data, "amount_at_risk": "0.00", "note": note}, task_id))


GARAGE = [  # blocked, over its limit of 1,000, handed over, a fee charged, waived in part, collected; two promises
    on("2026-08-01", customer("Garage Lenoir", credit_limit={"amount": "1000.00", "currency": "EUR"})),
    on("2026-08-01", invoice("A-1", "1500.00", issue_date="2026-08-01", due_date="2026-08-31")),
    level("2026-10-15", "A-1", "formal_notice", ["charge_fee"]),
    decided("2026-10-15", "fee.charged", "fee-A-1", invoice_id="A-1", currency="EUR", amount="40.00"),
    on("2026-10-20", promise("P-1", "2026-10-30", "500.00", ["A-1"])),
    decided("2026-11-01", "credit.blocked", "block-1", block_id="B-1", reason="level", overdue={"EUR": "1500.00"}),
    task("2026-11-05", "broken-P-1", "promise_broken", ["A-1"], "promise P-1 of 500.00 EUR by 2026-10-30"),
    level("2026-11-10", "A-1", "hand_over", ["hand_over"]),
    task("2026-11-12", "habit-A", "payment_behaviour_changed", ["A-1"], "paying later"),
    on(
        "2026-11-20",
        Ev(
            "claim.waived",
            {
                "invoice_id": "A-1",
                "kind": "indemnity",
                "currency": "EUR",
                "amount": "10.00",
                "reason": "goodwill",
                "author": "alice",
            },
            "waive-A-1",
        ),
    ),
    # 100 to the invoice; the 30 left over settles the invoice's own fee (40 - 10 waived)
    on("2026-11-25", payment("P-A", "130.00", received_on="2026-11-25", allocations={"A-1": "100.00"})),
    on("2026-11-26", promise("P-2", "2026-12-05", "200.00", ["A-1"])),
]
FOUNDRY = [  # paid 2 days late in October, 15 days late in November; a promise kept; an invoice disputed
    on("2026-06-01", customer("Fonderie Bleue <b>SA</b>")),
    on("2026-06-01", invoice("B-1", "1000.00", issue_date="2026-06-01", due_date="2026-07-01")),
    on("2026-09-01", invoice("B-2", "1000.00", issue_date="2026-09-01", due_date="2026-10-01")),
    on("2026-10-02", promise("P-3", "2026-10-03", "1000.00", ["B-2"])),
    on("2026-10-03", payment("P-B2", "1000.00", received_on="2026-10-03", allocations={"B-2": "1000.00"})),
    on("2026-10-15", invoice("B-3", "1000.00", issue_date="2026-10-15", due_date="2026-11-14")),
    on("2026-11-01", invoice("B-4", "500.00", issue_date="2026-11-01", due_date="2026-12-01")),
    on("2026-11-05", dispute("B-4", reason="<b>quantities</b>")),
    on("2026-11-29", payment("P-B3", "1000.00", received_on="2026-11-29", allocations={"B-3": "1000.00"})),
]


def states(events: list[Ev], customer_id: str) -> list[CustomerState]:
    """The customer's state at the end of each of the timeline's days, folded from the events of those days."""
    return [fold([e for e in events if e.occurred_at.date() <= day], customer_id=customer_id) for day in TIMELINE.days]


def pack() -> Report:
    return build("acme-fr", TIMELINE, [states(GARAGE, "C-A"), states(FOUNDRY, "C-B")])


def rows(report: Report, key: str, *columns: str) -> list[tuple[Cell, ...]]:
    return [tuple(row[c] for c in columns) for row in report.table(key).rows]


def test_top_overdue_accounts_and_blocked_or_over_limit_ones() -> None:
    report = pack()
    # 1,500 - 100 = 1,400, 91 days late (31 Aug to 30 Nov); B-1: 1,000, 152 days late
    assert rows(report, "top_overdue", "key", "overdue", "over_90", "oldest", "flags") == [
        ("C-A", Decimal("1400.00"), Decimal("1400.00"), 91, "blocked, promise, handed over"),
        ("C-B", Decimal("1000.00"), Decimal("1000.00"), 152, "dispute, promise"),
    ]
    # The garage is blocked and 400 over its limit; the foundry has no limit and no block
    assert rows(report, "blocked", "key", "balance", "limit", "over_by", "status") == [
        (
            "C-A",
            Decimal("1400.00"),
            Decimal("1000.00"),
            Decimal("400.00"),
            "blocked since 2026-11-01 (level); over its credit limit",
        ),
    ]


def test_payment_habits_compare_the_trend_s_halves() -> None:
    # October (the earlier half): B-2 paid on 3 October, 2 days late; November: B-3 on 29 November, 15 days late.
    # The garage paid only in November (25 Nov - 31 Aug = 86 days late), and relance flagged it on 12 November.
    assert rows(pack(), "habits", "key", "before", "recent", "change", "flagged") == [
        ("C-B", Decimal("2.0"), Decimal("15.0"), Decimal("13.0"), ""),
        ("C-A", None, Decimal("86.0"), None, "2026-11-12"),
    ]


def test_disputes_promises_claims_and_hand_overs_of_the_trend() -> None:
    report = pack()
    # B-4 disputed on 5 November: 25 days old at the end of the month
    assert rows(report, "disputes", "reason", "count", "amount", "age_30", "oldest") == [
        ("<b>quantities</b>", 1, Decimal("500.00"), Decimal("500.00"), 25),
    ]
    # P-3 kept (B-2 paid), P-1 broken (relance's task), P-2 pending (its day has not come)
    assert rows(report, "promises", "kept", "kept_amount", "broken", "broken_amount", "pending", "pending_amount") == [
        (1, Decimal("1000.00"), 1, Decimal("500.00"), 1, Decimal("200.00")),
    ]
    # The fee: 40 charged in October, 10 waived, the 30 left collected from the payment's surplus
    assert rows(report, "claims", "charged", "collected", "waived", "owed_before", "owed") == [
        (Decimal("40.00"), Decimal("30.00"), Decimal("10.00"), Decimal(0), Decimal(0)),
    ]
    assert rows(report, "handovers", "key", "invoices", "amount", "outstanding", "on") == [
        ("C-A", 1, Decimal("1500.00"), Decimal("1400.00"), "2026-11-10"),
    ]


def test_the_trend_of_the_aged_balance_and_of_the_dso() -> None:
    report = pack()
    # 31 October: A-1 1,500 and B-1 1,000 late, B-3 1,000 not yet due; 30 November: 1,400 + 1,000 late, B-4 disputed
    assert rows(report, "aging_trend", "month_end", "principal", "disputed", "net") == [
        ("2026-10-31", Decimal("3500.00"), Decimal(0), Decimal("3500.00")),
        ("2026-11-30", Decimal("2400.00"), Decimal("500.00"), Decimal("2900.00")),
    ]
    # DSO over 3 months on 30 November: sales 1,000 (B-2) + 1,000 (B-3) + 500 (B-4) = 2,500 over 91 days;
    # 2,900 / 2,500 x 91 = 105.56 -> 105.6; countback: November 500 (30 days, 2,400 left), October 1,000 (31 days,
    # 1,400 left), September 1,000 (30 days, 400 left): the period's sales do not cover it, at least 91 days
    ((_, simple, countback),) = [
        r for r in rows(report, "dso_trend", "month_end", "simple", "countback") if r[0] == "2026-11-30"
    ]
    assert (str(simple), str(countback)) == ("105.6", ">= 91.0")
    assert [f.value for f in report.facts if f.label == "DSO EUR"] == ["105.6 days"]


def test_the_headline_cards() -> None:
    cards = {f.label: (f.value, f.note, f.tone) for f in pack().facts}
    # 30 November: 2,400 of principal, all of it past due, all over 60 days; 31 October's net was 3,500
    assert cards["Receivables EUR"] == ("2,900.00 EUR", "-600.00 on the previous month end", "")
    assert cards["Overdue EUR"] == ("2,400.00 EUR", "100% of principal; over 60 days 2,400.00", "bad")
    assert cards["Disputed and claims EUR"] == ("500.00 EUR", "claims owed 0.00 EUR", "")
