"""What a customer receives keeps the policy's rules, whatever its history: a property test of the engine.

Random histories of one customer (invoices in two currencies, partial payments, credit notes, disputes and their
resolution, promises, payment plans) under random cadences, time zones and send hours, with the worker down on
random days, evaluated day by day (twice a day) with every decision folded in before the next evaluation. Then:

* no contact breaks the cadence (interval since the last contact day, contacts in any window, the send hour);
* no written level is sent twice for an invoice;
* no message lists an invoice at a level gentler than what it reached (a call counts) or was told before;
* the timer (:func:`next_due`) is never late: whatever an evaluation decides without the ERP having sent anything
  since the one before, the timer set then had fallen due;
* no demand lists an invoice not yet due (but a courtesy notice its own), no ``also`` lists one, and once handed
  over an invoice is listed only in its hand-over notice;
* no message asks for a claim paid or waived, and a claims statement asks only for claims no message asked for
  before (so none twice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import event, given, settings
from hypothesis import strategies as st

from services.escalation.engine import decide, next_due
from services.escalation.interest import RateTable
from services.escalation.model import Cadence, Level, Policy
from shared.contracts.events import CLAIMS_STATEMENT
from shared.ledger.state import CustomerState
from tests.factories import Ev, Feed, credit_note, customer, dispute, dispute_resolved, invoice, payment, plan, promise
from tests.unit.escalation.test_claims import check_claims_asked

RATES = RateTable({date(2026, 1, 1): Decimal("2.15"), date(2026, 7, 1): Decimal("2.15")})  # every day of the runs
START = date(2026, 3, 1)
DAYS = 150
HOURS = (time(6), time(18))  # the worker's evaluations of a day, UTC
ERP_AT = time(5)  # the ERP's messages of a day arrive before the first evaluation


def ladder(formal_interval: int | None) -> tuple[Level, ...]:
    return (
        Level("courtesy", -3, "email", "courtesy"),
        Level("reminder-1", 2, "email", "reminder-1"),
        Level("reminder-2", 9, "email", "reminder-2"),
        Level("call", 13, "phone", None),
        Level(
            "formal-notice",
            20,
            "letter",
            "formal-notice",
            frozenset({"charge_interest", "charge_fee"}),
            min_days_since_contact=formal_interval,
        ),
        Level("block", 28, "none", None, frozenset({"block_credit"})),
        Level("credit-block", 32, "email", "credit-block", frozenset({"block_credit"})),
        Level("hand-over", 45, "letter", "hand-over", frozenset({"hand_over"})),
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    cadence = Cadence(
        min_days_between_contacts=draw(st.integers(0, 10)),
        max_contacts=draw(st.none() | st.integers(1, 5)),
        window_days=draw(st.integers(7, 40)),
    )
    return Policy(
        name="prop",
        version="v1",
        levels=ladder(draw(st.none() | st.integers(0, 14))),
        business_days=draw(st.booleans()),
        block_over_credit_limit=False,
        cadence=cadence,
        timezone=draw(st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo"])),
        send_hour=draw(st.sampled_from([0, 8, 14])),
        minimum_overdue={"EUR": Decimal("10.00")},
    )


@st.composite
def schedules(draw: st.DrawFn) -> dict[date, list[Ev]]:
    """The ERP's messages, by the day they arrive."""
    by_day: dict[date, list[Ev]] = {}

    def on(day: int, ev: Ev) -> None:
        by_day.setdefault(START + timedelta(days=day), []).append(ev)

    invoices: list[tuple[str, int, int, str]] = []  # id, issue day, due day, currency
    for n in range(draw(st.integers(1, 6))):
        issued = draw(st.integers(0, 90))
        due = issued + draw(st.integers(0, 45))
        currency = draw(st.sampled_from(["EUR", "EUR", "USD"]))
        amount = f"{draw(st.integers(20, 5000))}.00"
        on(issued, invoice(f"INV-{n}", amount, currency=currency, issue_date=START + timedelta(days=issued),
                           due_date=START + timedelta(days=due)))  # fmt: skip
        invoices.append((f"INV-{n}", issued, due, currency))
    eur = [i for i in invoices if i[3] == "EUR"]
    for n in range(draw(st.integers(0, 4))):
        day = draw(st.integers(0, DAYS - 1))
        currency = draw(st.sampled_from(["EUR", "USD"]))
        on(day, payment(f"P{n}", f"{draw(st.integers(5, 2000))}.00", currency=currency,
                        received_on=START + timedelta(days=day)))  # fmt: skip
    for n in range(draw(st.integers(0, 2))):
        target, issued, _, currency = draw(st.sampled_from(invoices))
        day = draw(st.integers(issued, DAYS - 1))
        on(day, credit_note(f"CN{n}", f"{draw(st.integers(5, 500))}.00", currency=currency,
                            issued_on=START + timedelta(days=day), invoice_id=target))  # fmt: skip
    for target, issued, _, _ in draw(st.lists(st.sampled_from(invoices), max_size=2, unique=True)):
        day = draw(st.integers(issued, DAYS - 1))
        on(day, dispute(target))
        if draw(st.booleans()):
            on(draw(st.integers(day + 1, DAYS)), dispute_resolved(target))
    promised_too, planned_too = draw(st.booleans()), draw(st.booleans())
    if eur and promised_too:
        target, issued, due, _ = draw(st.sampled_from(eur))
        day = draw(st.integers(issued, DAYS - 1))
        promised = START + timedelta(days=day + draw(st.integers(0, 15)))
        on(day, promise("PR1", promised.isoformat(), f"{draw(st.integers(5, 500))}.00", [target]))
    if eur and planned_too:
        target, issued, due, _ = draw(st.sampled_from(eur))
        day = draw(st.integers(issued, DAYS - 1))
        first = START + timedelta(days=day + draw(st.integers(1, 20)))
        instalments = [((first + timedelta(days=30 * k)).isoformat(), "10.00") for k in range(3)]
        on(day, plan("PL1", [target], instalments))
    return by_day


@dataclass
class Run:
    policy: Policy
    feed: Feed = field(default_factory=lambda: Feed(CustomerState(tenant="acme-fr", customer_id="C-0042")))
    evaluations: list[tuple[datetime, list[dict[str, Any]], list[str]]] = field(default_factory=list)
    timer: datetime | None = None  # what next_due said after the last evaluation
    touched: bool = True  # the ERP sent something since the last evaluation (which triggers one of its own)
    asked: set[tuple[str, str]] = field(default_factory=set)  # the claims messages asked for: (invoice, kind)

    def erp(self, day: date, events: list[Ev]) -> None:
        moment = datetime.combine(day, ERP_AT, tzinfo=UTC)
        self.feed.deliver(ev.at(moment) for ev in events)  # what the ledger refuses, it refuses
        self.touched = True

    def evaluate(self, as_of: datetime) -> None:
        decisions = decide(self.feed.state, self.policy, as_of, RATES)
        if decisions and not self.touched:  # the timer is never late: it fired by now
            assert self.timer is not None and self.timer <= as_of, (self.timer, as_of, decisions)
        for d in decisions:
            self.feed.deliver([Ev(d.event_type, d.data, d.event_id, as_of)])
            if d.event_type == "reminder.requested":  # no claim paid or waived asked for, none stated twice
                check_claims_asked(self.feed.state, d.data, self.asked)
        assert decide(self.feed.state, self.policy, as_of, RATES) == []  # folded: nothing new
        self.evaluations.append((as_of, [d.data for d in decisions], [d.event_type for d in decisions]))
        self.timer, self.touched = next_due(self.feed.state, self.policy, as_of, RATES), False


@settings(max_examples=150, deadline=None)
@given(policy=policies(), schedule=schedules(), down=st.sets(st.integers(0, DAYS), max_size=25))
def test_what_the_customer_receives_keeps_the_policys_rules(
    policy: Policy, schedule: dict[date, list[Ev]], down: set[int]
) -> None:
    run = Run(policy)
    run.erp(START, [customer()])
    for n in range(DAYS + 1):
        day = START + timedelta(days=n)
        if day in schedule:
            run.erp(day, schedule[day])
        if n in down:
            continue
        for hour in HOURS:
            run.evaluate(datetime.combine(day, hour, tzinfo=UTC))
    check(run)
    kinds = [kind for _, _, types in run.evaluations for kind in types]
    event(f"reminders: {min(kinds.count('reminder.requested'), 6)}")  # what the examples exercised
    event(f"with also: {any('also' in data for _, decided, _ in run.evaluations for data in decided)}")
    event(f"handed over: {'collection.handed_over' in kinds}")
    stated = any(data.get("level") == CLAIMS_STATEMENT for _, decided, _ in run.evaluations for data in decided)
    event(f"claims statement: {stated}")


def check(run: Run) -> None:
    """One pass over the log, in order, with one assertion per rule."""
    policy = run.policy
    zone = ZoneInfo(policy.timezone)
    index = {level.key: k for k, level in enumerate(policy.levels)}
    reached: dict[str, int] = {}  # invoice -> firmest level with a channel reached (or passed over)
    told: dict[str, int] = {}  # invoice -> firmest level told
    written: set[tuple[str, str]] = set()  # (invoice, level) demanded
    handed: set[str] = set()
    contact_days: list[date] = []
    for as_of, decided, types in run.evaluations:
        today = as_of.astimezone(zone).date()
        firmest_told_now = -1
        contacted_now = False
        for kind, data in zip(types, decided, strict=True):
            if kind == "escalation.level_reached":
                keys = [*data["skipped"], data["level"]]
                contacts = [index[k] for k in keys if policy.levels[index[k]].contacts]
                reached[data["invoice_id"]] = max([reached.get(data["invoice_id"], -1), *contacts])
            elif kind == "collection.handed_over":
                handed |= set(data["invoice_ids"])
            elif kind == "task.created" and data["kind"] == "phone_call":
                contacted_now = True
                rank = index[data["level"]]
                firmest_told_now = max(firmest_told_now, rank)
                for invoice_id in data["invoice_ids"]:
                    assert rank >= reached.get(invoice_id, -1), (as_of, data)
                    assert invoice_id not in handed, (as_of, data)
                    told[invoice_id] = max(told.get(invoice_id, -1), rank)
            elif kind == "reminder.requested" and data["level"] == CLAIMS_STATEMENT:
                contacted_now = True  # a contact, at the cadence's own interval, that demands no invoice
            elif kind == "reminder.requested":
                contacted_now = True
                level = policy.levels[index[data["level"]]]
                firmest_told_now = max(firmest_told_now, index[level.key])
                for line in data["lines"]:
                    invoice_id = line["invoice_id"]
                    assert line["level"] == level.key
                    assert (invoice_id, level.key) not in written, f"{level.key} sent twice for {invoice_id}"
                    written.add((invoice_id, level.key))
                    assert index[level.key] >= max(reached.get(invoice_id, -1), told.get(invoice_id, -1))
                    if level.offset_days < 0:
                        assert line["days_late"] == 0 and "also" not in data
                    else:
                        assert line["days_late"] > 0, (as_of, data)
                    assert invoice_id not in handed or "hand_over" in level.actions, (as_of, data)
                for line in data.get("also", []):
                    invoice_id = line["invoice_id"]
                    assert line["days_late"] > 0 and invoice_id not in handed, (as_of, data)
                    firmest = max(reached.get(invoice_id, -1), told.get(invoice_id, -1))
                    if "level" in line:
                        assert index[line["level"]] >= firmest, (as_of, line)
                    else:
                        assert firmest < 0 or policy.levels[firmest].offset_days < 0, (as_of, line)
                for line in data["lines"]:
                    told[line["invoice_id"]] = max(told.get(line["invoice_id"], -1), index[level.key])
        if not contacted_now:
            continue
        assert as_of.astimezone(zone).hour >= policy.send_hour, as_of
        if contact_days and contact_days[-1] == today:
            continue  # a second contact the same day joins the first
        if contact_days:
            own = policy.levels[firmest_told_now].min_days_since_contact if firmest_told_now >= 0 else None
            interval = policy.cadence.min_days_between_contacts if own is None else own
            assert (today - contact_days[-1]).days >= interval, (contact_days, today)
        contact_days.append(today)
        if policy.cadence.max_contacts is not None:
            first = today - timedelta(days=policy.cadence.window_days - 1)
            assert sum(1 for d in contact_days if d >= first) <= policy.cadence.max_contacts, (contact_days, today)
