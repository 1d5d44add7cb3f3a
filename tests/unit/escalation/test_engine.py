"""The dunning engine, day by day on folded states: no database, no broker, the clock is a parameter.

Each scenario walks the calendar one day at a time like the escalation worker would: the ERP's events of the day are
folded into the customer's state, the engine decides at 09:00 UTC, its decisions are folded too, and deciding again
the same day must find nothing new. The tables say what each day must produce; every other day must produce nothing.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal as D
from typing import Any

import pytest

from services.escalation.engine import decide, next_due
from services.escalation.interest import RateTable
from services.escalation.model import Decision, Level, Policy
from shared.ledger.state import CustomerState
from tests.factories import Ev, Feed, customer, dispute, dispute_resolved, invoice, payment, plan, promise, summary

RATES = RateTable.default()
CLAIM_FIGURES = {"fee", "interest", "fixed"}  # decisions that record a claim's figure

LADDER = (
    Level("courtesy", -3, "email", "courtesy"),
    Level("reminder-1", 5, "email", "reminder-1"),
    Level("call", 12, "phone", None),
    Level("formal-notice", 20, "letter", "formal-notice", frozenset({"charge_interest", "charge_fee"})),
    Level("block", 30, "none", None, frozenset({"block_credit"})),
    Level("hand-over", 45, "none", None, frozenset({"hand_over"})),
)
POLICY = Policy(name="standard", version="v1", levels=LADDER, business_days=False, block_over_credit_limit=False)

DUE = date(2026, 3, 2)  # a Monday; the ladder then falls on 27 Feb, 7, 14, 22 Mar, 1 and 16 Apr
INV1 = invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date=DUE)


@dataclass
class Customer:
    """A customer's ledger fed by the ERP and by the engine, one day at a time."""

    policy: Policy = POLICY
    feed: Feed = field(default_factory=lambda: Feed(CustomerState(tenant="acme-fr", customer_id="C-0042")))
    log: dict[date, list[Decision]] = field(default_factory=dict)
    rates: RateTable = RATES

    @property
    def state(self) -> CustomerState:
        return self.feed.state

    def erp(self, day: date, *events: Ev) -> None:
        moment = datetime.combine(day, time(8), tzinfo=UTC)
        verdicts = self.feed.deliver(ev.at(moment) for ev in events)
        assert verdicts == ["new"] * len(events), verdicts

    def evaluate(self, day: date, hour: int = 9) -> list[Decision]:
        as_of = datetime.combine(day, time(hour), tzinfo=UTC)
        decisions = decide(self.state, self.policy, as_of, self.rates)
        assert decide(self.state, self.policy, as_of, self.rates) == decisions  # deciding twice: the same ids
        for d in decisions:
            assert d.data["policy"] == self.policy.name and d.data["policy_version"] == self.policy.version
            assert d.data["as_of"] == as_of.isoformat().replace("+00:00", "Z")
            assert d.event_id not in self.feed.seen, f"{d.event_type} decided again"
            self.feed.deliver([Ev(d.event_type, d.data, d.event_id, as_of)])
        assert decide(self.state, self.policy, as_of + timedelta(hours=1), self.rates) == []  # folded: nothing new
        if decisions:
            self.log[day] = decisions
        return decisions

    def run(self, start: date, end: date, erp: dict[date, list[Ev]] | None = None, skip: Collection[date] = ()) -> None:
        day = start
        while day <= end:
            if erp and day in erp:
                self.erp(day, *erp[day])
            if day not in skip:
                self.evaluate(day)
            day += timedelta(days=1)

    def table(self, claims: bool = True) -> dict[str, list[tuple[str, ...]]]:
        """Day -> the decisions of the day; without ``claims``, the ladder's alone (no figures of interest and
        indemnities, which tests/unit/escalation/test_claims.py walks)."""
        found = {day.isoformat(): [summary(d) for d in ds] for day, ds in sorted(self.log.items())}
        if not claims:
            found = {day: [s for s in ds if s[0] not in CLAIM_FIGURES] for day, ds in found.items()}
        return {day: ds for day, ds in found.items() if ds}

    def only(self, event_type: str) -> list[dict[str, Any]]:
        return [d.data for ds in self.log.values() for d in ds if d.event_type == event_type]


def ladder(decisions: list[Decision]) -> list[tuple[str, ...]]:
    """The ladder's decisions, without the figures of interest and indemnities (test_claims.py walks those)."""
    return [s for s in map(summary, decisions) if s[0] not in CLAIM_FIGURES]


def days(first: str, last: str) -> tuple[date, date]:
    return date.fromisoformat(first), date.fromisoformat(last)


# ---------------------------------------------------------------------------------------------------- the ladder
def test_an_unpaid_invoice_climbs_the_whole_ladder_one_level_per_step_date_and_nothing_in_between() -> None:
    # Given an unpaid invoice of 1,000.00 due on 2 March
    c = Customer()
    c.erp(date(2026, 2, 1), customer(), INV1)
    # When the engine runs every day until the end of April
    c.run(*days("2026-02-01", "2026-04-30"))
    # Then each step date produces exactly its decisions, and no other day anything
    assert c.table() == {
        "2026-02-27": [("level", "INV-1", "courtesy"), ("reminder", "EUR", "courtesy", "INV-1")],
        # The indemnity is owed from the first day late, whatever the level (claimed from the formal notice)
        "2026-03-03": [("fee", "INV-1", "40.00")],
        # Interest accrues from the first day late: 5 days (3 to 7 March) at 12.15 % on 1000 = 1.664…
        "2026-03-07": [
            ("level", "INV-1", "reminder-1"),
            ("interest", "INV-1", "1.66"),
            ("reminder", "EUR", "reminder-1", "INV-1"),
        ],
        "2026-03-14": [
            ("level", "INV-1", "call"),
            ("interest", "INV-1", "3.99"),
            ("task", "phone_call", "INV-1", "1000.00"),
        ],
        "2026-03-22": [
            ("level", "INV-1", "formal-notice"),
            # 20 days (3 to 22 March) at ECB 2.15 + 10 = 12.15 %: 1000 * 0.1215 * 20 / 365 = 6.657…
            ("interest", "INV-1", "6.66"),
            ("reminder", "EUR", "formal-notice", "INV-1"),
        ],
        "2026-04-01": [("level", "INV-1", "block"), ("interest", "INV-1", "9.99"), ("blocked", "level")],
        "2026-04-16": [
            ("level", "INV-1", "hand-over"),
            # the file's figures for the agency: 45 days at 12.15 % on 1000.00 = 14.979…
            ("interest", "INV-1", "14.98"),
            ("task", "hand_over", "INV-1", "1000.00"),
            ("handed_over", "EUR", "INV-1"),
        ],
    }
    courtesy, first, formal = c.only("reminder.requested")
    assert courtesy["lines"][0]["days_late"] == 0 and courtesy["language"] == "fr"
    assert first["lines"] == [
        {
            "invoice_id": "INV-1",
            "number": "F-INV-1",
            "issue_date": "2026-02-01",
            "due_date": "2026-03-02",
            "amount": "1000.00",
            "outstanding": "1000.00",
            "days_late": 5,
            "interest": "0",
            "fee": "0",
            "level": "reminder-1",
            "notices": [{"level": "courtesy", "reminder_id": courtesy["reminder_id"], "on": "2026-02-27"}],
        }
    ]
    assert [n["level"] for n in formal["lines"][0]["notices"]] == ["courtesy", "reminder-1"]
    assert formal["channel"] == "letter" and formal["template"] == "formal-notice"
    assert formal["totals"] == {"outstanding": "1000.00", "interest": "6.66", "fees": "40.00"}
    assert c.state.escalations["INV-1"].passed == [lv.key for lv in LADDER]
    assert c.state.credit_block is not None
    # And the snapshot of the state keeps all of it
    assert CustomerState.from_json(json.loads(json.dumps(c.state.to_json()))) == c.state


def test_next_due_names_the_next_step_and_nothing_once_the_ladder_is_done() -> None:
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    at_nine = datetime(2026, 2, 1, 9, tzinfo=UTC)
    assert next_due(c.state, POLICY, at_nine) == datetime(2026, 2, 27, tzinfo=UTC)
    c.run(*days("2026-02-27", "2026-02-27"))
    assert next_due(c.state, POLICY, datetime(2026, 2, 27, 9, tzinfo=UTC)) == datetime(2026, 3, 3, tzinfo=UTC)
    c.run(*days("2026-03-07", "2026-03-07"))
    assert next_due(c.state, POLICY, datetime(2026, 3, 7, 9, tzinfo=UTC)) == datetime(2026, 3, 14, tzinfo=UTC)
    c.run(*days("2026-03-08", "2026-04-30"))
    assert next_due(c.state, POLICY, datetime(2026, 4, 30, 9, tzinfo=UTC)) is None


def test_next_due_is_never_late_every_decision_day_was_announced() -> None:
    # Given a customer evaluated only when the timer says so (plus the ERP's own triggers)
    c = Customer()
    c.erp(date(2026, 2, 1), INV1, invoice("INV-2", "300.00", issue_date="2026-02-10", due_date="2026-03-12"))
    every_day = Customer()
    every_day.erp(date(2026, 2, 1), INV1, invoice("INV-2", "300.00", issue_date="2026-02-10", due_date="2026-03-12"))
    every_day.run(*days("2026-02-01", "2026-05-31"))
    moment: datetime | None = datetime(2026, 2, 1, 9, tzinfo=UTC)
    while moment is not None and moment.date() <= date(2026, 5, 31):
        c.evaluate(moment.date())
        moment = next_due(c.state, POLICY, datetime.combine(moment.date(), time(9), tzinfo=UTC))
    # Then the timer-driven customer saw exactly what the daily one saw
    assert c.table() == every_day.table()


def test_a_payment_the_day_before_a_step_means_nothing_is_sent() -> None:
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(
        *days("2026-02-01", "2026-04-30"), erp={date(2026, 3, 6): [payment("P1", "1000.00", received_on="2026-03-06")]}
    )
    # Then the courtesy notice is the only message; the claims of the 4 days late are owed, not claimed
    assert c.table() == {
        "2026-02-27": [("level", "INV-1", "courtesy"), ("reminder", "EUR", "courtesy", "INV-1")],
        "2026-03-03": [("fee", "INV-1", "40.00")],
        # 4 days (3 to 6 March) at 12.15 % on 1000 = 1.331…, fixed for good at the payment
        "2026-03-06": [("fixed", "INV-1", "1.33", "2026-03-06")],
    }
    assert c.state.claims_owed() == {"EUR": D("41.33")}
    assert not any(claim.claimed for claim in c.state.claims.all())
    assert next_due(c.state, POLICY, datetime(2026, 3, 6, 9, tzinfo=UTC)) is None


def test_a_partial_payment_restarts_the_interval_to_the_next_level_and_the_reminder_shows_what_is_left() -> None:
    # Given an invoice at level "call" (14 March)
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    # When 400.00 arrives on 16 March
    c.run(
        *days("2026-02-01", "2026-04-05"), erp={date(2026, 3, 16): [payment("P1", "400.00", received_on="2026-03-16")]}
    )
    # Then the formal notice comes 8 days (call → formal notice) after the payment, not on 22 March
    table = c.table()
    assert "2026-03-22" not in table
    assert table["2026-03-24"][0] == ("level", "INV-1", "formal-notice")
    (formal,) = [r for r in c.only("reminder.requested") if r["level"] == "formal-notice"]
    assert formal["lines"][0]["outstanding"] == "600.00"
    # 1000 * 12.15 % * 14 days (3-16 March) + 600 * 12.15 % * 8 days (17-24 March), / 365 = 4.660… + 1.597…
    assert formal["lines"][0]["interest"] == "6.26"
    # And the block follows the ladder's spacing from there (formal notice + 10 days)
    assert table["2026-04-03"] == [("level", "INV-1", "block"), ("interest", "INV-1", "8.26"), ("blocked", "level")]


def test_a_credit_note_counts_like_a_payment() -> None:
    from tests.factories import credit_note

    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(
        *days("2026-02-01", "2026-03-31"),
        erp={date(2026, 3, 6): [credit_note("CN1", "1000.00", issued_on="2026-03-06", invoice_id="INV-1")]},
    )
    # The invoice was settled 4 days late by the credit note: its claims are owed, fixed, and nothing else is sent
    assert c.table() == {
        "2026-02-27": [("level", "INV-1", "courtesy"), ("reminder", "EUR", "courtesy", "INV-1")],
        "2026-03-03": [("fee", "INV-1", "40.00")],
        "2026-03-06": [("fixed", "INV-1", "1.33", "2026-03-06")],
    }


# ---------------------------------------------------------------------------------------------------- disputes
def test_a_dispute_on_one_of_three_invoices_pauses_only_that_one() -> None:
    c = Customer()
    c.erp(
        date(2026, 2, 1),
        INV1,
        invoice("INV-2", "200.00", issue_date="2026-02-01", due_date=DUE),
        invoice("INV-3", "300.00", issue_date="2026-02-01", due_date=DUE),
    )
    c.run(
        *days("2026-02-01", "2026-03-18"),
        erp={date(2026, 3, 1): [dispute("INV-2")], date(2026, 3, 10): [dispute_resolved("INV-2")]},
    )
    assert c.table(claims=False) == {
        "2026-02-27": [
            ("level", "INV-1", "courtesy"),
            ("level", "INV-2", "courtesy"),
            ("level", "INV-3", "courtesy"),
            ("reminder", "EUR", "courtesy", "INV-1,INV-2,INV-3"),
        ],
        # INV-2 is disputed: neither moved nor listed
        "2026-03-07": [
            ("level", "INV-1", "reminder-1"),
            ("level", "INV-3", "reminder-1"),
            ("reminder", "EUR", "reminder-1", "INV-1,INV-3"),
        ],
        # resolved: INV-2 resumes at the next level at once; the others, already reminded, are listed apart
        "2026-03-10": [("level", "INV-2", "reminder-1"), ("reminder", "EUR", "reminder-1", "INV-2")],
        "2026-03-14": [
            ("level", "INV-1", "call"),
            ("level", "INV-3", "call"),
            ("task", "phone_call", "INV-1,INV-3", "1300.00"),
        ],
        # and keeps the ladder's spacing from there (reminder-1 + 7 days)
        "2026-03-17": [("level", "INV-2", "call"), ("task", "phone_call", "INV-2", "200.00")],
    }
    resumed = c.only("reminder.requested")[-1]
    assert [(line["invoice_id"], line["level"]) for line in resumed["also"]] == [
        ("INV-1", "reminder-1"),
        ("INV-3", "reminder-1"),
    ]


def test_a_disputed_invoice_does_not_hold_a_credit_block() -> None:
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-04-10"), erp={date(2026, 4, 5): [dispute("INV-1")]})
    assert c.table()["2026-04-05"] == [("unblocked",)]


# ---------------------------------------------------------------------------------------------------- promises
def test_a_kept_promise_pauses_the_ladder_and_ends_it() -> None:
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(
        *days("2026-02-01", "2026-04-30"),
        erp={
            date(2026, 3, 5): [promise("PR1", "2026-03-12", "1000.00", ["INV-1"])],
            date(2026, 3, 13): [payment("P1", "1000.00", received_on="2026-03-13")],
        },
    )
    assert c.table(claims=False) == {
        "2026-02-27": [("level", "INV-1", "courtesy"), ("reminder", "EUR", "courtesy", "INV-1")],
        "2026-03-12": [("task", "check_promise", "INV-1", "1000.00")],
    }


def test_a_broken_promise_gives_a_task_and_the_next_level_the_day_after_the_grace() -> None:
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-03-25"), erp={date(2026, 3, 5): [promise("PR1", "2026-03-12", "1000.00", [])]})
    assert c.table(claims=False) == {
        "2026-02-27": [("level", "INV-1", "courtesy"), ("reminder", "EUR", "courtesy", "INV-1")],
        "2026-03-12": [("task", "check_promise", "INV-1", "1000.00")],
        # promised 12 March + 2 days of grace: on the 15th the ladder resumes with the next level
        "2026-03-15": [
            ("level", "INV-1", "reminder-1"),
            ("reminder", "EUR", "reminder-1", "INV-1"),
            ("task", "promise_broken", "INV-1", "1000.00"),
        ],
        "2026-03-22": [("level", "INV-1", "call"), ("task", "phone_call", "INV-1", "1000.00")],
    }
    (broken,) = [t for t in c.only("task.created") if t["kind"] == "promise_broken"]
    assert broken["due_on"] == "2026-03-15"


# ---------------------------------------------------------------------------------------------------- plans
@pytest.mark.parametrize(
    ("payments", "expected_call"),
    [
        ({}, "2026-04-01"),  # first instalment (20 March) unpaid: call 12 days after it
        ({date(2026, 3, 19): [payment("P1", "400.00", received_on="2026-03-19")]}, "2026-05-02"),  # next: 20 April
    ],
    ids=["instalment-unpaid", "instalment-paid"],
)
def test_a_payment_plan_replaces_the_due_date_by_its_instalments(
    payments: dict[date, list[Ev]], expected_call: str
) -> None:
    c = Customer()
    c.erp(date(2026, 2, 1), invoice("INV-1", "1200.00", issue_date="2026-02-01", due_date=DUE))
    erp = {
        date(2026, 3, 8): [
            plan("PL1", ["INV-1"], [("2026-03-20", "400.00"), ("2026-04-20", "400.00"), ("2026-05-20", "400.00")])
        ]
    }
    c.run(*days("2026-02-01", "2026-05-10"), erp={**erp, **payments})
    table = c.table(claims=False)
    assert list(table)[:3] == ["2026-02-27", "2026-03-07", expected_call]
    assert table[expected_call][0] == ("level", "INV-1", "call")


# ---------------------------------------------------------------------------------------------------- downtime
def test_after_days_of_downtime_only_the_level_due_now_is_sent_and_the_skipped_ones_are_recorded() -> None:
    # Given an invoice at reminder-1, and a worker down from 13 to 23 March (the call and the formal notice passed)
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    down = {date(2026, 3, 13) + timedelta(days=n) for n in range(11)}
    c.run(*days("2026-02-01", "2026-03-31"), skip=down)
    # Then on its return it sends the formal notice alone, with the call recorded as skipped
    assert c.table(claims=False)["2026-03-24"] == [
        ("level", "INV-1", "formal-notice skipping call"),
        ("reminder", "EUR", "formal-notice", "INV-1"),
    ]
    (formal,) = [r for r in c.only("reminder.requested") if r["level"] == "formal-notice"]
    assert formal["totals"] == {"outstanding": "1000.00", "interest": "7.32", "fees": "40.00"}
    assert list(c.table(claims=False)) == ["2026-02-27", "2026-03-07", "2026-03-24"]


def test_three_days_of_downtime_over_a_step_send_that_step_late_and_once() -> None:
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-03-20"), skip={date(2026, 3, 6), date(2026, 3, 7), date(2026, 3, 8)})
    assert c.table(claims=False)["2026-03-09"] == [
        ("level", "INV-1", "reminder-1"),
        ("reminder", "EUR", "reminder-1", "INV-1"),
    ]


def test_an_invoice_recorded_late_joins_the_ladder_at_the_level_due_now() -> None:
    c = Customer()
    c.erp(date(2026, 3, 23), INV1)
    assert [summary(d) for d in c.evaluate(date(2026, 3, 23))][:1] == [
        ("level", "INV-1", "formal-notice skipping courtesy,reminder-1,call")
    ]


# ---------------------------------------------------------------------------------------------------- credit block
def test_a_payment_unblocks_credit_once() -> None:
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(
        *days("2026-02-01", "2026-04-20"), erp={date(2026, 4, 3): [payment("P1", "1000.00", received_on="2026-04-03")]}
    )
    table = c.table(claims=False)
    assert table["2026-04-01"] == [("level", "INV-1", "block"), ("blocked", "level")]
    # 32 days (3 March to 3 April) at 12.15 % on 1000 = 10.65, fixed at the payment; the claimed claims stay owed,
    # asked for once by a claims statement (tests/unit/escalation/test_claims.py walks it)
    assert table["2026-04-03"] == [
        ("reminder", "EUR", "claims", ""),
        ("unblocked",),
        ("task", "claim_owed", "INV-1", "50.65"),
    ]
    assert list(table)[-1] == "2026-04-03"
    blocked, unblocked = c.only("credit.blocked"), c.only("credit.unblocked")
    assert len(blocked) == len(unblocked) == 1 and blocked[0]["block_id"] == unblocked[0]["block_id"]
    assert blocked[0]["overdue"] == {"EUR": "1000.00"}


def test_overdue_above_the_credit_limit_blocks_and_a_partial_payment_below_it_unblocks() -> None:
    c = Customer(policy=Policy(name="limit", version="v2", levels=LADDER, business_days=False))
    c.erp(date(2026, 2, 1), customer(credit_limit={"amount": "500.00", "currency": "EUR"}), INV1)
    c.run(
        *days("2026-02-28", "2026-03-12"), erp={date(2026, 3, 10): [payment("P1", "600.00", received_on="2026-03-10")]}
    )
    table = c.table(claims=False)
    assert table["2026-03-03"] == [("blocked", "credit_limit")]
    assert table["2026-03-10"] == [("unblocked",)]
    (blocked,) = c.only("credit.blocked")
    assert blocked["credit_limit"] == {"amount": "500.00", "currency": "EUR"}


# ---------------------------------------------------------------------------------------------------- grouping
def test_one_reminder_per_currency_at_the_highest_level_and_never_two_levels_the_same_day() -> None:
    # Given invoices recorded late: INV-A due for reminder-1, INV-B for the formal notice, INV-U in dollars
    c = Customer()
    c.erp(
        date(2026, 3, 7),
        invoice("INV-A", "100.00", issue_date="2026-02-01", due_date="2026-03-02"),
        invoice("INV-B", "250.00", issue_date="2026-01-15", due_date="2026-02-15"),
        invoice("INV-U", "80.00", currency="USD", issue_date="2026-02-01", due_date="2026-03-02"),
    )
    decisions = c.evaluate(date(2026, 3, 7))
    reminders = [summary(d) for d in decisions if d.event_type == "reminder.requested"]
    # The formal notice demands INV-B alone; INV-A, at reminder-1, is listed apart at its own level
    assert reminders == [
        ("reminder", "EUR", "formal-notice", "INV-B"),
        ("reminder", "USD", "reminder-1", "INV-U"),
    ]
    (formal,) = [d.data for d in decisions if d.data.get("level") == "formal-notice" and "lines" in d.data]
    assert [(line["invoice_id"], line["level"]) for line in formal["also"]] == [("INV-A", "reminder-1")]
    # When another overdue invoice arrives the same day
    c.erp(date(2026, 3, 7), invoice("INV-C", "60.00", issue_date="2026-02-01", due_date="2026-03-01"))
    # Then it reaches its level by the calendar, but its reminder waits for the next day: one message a day
    assert ladder(c.evaluate(date(2026, 3, 7), hour=15)) == [("level", "INV-C", "reminder-1 skipping courtesy")]
    assert ladder(c.evaluate(date(2026, 3, 8))) == [
        # INV-A and INV-C were never told reminder-1: they are demanded at it; INV-B's formal notice is not repeated
        ("reminder", "EUR", "reminder-1", "INV-C,INV-A"),
    ]
    second = c.only("reminder.requested")[-1]
    (b,) = second["also"]
    assert b["invoice_id"] == "INV-B" and b["level"] == "formal-notice"
    assert b["notices"] == [{"level": "formal-notice", "reminder_id": formal["reminder_id"], "on": "2026-03-07"}]


def test_nothing_is_sent_below_the_minimum_until_the_total_reaches_it() -> None:
    policy = Policy(name="min", version="v3", levels=LADDER, business_days=False, minimum_overdue={"EUR": D("50")})
    c = Customer(policy=policy)
    c.erp(date(2026, 2, 1), invoice("INV-1", "30.00", issue_date="2026-02-01", due_date=DUE))
    c.run(*days("2026-02-01", "2026-03-09"))
    assert c.table(claims=False) == {}
    c.erp(date(2026, 3, 10), invoice("INV-2", "30.00", issue_date="2026-02-10", due_date="2026-03-09"))
    assert ladder(c.evaluate(date(2026, 3, 10))) == [
        ("level", "INV-1", "reminder-1 skipping courtesy"),  # INV-2 is listed apart, its own reminder-1 comes later
        ("reminder", "EUR", "reminder-1", "INV-1"),
    ]
    (listed,) = c.only("reminder.requested")
    assert [line["invoice_id"] for line in listed["also"]] == ["INV-2"] and "level" not in listed["also"][0]


# ---------------------------------------------------------------------------------------------------- identity
def test_the_same_decision_has_the_same_id_whoever_takes_it_and_a_new_policy_version_sends_no_level_again() -> None:
    # Given two workers with their own copy of the same ledger
    one, two = Customer(), Customer()
    for c in (one, two):
        c.erp(date(2026, 2, 1), INV1)
    # When they decide at different instants of the same day
    a = decide(one.state, POLICY, datetime(2026, 3, 22, 0, 5, tzinfo=UTC), RATES)
    b = decide(two.state, POLICY, datetime(2026, 3, 22, 0, 7, tzinfo=UTC), RATES)
    # Then the decisions carry the same ids
    assert [d.event_id for d in a] == [d.event_id for d in b] and a
    # And under a new version of the policy, the level already reached is not decided again
    one.evaluate(date(2026, 3, 22))
    revised = Policy(name="standard", version="v9", levels=LADDER, business_days=False, block_over_credit_limit=False)
    assert decide(one.state, revised, datetime(2026, 3, 23, 9, tzinfo=UTC), RATES) == []


def test_a_changed_ladder_applies_from_the_current_level_onwards() -> None:
    # Given an invoice at reminder-1 under the first ladder
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-03-08"))
    # When the policy changes: a new reminder-2 at +10 and no call, the rest renamed
    c.policy = Policy(
        name="standard",
        version="v2",
        business_days=False,
        block_over_credit_limit=False,
        levels=(
            Level("courtesy", -3, "email", "courtesy"),
            Level("reminder-1", 5, "email", "reminder-1"),
            Level("reminder-2", 10, "email", "reminder-2"),
            Level("mise-en-demeure", 25, "letter", "formal-notice", frozenset({"charge_fee"})),
        ),
    )
    c.run(*days("2026-03-09", "2026-04-30"))
    # Then the next steps follow the new ladder, and nothing already reached is sent again
    table = c.table(claims=False)
    assert [day for day in table if day > "2026-03-08"] == ["2026-03-12", "2026-03-27"]
    assert table["2026-03-27"][0] == ("level", "INV-1", "mise-en-demeure")


def test_a_level_of_a_changed_ladder_is_placed_by_its_offset_when_its_key_is_gone() -> None:
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-03-15"))  # at "call" (+12)
    c.policy = Policy(
        name="standard",
        version="v3",
        business_days=False,
        block_over_credit_limit=False,
        levels=(Level("first", 5, "email", "r1"), Level("second", 10, "email", "r2"), Level("last", 40, "letter", "f")),
    )
    c.run(*days("2026-03-16", "2026-04-30"))
    assert [s for ds in c.table(claims=False).values() for s in ds if s[0] == "level"][-1] == ("level", "INV-1", "last")
    assert sum(1 for day in c.table(claims=False) if day > "2026-03-15") == 1


# ---------------------------------------------------------------------------------------------------- calendar
def test_a_step_on_a_weekend_moves_to_the_next_business_day() -> None:
    c = Customer(policy=Policy(name="bd", version="v4", levels=LADDER, block_over_credit_limit=False))
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-03-16"))
    # 27 Feb is a Friday; 7 March a Saturday → Monday 9; 14 March a Saturday → Monday 16
    assert list(c.table(claims=False)) == ["2026-02-27", "2026-03-09", "2026-03-16"]


# ---------------------------------------------------------------------------------------------------- behaviour
def test_a_customer_paying_much_later_than_usual_gets_one_task_per_episode() -> None:
    c = Customer(policy=Policy(name="quiet", version="v5", levels=(), business_days=False))
    # Given five invoices paid on their due date, then three paid 30 days late
    history: list[Ev] = []
    for n in range(8):
        due = date(2025, 1, 31) + timedelta(days=30 * n)
        paid = due + timedelta(days=0 if n < 5 else 30)
        history += [
            invoice(f"INV-{n}", "100.00", issue_date=due - timedelta(days=30), due_date=due),
            payment(f"P{n}", "100.00", received_on=paid),
        ]
    c.erp(date(2025, 11, 1), *history, invoice("INV-9", "500.00", issue_date="2025-10-15", due_date="2025-11-30"))
    # When the engine runs (the late payments' claims are owed, unclaimed under this ladder)
    decided = c.evaluate(date(2025, 11, 1))
    assert {summary(d)[0] for d in decided} == {"fee", "fixed", "task"}
    (task,) = [d for d in decided if d.event_type == "task.created"]
    # Then one task, for the open amount, and no other while the episode lasts
    assert summary(task) == ("task", "payment_behaviour_changed", "INV-9", "500.00")
    c.erp(date(2025, 11, 2), payment("P99", "50.00", received_on="2025-11-02"))
    assert c.evaluate(date(2025, 11, 2)) == []


def test_payments_as_late_as_usual_give_no_behaviour_task() -> None:
    c = Customer(policy=Policy(name="quiet", version="v5", levels=(), business_days=False))
    history: list[Ev] = []
    for n in range(8):
        due = date(2025, 1, 31) + timedelta(days=30 * n)
        paid = due + timedelta(days=20 if n < 5 else 34)  # 14 days later than usual: within the margin
        history += [
            invoice(f"INV-{n}", "100.00", issue_date=due - timedelta(days=30), due_date=due),
            payment(f"P{n}", "100.00", received_on=paid),
        ]
    c.erp(date(2025, 11, 1), *history, invoice("INV-9", "500.00", issue_date="2025-10-15", due_date="2025-11-30"))
    assert [summary(d) for d in c.evaluate(date(2025, 11, 1)) if summary(d)[0] not in CLAIM_FIGURES] == []


def test_below_the_minimum_no_timer_fires_every_day() -> None:
    policy = Policy(name="min", version="v3", levels=LADDER, business_days=False, minimum_overdue={"EUR": D("50")})
    c = Customer(policy=policy)
    c.erp(date(2026, 2, 1), invoice("INV-1", "30.00", issue_date="2026-02-01", due_date=DUE))
    assert next_due(c.state, policy, datetime(2026, 4, 20, 9, tzinfo=UTC)) is None


# ---------------------------------------------------------------------------------------------------- one invoice alone
def hold_tasks(decisions: list[Decision]) -> list[dict[str, Any]]:
    kinds = ("invoice_dates_invalid", "interest_unavailable")
    return [d.data for d in decisions if d.event_type == "task.created" and d.data["kind"] in kinds]


@pytest.mark.parametrize("extreme", ["9999-12-31", "0001-01-01"])
def test_an_invoice_dated_at_the_edge_of_the_calendar_is_held_and_the_others_are_reminded(extreme: str) -> None:
    # Given a customer with a genuinely late invoice and one whose due date is at the edge of the calendar
    edge = invoice("INV-EDGE", "500.00", issue_date=extreme, due_date=extreme, number="F-123")
    c = Customer(rates=RateTable({date(year, month, 1): D("2.15") for year in (2025, 2026) for month in (1, 7)}))
    c.erp(date(2026, 2, 1), customer(), INV1, edge)
    # When the engine runs every day through the first reminder
    c.run(*days("2026-02-01", "2026-03-07"))
    # Then the late invoice got its courtesy notice and its first reminder, without the other one
    reminders = c.only("reminder.requested")
    assert [(r["level"], r["invoice_ids"]) for r in reminders] == [("courtesy", ["INV-1"]), ("reminder-1", ["INV-1"])]
    # And the other invoice is one task for a collector, with the reason, created once however often it is decided
    (task,) = [t for t in c.only("task.created") if t["kind"] == "invoice_dates_invalid"]
    assert task["invoice_ids"] == ["INV-EDGE"] and task["amount_at_risk"] == "500.00"
    assert (
        f"invoice F-123 cannot be placed on the dunning ladder: its dates (issued {extreme}, due {extreme})"
        in (task["note"])
    )
    assert "INV-EDGE" not in c.state.escalations
    # And the next timer still comes from the invoice that can be reminded
    assert next_due(c.state, POLICY, datetime(2026, 3, 7, 9, tzinfo=UTC), c.rates) == datetime(2026, 3, 14, tzinfo=UTC)


def test_an_invoice_older_than_the_rate_table_is_held_for_its_interest_and_the_others_go_on() -> None:
    # Given a rate table that begins in 2026, a customer with an invoice due in 2025 and one due on 2 March 2026
    table = RateTable({date(2026, 1, 1): D("2.15"), date(2026, 7, 1): D("2.15")})
    old = invoice("INV-OLD", "800.00", issue_date="2025-04-01", due_date="2025-05-02", number="F-OLD")
    c = Customer(rates=table)
    c.erp(date(2026, 2, 1), customer(), INV1, old)
    # When the engine runs until the 2026 invoice reached its formal notice
    c.run(*days("2026-02-01", "2026-03-22"))
    # Then the 2026 invoice climbed the ladder with its interest, never listing the old one
    reminders = c.only("reminder.requested")
    assert [(r["level"], r["invoice_ids"]) for r in reminders] == [
        ("courtesy", ["INV-1"]),
        ("reminder-1", ["INV-1"]),
        ("formal-notice", ["INV-1"]),
    ]
    assert reminders[-1]["totals"]["interest"] == "6.66"
    # And the old invoice is one task naming the semester and the line to add, never a guessed rate
    (task,) = hold_tasks([d for ds in c.log.values() for d in ds])
    assert task["kind"] == "interest_unavailable" and task["semester"] == "2025-01-01"
    assert task["note"].startswith(
        "interest cannot be computed for invoice F-OLD: no reference rate for the semester starting 2025-01-01 "
        'in the rate table; add the row "2025-01-01,<rate in percent>"'
    )
    assert "INV-OLD" not in c.state.escalations
    # And it is looked at again the next day, in case the rate was added
    assert next_due(c.state, POLICY, datetime(2026, 3, 22, 9, tzinfo=UTC), table) == datetime(2026, 3, 23, tzinfo=UTC)


def test_a_semester_without_a_rate_holds_only_what_needs_interest_until_the_rate_is_added() -> None:
    # Given a rate table that stops at the semester starting 1 January 2026, and an invoice due on 22 June 2026
    c = Customer(rates=RateTable({date(2026, 1, 1): D("2.15")}))
    c.erp(date(2026, 6, 1), customer(), invoice("INV-7", "1000.00", issue_date="2026-05-22", due_date="2026-06-22"))
    # When the engine runs past the day the formal notice falls due (12 July, interest accrued in July)
    c.run(*days("2026-06-01", "2026-07-20"))
    # Then the reminders that need no interest went out, the formal notice did not, and one task says why
    assert [r["level"] for r in c.only("reminder.requested")] == ["courtesy", "reminder-1"]
    assert [t["kind"] for t in c.only("task.created")] == ["phone_call", "interest_unavailable"]
    assert c.only("task.created")[1]["semester"] == "2026-07-01"
    # (interest accrued in June was recorded at reminder-1; nothing after, the July rate is missing; the indemnity
    # was owed the first day late)
    assert [(i["amount"], i["through"]) for i in c.only("interest.computed")] == [("1.66", "2026-06-27")]
    assert [f["amount"] for f in c.only("fee.charged")] == ["40.00"]
    # When the rate of that semester is added
    c.rates = RateTable({date(2026, 1, 1): D("2.15"), date(2026, 7, 1): D("2.15")})
    decisions = c.evaluate(date(2026, 7, 21))
    # Then the formal notice goes out the next evaluation, with the interest through that day
    formal = [d.data for d in decisions if d.event_type == "reminder.requested"]
    assert [f["level"] for f in formal] == ["formal-notice"]
    # 29 days (23 June to 21 July) at 12.15 %: 1000 * 0.1215 * 29 / 365 = 9.653...
    assert formal[0]["totals"] == {"outstanding": "1000.00", "interest": "9.65", "fees": "40.00"}


def test_a_promise_dated_at_the_end_of_the_calendar_pauses_its_invoice_without_failing() -> None:
    # Given a late invoice and a promise to pay it on the last day of the calendar
    c = Customer()
    c.erp(date(2026, 2, 1), customer(), INV1)
    c.erp(date(2026, 3, 3), promise("PR-1", "9999-12-31", "1000.00", ["INV-1"]))
    # When the engine runs for weeks
    c.run(*days("2026-03-03", "2026-04-30"))
    # Then the invoice waits on its promise, and the next timer is the end of the calendar, never an error
    assert c.only("reminder.requested") == []
    later = next_due(c.state, POLICY, datetime(2026, 4, 30, 9, tzinfo=UTC), RATES)
    assert later == datetime(9999, 12, 31, tzinfo=UTC)
