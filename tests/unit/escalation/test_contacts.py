"""What the customer is told, apart from what its invoices reached: cadence, each written level once, tone, hand-over,
the tenant's days. Walked one day at a time like the engine's scenarios (see test_engine.py), on a ladder with a
weekly cadence.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from services.escalation.contacts import ContactDays
from services.escalation.engine import decide, next_due
from services.escalation.model import Cadence, Level, Policy
from shared.ledger import snapshot
from shared.ledger.db import make_engine
from shared.ledger.migrate import upgrade
from shared.ledger.schema import customer_state
from shared.ledger.store import Ledger
from tests.factories import CUSTOMER, TENANT, Ev, customer, incoming, invoice, payment, summary
from tests.unit.escalation.test_engine import RATES, Customer, days

LADDER = (
    Level("courtesy", -3, "email", "courtesy"),
    Level("reminder-1", 5, "email", "reminder-1"),
    Level("reminder-2", 12, "email", "reminder-2"),
    Level("call", 16, "phone", None),
    Level("formal-notice", 25, "letter", "formal-notice", frozenset({"charge_interest", "charge_fee"})),
    Level("credit-block", 35, "email", "credit-block", frozenset({"block_credit"})),
    Level("hand-over", 50, "letter", "hand-over", frozenset({"hand_over"})),
)
WEEKLY = Cadence(min_days_between_contacts=7, max_contacts=4, window_days=30)
POLICY = Policy(
    name="weekly", version="v1", levels=LADDER, business_days=False, block_over_credit_limit=False, cadence=WEEKLY
)


def weekly(**changes: Any) -> Customer:
    fields: dict[str, Any] = {
        "name": "weekly",
        "version": "v1",
        "levels": LADDER,
        "business_days": False,
        "block_over_credit_limit": False,
        "cadence": WEEKLY,
    }
    c = Customer(policy=Policy(**(fields | changes)))
    c.erp(date(2026, 2, 1), customer())
    return c


def two_days_apart() -> Customer:
    """A customer with INV-1 due on 2 March and INV-2 due on 4 March: their steps fall two days apart."""
    c = weekly()
    first = invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02")
    c.erp(date(2026, 2, 1), first, invoice("INV-2", "500.00", issue_date="2026-02-03", due_date="2026-03-04"))
    return c


def reminders(c: Customer) -> list[dict[str, Any]]:
    return c.only("reminder.requested")


def contact_days(c: Customer) -> list[str]:
    found = {r["as_of"][:10] for r in reminders(c)}
    found |= {t["as_of"][:10] for t in c.only("task.created") if t["kind"] == "phone_call"}
    return sorted(found)


# ---------------------------------------------------------------------------------------------------- 1. reached / told
def test_a_level_reached_between_two_contacts_is_recorded_on_its_day_and_told_at_the_next_allowed_contact() -> None:
    # Given two invoices two days apart: INV-1 due 2 March, INV-2 due 4 March
    c = two_days_apart()
    # When the engine runs every day
    c.run(*days("2026-02-01", "2026-03-14"))
    table = c.table(claims=False)
    # Then INV-2 reaches reminder-1 on its step day (9 March), two days after INV-1's reminder-1 went out ...
    assert table["2026-03-07"] == [("level", "INV-1", "reminder-1"), ("reminder", "EUR", "reminder-1", "INV-1")]
    assert table["2026-03-09"] == [("level", "INV-2", "reminder-1")]
    assert c.state.escalations["INV-2"].reached_on == date(2026, 3, 9)
    # ... and is told at the next allowed contact, a week after the last one, at the level it reached by then
    assert table["2026-03-14"] == [("level", "INV-1", "reminder-2"), ("reminder", "EUR", "reminder-2", "INV-1")]
    last = reminders(c)[-1]
    assert [(line["invoice_id"], line["level"]) for line in last["also"]] == [("INV-2", "reminder-1")]
    # INV-2, listed apart, is still to be told its level: nothing was demanded for it yet
    assert c.state.escalations["INV-2"].notices == []


# ---------------------------------------------------------------------------------------------------- 2. cadence
def test_contacts_keep_a_week_apart_and_four_in_thirty_days_and_what_waits_merges_into_the_next_one() -> None:
    # Given the same two invoices, two days apart
    c = two_days_apart()
    # When the engine runs every day through April
    c.run(*days("2026-02-01", "2026-04-30"))
    # Then the customer is contacted on these days only: a week apart at least, never a fifth time in 30 days
    # (28 March would be the fifth contact in the 30 days from 27 February; 5 April the fifth from 7 March)
    assert contact_days(c) == ["2026-02-27", "2026-03-07", "2026-03-14", "2026-03-21", "2026-03-29", "2026-04-06",
                               "2026-04-13", "2026-04-21", "2026-04-28"]  # fmt: skip
    # And on 21 March both calls are one task (INV-1 reached the call on the 18th, INV-2 on the 20th)
    calls = [t for t in c.only("task.created") if t["kind"] == "phone_call"]
    assert [(t["as_of"][:10], t["invoice_ids"], t["level"]) for t in calls] == [
        ("2026-03-21", ["INV-1", "INV-2"], "call")
    ]
    # And INV-1 (formal notice due 27 March) and INV-2 (29 March) waited for the same contact: one formal notice
    formal = [(r["as_of"][:10], r["invoice_ids"]) for r in reminders(c) if r["level"] == "formal-notice"]
    assert formal == [("2026-03-29", ["INV-1", "INV-2"])]
    assert c.table()["2026-03-27"][0] == ("level", "INV-1", "formal-notice")


def test_a_level_may_ask_for_a_longer_interval_since_the_last_contact() -> None:
    # Given a ladder whose formal notice waits 10 days after any contact
    levels = tuple(
        Level(lv.key, lv.offset_days, lv.channel, lv.template, lv.actions, min_days_since_contact=10)
        if lv.key == "formal-notice"
        else lv
        for lv in LADDER
    )
    c = weekly(levels=levels, version="v2")
    c.erp(date(2026, 2, 1), invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"))
    c.run(*days("2026-02-01", "2026-04-10"))
    # Then the call of 18 March is followed by the formal notice 10 days later, not on its step day (27 March)
    assert contact_days(c)[:5] == ["2026-02-27", "2026-03-07", "2026-03-14", "2026-03-21", "2026-03-31"]
    assert c.table()["2026-03-27"][0] == ("level", "INV-1", "formal-notice")
    assert [r["as_of"][:10] for r in reminders(c) if r["level"] == "formal-notice"] == ["2026-03-31"]


def test_the_contact_days_and_the_cadence() -> None:
    history = ContactDays((date(2026, 3, 1), date(2026, 3, 8), date(2026, 3, 15), date(2026, 3, 22)))
    assert history.allows(date(2026, 3, 22), 7, WEEKLY)  # already a contact day: a second currency joins it
    assert not history.allows(date(2026, 3, 28), 7, WEEKLY)  # six days after the last
    assert not history.allows(date(2026, 3, 29), 7, WEEKLY)  # a fifth contact in the 30 days from 28 February
    assert history.allows(date(2026, 3, 31), 7, WEEKLY)  # 1 March has left the window
    assert history.next_allowed(date(2026, 3, 23), 7, WEEKLY) == date(2026, 3, 31)
    assert ContactDays(()).next_allowed(date(2026, 3, 23), 7, WEEKLY) == date(2026, 3, 23)


def test_no_contact_before_the_send_hour_and_the_timer_names_it() -> None:
    # Given a tenant sending from 10:00
    c = weekly(send_hour=10, version="v3")
    c.erp(date(2026, 2, 1), invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"))
    c.run(*days("2026-02-01", "2026-02-26"))
    # When the engine runs at 08:00 on the day of the courtesy notice
    early = c.evaluate(date(2026, 2, 27), hour=8)
    # Then the level is reached, the message waits, and the timer says when it may go
    assert [summary(d) for d in early] == [("level", "INV-1", "courtesy")]
    at_eight = datetime(2026, 2, 27, 8, tzinfo=UTC)
    assert next_due(c.state, c.policy, at_eight) == datetime(2026, 2, 27, 10, tzinfo=UTC)
    assert [summary(d) for d in c.evaluate(date(2026, 2, 27), hour=11)] == [("reminder", "EUR", "courtesy", "INV-1")]


# ---------------------------------------------------------------------------------------------------- 3. the message
def test_a_formal_notice_is_sent_once_per_invoice_whatever_the_other_invoices_do() -> None:
    # Given an invoice past its formal notice, then a new invoice every week for two months
    c = weekly()
    c.erp(date(2026, 2, 1), invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"))
    erp = {
        date(2026, 3, 1) + timedelta(days=7 * n): [
            invoice(f"INV-N{n}", "100.00", issue_date=date(2026, 3, 1) + timedelta(days=7 * n),
                    due_date=date(2026, 3, 10) + timedelta(days=7 * n))
        ]
        for n in range(8)
    }  # fmt: skip
    c.run(*days("2026-02-01", "2026-05-15"), erp=erp)
    # Then each invoice is demanded at each written level once at most
    demanded = [(line["invoice_id"], line["level"]) for r in reminders(c) for line in r["lines"]]
    assert len(demanded) == len(set(demanded))
    assert sum(1 for r in reminders(c) if "INV-1" in r["invoice_ids"] and r["level"] == "formal-notice") == 1
    # And every later message lists INV-1 apart, at its own level, with the date and reference of its notices
    (formal,) = [r for r in reminders(c) if r["level"] == "formal-notice" and r["invoice_ids"] == ["INV-1"]]
    (handed,) = [r for r in reminders(c) if r["level"] == "hand-over" and r["invoice_ids"] == ["INV-1"]]
    later = [r for r in reminders(c) if formal["as_of"] < r["as_of"] < handed["as_of"]]
    assert len(later) >= 3
    notice = {"level": "formal-notice", "reminder_id": formal["reminder_id"], "on": formal["as_of"][:10]}
    for r in later:
        if "INV-1" in r["invoice_ids"]:  # its next written level, once
            assert r["level"] == "credit-block" and notice in r["lines"][0]["notices"]
            continue
        [listed] = [line for line in r["also"] if line["invoice_id"] == "INV-1"]
        assert listed["level"] in ("formal-notice", "credit-block") and notice in listed["notices"]


def test_invoices_not_yet_due_are_in_no_demand_and_a_courtesy_notice_lists_only_its_own() -> None:
    # Given an invoice at its formal notice and a new one coming due
    c = weekly()
    c.erp(date(2026, 2, 1), invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"))
    c.run(*days("2026-02-01", "2026-03-28"))
    c.erp(date(2026, 3, 29), invoice("INV-2", "300.00", issue_date="2026-03-29", due_date="2026-04-16"))
    c.run(*days("2026-03-29", "2026-04-30"))
    # Then INV-2's courtesy notice lists INV-2 alone; no reminder lists it before it is due
    courtesy = [r for r in reminders(c) if r["level"] == "courtesy"]
    assert [r["invoice_ids"] for r in courtesy] == [["INV-1"], ["INV-2"]]
    assert all("also" not in r for r in courtesy)
    for r in reminders(c):
        if r["level"] == "courtesy":
            continue
        for line in [*r["lines"], *r.get("also", [])]:
            assert line["days_late"] > 0, (r["level"], line)


# ---------------------------------------------------------------------------------------------------- 4. tone
def test_tone_never_softens_a_called_invoice_is_listed_at_the_call_and_a_younger_one_gets_its_gentle_message() -> None:
    # Given an invoice that reached the call (told by phone) and a younger one reaching its first reminder
    c = weekly()
    c.erp(
        date(2026, 2, 1),
        invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"),
        invoice("INV-2", "200.00", issue_date="2026-03-01", due_date="2026-03-15"),
    )
    c.run(*days("2026-02-01", "2026-03-28"))
    # Then on 21 March the older invoice's call is a task, and the younger invoice's reminder-1 demands it alone,
    # listing the older one at the call, never gentler
    assert c.table(claims=False)["2026-03-21"] == [
        ("task", "phone_call", "INV-1", "1000.00"),
        ("reminder", "EUR", "reminder-1", "INV-2"),
    ]
    (first,) = [r for r in reminders(c) if r["level"] == "reminder-1" and r["invoice_ids"] == ["INV-2"]]
    assert [(line["invoice_id"], line["level"]) for line in first["also"]] == [("INV-1", "call")]
    # And no line of any message is gentler than a level its invoice was told before
    told: dict[str, int] = {}
    index = {lv.key: k for k, lv in enumerate(LADDER)}
    for day, decisions in sorted(c.log.items()):
        for d in decisions:
            if d.event_type == "reminder.requested":
                for line in [*d.data["lines"], *d.data.get("also", [])]:
                    assert index[line["level"]] >= told.get(line["invoice_id"], -1), (day, line)
                for line in d.data["lines"]:
                    told[line["invoice_id"]] = index[line["level"]]
            elif d.event_type == "task.created" and d.data["kind"] == "phone_call":
                for invoice_id in d.data["invoice_ids"]:
                    told[invoice_id] = index[d.data["level"]]


# ---------------------------------------------------------------------------------------------------- 5. hand-over
def test_the_hand_over_is_one_letter_one_command_and_ends_the_ladder_for_its_invoices() -> None:
    # Given an invoice climbing the whole ladder, and a new invoice issued after its hand-over
    c = weekly()
    c.erp(date(2026, 2, 1), invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"))
    c.run(
        *days("2026-02-01", "2026-06-30"),
        erp={date(2026, 4, 25): [invoice("INV-2", "400.00", issue_date="2026-04-25", due_date="2026-05-15")]},
    )
    # Then on its step day (21 April) the hand-over is decided: a task and the command's event
    (handed,) = c.only("collection.handed_over")
    assert handed["invoice_ids"] == ["INV-1"] and handed["as_of"][:10] == "2026-04-21"
    assert handed["totals"]["outstanding"] == "1000.00" and handed["lines"][0]["fee"] == "40.00"
    assert [t["kind"] for t in c.only("task.created") if t["kind"] == "hand_over"] == ["hand_over"]
    # And the hand-over letter is sent once, then no reminder lists INV-1 at all
    letters = [r for r in reminders(c) if r["level"] == "hand-over"]
    assert [r["invoice_ids"] for r in letters] == [["INV-1"]]
    after = [r for r in reminders(c) if r["as_of"] > letters[0]["as_of"]]
    assert after and all("INV-1" not in [line["invoice_id"] for line in [*r["lines"], *r.get("also", [])]]
                         for r in after)  # fmt: skip
    # And the new invoice follows its own ladder from its courtesy notice
    assert [r["level"] for r in after][:3] == ["courtesy", "reminder-1", "reminder-2"]
    # And once handed over, INV-1 brings no timer of its own
    assert "INV-1" not in {i for r in after for i in r["invoice_ids"]}


def test_a_payment_after_the_hand_over_changes_nothing_on_the_ladder() -> None:
    c = weekly()
    c.erp(date(2026, 2, 1), invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"))
    c.run(
        *days("2026-02-01", "2026-05-31"),
        erp={date(2026, 5, 5): [payment("P1", "300.00", received_on="2026-05-05")]},
    )
    assert [r["level"] for r in reminders(c)].count("hand-over") == 1
    assert [r for r in reminders(c) if r["as_of"][:10] > "2026-05-01"] == []


# ---------------------------------------------------------------------------------------------------- 6. time zone
def test_steps_fall_due_at_the_tenants_midnight_and_contacts_at_its_send_hour() -> None:
    # Given a Paris tenant sending from 08:00, and an invoice due on 2 March (courtesy notice on 27 February)
    c = weekly(timezone="Europe/Paris", send_hour=8, version="v4")
    c.erp(date(2026, 2, 1), invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"))
    # When the timer is asked on 26 February at noon: the step is due at midnight in Paris, 23:00 UTC the day before
    noon = datetime(2026, 2, 26, 12, tzinfo=UTC)
    assert next_due(c.state, c.policy, noon) == datetime(2026, 2, 26, 23, tzinfo=UTC)
    # Then at 23:30 UTC on the 26th, already the 27th in Paris, the level is reached but nothing is sent at night
    night = c.evaluate(date(2026, 2, 26), hour=23)
    assert [summary(d) for d in night] == [("level", "INV-1", "courtesy")]
    assert night[0].data["reached_on"] == "2026-02-27"
    # And the message is due at 08:00 Paris time, 07:00 UTC
    assert next_due(c.state, c.policy, datetime(2026, 2, 26, 23, tzinfo=UTC)) == datetime(2026, 2, 27, 7, tzinfo=UTC)
    assert [summary(d) for d in c.evaluate(date(2026, 2, 27), hour=7)] == [("reminder", "EUR", "courtesy", "INV-1")]
    # In summer Paris is UTC+2: the reminder-1 of an invoice due 1 June is due from 06:00 UTC on 6 June
    c.erp(date(2026, 5, 1), invoice("INV-3", "50.00", issue_date="2026-05-01", due_date="2026-06-01"))
    c.run(*days("2026-05-01", "2026-06-05"))
    evening = datetime(2026, 6, 5, 12, tzinfo=UTC)
    assert next_due(c.state, c.policy, evening) == datetime(2026, 6, 5, 22, tzinfo=UTC)
    assert decide(c.state, c.policy, datetime(2026, 6, 6, 5, 59, tzinfo=UTC), RATES)[-1].event_type != (
        "reminder.requested"
    )


# ---------------------------------------------------------------------------------------------------- older ledgers
def test_a_ledger_written_before_contacts_were_kept_apart_counts_what_it_sent_as_told() -> None:
    # Given a customer's decisions as the previous version wrote them: lines without a level, the grouped reminder
    # listing every overdue invoice at its firmest level, phone tasks without a level
    now = two_days_apart()
    now.run(*days("2026-02-01", "2026-04-02"))
    old = weekly()
    for _, decisions in sorted(now.log.items()):
        for d in decisions:
            data = dict(d.data)
            if d.event_type == "reminder.requested":
                lines = [*data["lines"], *data.pop("also", [])]
                data["lines"] = [{k: v for k, v in line.items() if k not in ("level", "notices")} for line in lines]
                data["invoice_ids"] = [line["invoice_id"] for line in lines]
            if d.event_type == "task.created":
                data.pop("level", None)
            moment = datetime.fromisoformat(d.data["as_of"])
            assert old.feed.deliver([Ev(d.event_type, data, d.event_id, moment)]) == ["new"]
    # When the new engine decides on that ledger
    decisions = decide(old.state, old.policy, datetime(2026, 4, 3, 9, tzinfo=UTC), RATES)
    # Then nothing already sent is sent again: every invoice a reminder listed counts as told at its level
    assert [d for d in decisions if d.event_type == "reminder.requested"] == []
    assert old.state.escalations["INV-2"].told  # listed apart on 14 March: read as told then


def test_a_snapshot_written_before_contacts_were_kept_is_set_aside_and_the_stream_folded_from_its_start(
    tmp_path: Path,
) -> None:
    # Given a customer's ledger on SQLite, its ERP events and the engine's decisions recorded as the worker does
    c = two_days_apart()
    c.run(*days("2026-02-01", "2026-03-30"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    recorded = c.feed.history
    assert [o.status for o in Ledger(engine).record([incoming(ev) for ev in recorded])] == ["applied"] * len(recorded)
    # And its snapshot as the previous version wrote it: nothing of what the customer was told
    with engine.begin() as conn:
        raw = conn.execute(select(customer_state.c.state)).scalar_one()
        assert not snapshot.predates_contacts(raw)
        del raw["contacts"]
        for record in raw["escalations"].values():
            del record["notices"], record["told"]
        conn.execute(update(customer_state).values(state=raw))
    # When the ledger loads the customer's state
    state = Ledger(engine).state(TENANT, CUSTOMER)
    # Then it is the fold of the whole stream, and the engine sends nothing again
    assert snapshot.predates_contacts(raw)
    assert (state.dunning, state.receivables, state.version) == (c.state.dunning, c.state.receivables, c.state.version)
    assert decide(state, c.policy, datetime(2026, 3, 31, 9, tzinfo=UTC), RATES) == []
    engine.dispose()
