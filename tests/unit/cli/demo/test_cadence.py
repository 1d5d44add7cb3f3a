"""The demo's cadence figures and its checks of the policies' rules, on small hand-built histories."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from services.cli.demo.cadence import Cadence, Fact, Rules, claims_of_fold, measure, percentile, rules_of
from services.cli.demo.run import EXIT_OK, EXIT_RULES_BROKEN, EXIT_UNEXPECTED, exit_code
from services.cli.demo.summary import verdict_section
from services.escalation.model import Policy
from services.escalation.policy import PolicyLibrary

SHIPPED = PolicyLibrary.load(None)
SHIPPED_FR = Rules.of(SHIPPED.common.policies["standard-fr"])
# The shipped French ladder alone, in UTC and without a cadence: what the absolute rules are measured against
FR = replace(SHIPPED_FR, zone=UTC, min_days_between_contacts=None, max_contacts=None, min_days_since_contact={})
D = date(2026, 10, 1)


def day(n: int) -> date:
    return D + timedelta(days=n)


def instant(n: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime.combine(day(n), time(hour, minute), tzinfo=UTC)


def text(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def line(invoice_id: str, *, due: int = -40, level: str | None = None) -> dict[str, Any]:
    """A reminder line for an invoice due ``due`` days from D (negative: in the past), as of D."""
    data: dict[str, Any] = {
        "invoice_id": invoice_id,
        "number": invoice_id,
        "due_date": day(due).isoformat(),
        "amount": "100.00",
        "outstanding": "100.00",
        "days_late": max(0, -due),
        "interest": "0",
        "fee": "0",
    }
    if level is not None:
        data["level"] = level
    return data


def reminder(
    n: int,
    level: str,
    lines: Sequence[dict[str, Any]],
    *,
    also: Sequence[dict[str, Any]] | None = None,
    hour: int = 0,
    minute: int = 0,
    currency: str = "EUR",
) -> Fact:
    moment = instant(n, hour, minute)
    data: dict[str, Any] = {
        "policy": "standard-fr",
        "policy_version": "v",
        "as_of": text(moment),
        "reminder_id": f"R-{n}-{level}-{currency}",
        "level": level,
        "channel": "email",
        "copy_channels": [],
        "template": level,
        "language": "fr",
        "currency": currency,
        "invoice_ids": [entry["invoice_id"] for entry in lines],
        "lines": list(lines),
        "totals": {"outstanding": "0", "interest": "0", "fees": "0"},
    }
    if also is not None:
        data["also"] = list(also)
    return Fact("reminder.requested", data, moment)


def reached(n: int, invoice_id: str, level: str, actions: Sequence[str] = ()) -> Fact:
    moment = instant(n)
    data = {"policy": "standard-fr", "as_of": text(moment), "invoice_id": invoice_id, "level": level}
    return Fact("escalation.level_reached", {**data, "actions": list(actions), "currency": "EUR"}, moment)


def call(n: int, *invoice_ids: str, hour: int = 0) -> Fact:
    moment = instant(n, hour)
    data = {
        "task_id": f"T-{n}",
        "kind": "phone_call",
        "due_on": day(n).isoformat(),
        "invoice_ids": list(invoice_ids),
        "currency": "EUR",
        "amount_at_risk": "100.00",
        "note": "level phone_call",
        "policy": "standard-fr",
        "as_of": text(moment),
    }
    return Fact("task.created", data, moment)


def money(event_type: str, n: int, invoice_id: str, amount: str, currency: str = "EUR", **extra: Any) -> Fact:
    data = {"invoice_id": invoice_id, "currency": currency, "amount": amount, "as_of": text(instant(n)), **extra}
    return Fact(event_type, data, instant(n))


def of(*streams: Sequence[Fact], rules: Rules = FR) -> Cadence:
    return measure(
        (("acme-fr", f"C-{n}", stream) for n, stream in enumerate(streams, start=1)),
        lambda tenant, policy: rules,
    )


def rule_names(cadence: Cadence) -> list[str]:
    return [breach.rule for breach in cadence.breaches()]


# ------------------------------------------------------------------------------------------------- rules
def test_the_rules_of_a_shipped_policy_are_its_ladder_zone_and_cadence() -> None:
    assert SHIPPED_FR.ladder == (
        "courtesy",
        "reminder_1",
        "reminder_2",
        "phone_call",
        "formal_notice",
        "credit_block",
        "hand_over",
    )
    assert "phone_call" not in SHIPPED_FR.written and {"courtesy", "formal_notice", "hand_over"} <= SHIPPED_FR.written
    assert SHIPPED_FR.before_due == {"courtesy"}
    assert SHIPPED_FR.hand_over == {"hand_over"}
    assert SHIPPED_FR.zone == ZoneInfo("Europe/Paris")
    assert (SHIPPED_FR.min_days_between_contacts, SHIPPED_FR.max_contacts, SHIPPED_FR.window_days) == (7, 4, 30)


@dataclass(frozen=True)
class _Cadence:
    min_days_between_contacts: int = 7
    max_contacts: int = 4
    window_days: int = 30


@dataclass(frozen=True)
class _LevelWithGap:
    key: str
    offset_days: int
    channel: str
    actions: frozenset[str] = frozenset()
    min_days_since_contact: int | None = None


@dataclass(frozen=True)
class _PolicyWithCadence:
    """The settings a policy file may give (``timezone``, ``cadence``, a level's ``min_days_since_contact``)."""

    levels: tuple[_LevelWithGap, ...]
    timezone: str = "Europe/Paris"
    cadence: _Cadence = field(default_factory=_Cadence)


def test_the_rules_read_a_policys_time_zone_and_cadence_when_it_has_them() -> None:
    # Given a policy with a time zone, a cadence and a level overriding its minimum interval
    levels = tuple(
        _LevelWithGap(lv.key, lv.offset_days, lv.channel, lv.actions, 10 if lv.key == "formal_notice" else None)
        for lv in SHIPPED.common.policies["standard-fr"].levels
    )
    rules = Rules.of(cast(Policy, _PolicyWithCadence(levels)))
    # Then the rules carry them
    assert rules.zone == ZoneInfo("Europe/Paris")
    assert (rules.min_days_between_contacts, rules.max_contacts, rules.window_days) == (7, 4, 30)
    assert rules.gap_required("formal_notice") == 10 and rules.gap_required("reminder_1") == 7


def test_a_policy_name_the_book_does_not_hold_is_measured_under_the_books_default() -> None:
    rules = rules_of(SHIPPED)
    assert rules("acme-fr", "no-such-policy") == rules("acme-fr", None) == SHIPPED_FR
    english = Rules.of(SHIPPED.common.policies["standard-en"])
    assert rules("acme-uk", "standard-en") == english


def test_the_policy_a_customers_decisions_name_is_the_one_measured() -> None:
    # Given a customer whose decisions follow a policy with a cadence, and another customer under the default
    strict = replace(FR, min_days_between_contacts=7)
    chosen: list[str | None] = []

    def rules(tenant: str, policy: str | None) -> Rules:
        chosen.append(policy)
        return strict if policy == "strict" else FR

    first = reminder(0, "reminder_1", [line("I-1")])
    second = reminder(3, "reminder_2", [line("I-1")])
    strict_stream = [replace(f, data={**f.data, "policy": "strict"}) for f in (first, second)]
    cadence = measure([("t", "C-1", strict_stream), ("t", "C-2", [first, second])], rules)
    # Then only the first customer's contacts three days apart break a rule
    assert chosen == ["strict", "standard-fr"]
    (breach,) = [b for b in cadence.breaches() if "interval" in b.rule]
    assert breach.count == 1 and breach.example.customer_id == "C-1"


# ------------------------------------------------------------------------------------------------- contact days
def test_contact_days_count_written_reminders_and_calls_once_a_day() -> None:
    # Given a customer reminded in two currencies and called on one day, then reminded again a week later
    stream = [
        reminder(0, "reminder_1", [line("I-1")]),
        reminder(0, "reminder_1", [line("I-2")], currency="USD"),
        call(0, "I-1", hour=12),
        reminder(7, "reminder_2", [line("I-1")]),
    ]
    cadence = of(stream)
    # Then that is two contact days, seven days apart
    (customer,) = cadence.contacted
    assert sorted(customer.days) == [day(0), day(7)]
    assert cadence.min_gap == 7
    assert cadence.contacts_max == 2


def test_a_phone_call_task_is_a_contact_and_other_tasks_are_not() -> None:
    letter = replace(call(5, "I-1"), data={**call(5, "I-1").data, "kind": "send_letter", "note": "post it"})
    cadence = of([reminder(0, "reminder_1", [line("I-1")]), call(2, "I-1"), letter])
    assert sorted(cadence.contacted[0].days) == [day(0), day(2)]
    assert cadence.contacted[0].days[day(2)] == {"phone_call"}


def test_contacts_in_any_30_days_give_the_busiest_customer_and_the_95th_percentile() -> None:
    # Given 20 customers, the k-th contacted on k days in a row (one to twenty), and one contacted every 40 days
    streams = [[reminder(n, "reminder_1", [line("I-1")]) for n in range(k)] for k in range(1, 21)]
    streams.append([reminder(n, "reminder_1", [line("I-1")]) for n in (0, 40, 80)])
    cadence = of(*streams)
    # Then the busiest had 20 contact days in 30 days, and 95 % of the 21 customers had at most 19
    assert cadence.contacts_max == 20
    assert cadence.contacts_p95 == 19
    assert cadence.contacted[-1].most_in(30) == (1, day(0))


def test_a_rolling_window_of_30_days_counts_days_less_than_30_days_after_its_first() -> None:
    cadence = of([reminder(n, "reminder_1", [line("I-1")]) for n in (0, 29, 30)])
    (customer,) = cadence.contacted
    assert customer.most_in(30) == (2, day(0))
    assert customer.most_in(31) == (3, day(0))


def test_the_fewest_days_between_contacts_is_over_customers_contacted_twice() -> None:
    # Given a customer contacted once, one contacted 5 days apart and one 2 then 9 days apart
    cadence = of(
        [reminder(0, "reminder_1", [line("I-1")])],
        [reminder(0, "reminder_1", [line("I-1")]), reminder(5, "reminder_2", [line("I-1")])],
        [reminder(n, "reminder_1", [line("I-1")]) for n in (0, 2, 11)],
    )
    assert len(cadence.contacted) == 3 and cadence.contacted_twice == 2
    assert cadence.min_gap == 2
    assert cadence.within(2) == 1 and cadence.within(5) == 2


def test_a_customer_never_contacted_has_no_contact_figure() -> None:
    cadence = of([reached(0, "I-1", "phone_call")])
    assert cadence.contacted == [] and cadence.contacts_max == 0 and cadence.contacts_p95 == 0
    assert cadence.min_gap is None


def test_contact_days_are_the_policys_local_days() -> None:
    # Given a reminder at 23:30 UTC on day 0 (01:30 on day 1 in Paris) and a call at 09:00 UTC on day 1
    stream = [reminder(0, "reminder_1", [line("I-1")], hour=23, minute=30), call(1, "I-1", hour=9)]
    # When measured in UTC, they are two days apart by one; in Paris, one contact day
    assert of(stream).min_gap == 1
    paris = of(stream, rules=replace(FR, zone=ZoneInfo("Europe/Paris")))
    assert sorted(paris.contacted[0].days) == [day(1)]
    assert paris.min_gap is None


def test_a_decision_without_its_instant_is_dated_by_when_it_occurred() -> None:
    fact = reminder(0, "reminder_1", [line("I-1")])
    undated = Fact(fact.event_type, {k: v for k, v in fact.data.items() if k != "as_of"}, instant(3, 22))
    paris = of([undated], rules=replace(FR, zone=ZoneInfo("Europe/Paris")))
    assert sorted(paris.contacted[0].days) == [day(4)]


# ------------------------------------------------------------------------------------------------- cadence rules
def test_contacts_closer_than_the_policys_interval_break_its_rule() -> None:
    # Given a policy asking 7 days between contacts, and contacts on days 0, 7 and 10
    stream = [reminder(n, "reminder_1", [line(f"I-{n}")]) for n in (0, 7, 10)]
    strict = replace(FR, min_days_between_contacts=7)
    # Then the third contact breaks it, once, named with its customer and invoice
    (breach,) = of(stream, rules=strict).breaches()[:1]
    assert breach.rule == "contact days closer than the policy's minimum interval"
    assert breach.count == 1
    assert (breach.example.customer_id, breach.example.invoice_id, breach.example.day) == ("C-1", "I-10", day(10))
    # And without a cadence in the policy, the same contacts break no cadence rule
    assert not [b for b in of(stream).breaches() if "contact" in b.rule]


def test_a_levels_own_interval_overrides_the_policys() -> None:
    # Given 7 days between contacts, but 10 before a formal notice and 3 before a call
    rules = replace(FR, min_days_between_contacts=7, min_days_since_contact={"formal_notice": 10, "phone_call": 3})
    fine = [reminder(0, "reminder_2", [line("I-1")]), call(3, "I-1"), reminder(13, "formal_notice", [line("I-1")])]
    close = [reminder(0, "reminder_2", [line("I-1")]), reminder(8, "formal_notice", [line("I-1")])]
    assert not [b for b in of(fine, rules=rules).breaches() if "interval" in b.rule]
    (breach,) = [b for b in of(close, rules=rules).breaches() if "interval" in b.rule]
    assert breach.example.day == day(8)


def test_a_call_task_counts_at_the_level_it_names() -> None:
    # Given 7 days between contacts but 2 before a call at level call_2, and a call two days after a reminder
    rules = replace(FR, min_days_between_contacts=7, min_days_since_contact={"call_2": 2})
    named = call(2, "I-1")
    named = replace(named, data={**named.data, "level": "call_2", "note": "call them"})
    unnamed = replace(named, data={k: v for k, v in named.data.items() if k != "level"})
    first = reminder(0, "reminder_2", [line("I-1")])
    # Then the call for call_2 keeps its level's interval; a call naming no level is held to the policy's
    assert not [b for b in of([first, named], rules=rules).breaches() if "interval" in b.rule]
    assert [b.count for b in of([first, unnamed], rules=rules).breaches() if "interval" in b.rule] == [1]


def test_more_contact_days_than_the_policy_allows_in_its_window_break_its_rule() -> None:
    # Given at most 2 contact days in any 30 days, and a customer contacted on days 0, 10 and 20
    rules = replace(FR, max_contacts=2, window_days=30)
    busy = [reminder(n, "reminder_1", [line("I-1")]) for n in (0, 10, 20)]
    spaced = [reminder(n, "reminder_1", [line("I-1")]) for n in (0, 10, 40)]
    (breach,) = [b for b in of(busy, spaced, rules=rules).breaches() if "window" in b.rule]
    assert breach.count == 1
    assert (breach.example.customer_id, breach.example.day) == ("C-1", day(0))


# ------------------------------------------------------------------------------------------------- written levels
def test_a_formal_notice_sent_twice_for_an_invoice_breaks_the_once_rule() -> None:
    # Given an old log: grouped reminders without `also` or line levels, each line at the message's level
    stream = [
        reached(0, "I-1", "formal_notice"),
        reminder(0, "formal_notice", [line("I-1")]),
        reached(9, "I-2", "formal_notice"),
        reminder(9, "formal_notice", [line("I-1"), line("I-2")]),
    ]
    cadence = of(stream)
    # Then invoice I-1 was in two formal notices, and the rule names it with the day of the second
    written = cadence.written["formal_notice"]
    assert (written.messages, written.lines, written.invoices, written.most, written.repeated) == (2, 3, 2, 2, 1)
    assert written.customers == {("acme-fr", "C-1")}
    (breach,) = cadence.breaches()
    assert breach.rule == "invoices sent formal_notice more than once"
    assert (breach.count, breach.example.invoice_id, breach.example.day) == (1, "I-1", day(9))
    assert str(breach) == "invoices sent formal_notice more than once: 1 (e.g. acme-fr/C-1 invoice I-1 on 2026-10-10)"


def test_lines_under_also_are_not_demanded_and_each_line_counts_at_its_own_level() -> None:
    # Given a message demanding I-2 at formal notice and listing I-1, already noticed, under `also`
    stream = [
        reached(0, "I-1", "formal_notice"),
        reminder(0, "formal_notice", [line("I-1", level="formal_notice")]),
        reached(9, "I-2", "formal_notice"),
        reminder(
            9,
            "formal_notice",
            [line("I-2", level="formal_notice"), line("I-3", level="reminder_1", due=-1)],
            also=[line("I-1", level="formal_notice")],
        ),
    ]
    cadence = of(stream)
    # Then each invoice was demanded once at formal notice, and I-3 once at its own reminder_1
    assert cadence.written["formal_notice"].most == 1 and cadence.written["formal_notice"].invoices == 2
    assert cadence.written["reminder_1"].invoices == 1
    assert cadence.levels() == ["reminder_1", "formal_notice"]
    assert cadence.breaches() == []


def test_a_hand_over_letter_repeated_for_an_invoice_is_counted() -> None:
    stream = [reminder(n, "hand_over", [line("I-1")]) for n in (0, 15, 30)]
    written = of(stream).written["hand_over"]
    assert (written.most, written.repeated) == (3, 1)


# ------------------------------------------------------------------------------------------------- tone
def test_a_line_softer_than_what_its_invoice_reached_is_counted_the_call_included() -> None:
    # Given I-1 reached the call step, then a courtesy notice for a new invoice listing I-1 too
    stream = [
        reached(0, "I-1", "reminder_2"),
        reminder(0, "reminder_2", [line("I-1")]),
        reached(5, "I-1", "phone_call"),
        call(5, "I-1"),
        reached(9, "I-2", "courtesy"),
        reminder(9, "courtesy", [line("I-1"), line("I-2", due=5)]),
    ]
    cadence = of(stream)
    # Then the I-1 line is softer than the call it had reached; the I-2 line is not
    assert (cadence.softer_lines, cadence.softer_messages) == (1, 1)
    assert cadence.softer_example is not None and cadence.softer_example.invoice_id == "I-1"
    assert "lines softer than a level their invoice had reached" in rule_names(cadence)


def test_a_reminder_as_firm_as_what_its_invoices_reached_is_not_softer() -> None:
    stream = [
        reached(0, "I-1", "phone_call"),
        reminder(3, "formal_notice", [line("I-1")]),
        reached(3, "I-2", "reminder_1"),
        reminder(3, "reminder_1", [line("I-2", due=-1)]),
    ]
    assert of(stream).softer_lines == 0


def test_a_line_under_also_without_a_level_is_not_judged_for_its_tone() -> None:
    stream = [reached(0, "I-1", "credit_block"), reminder(2, "courtesy", [line("I-2", due=5)], also=[line("I-1")])]
    assert of(stream).softer_lines == 0


def test_a_gentler_line_under_also_is_softer_too() -> None:
    stream = [
        reached(0, "I-1", "formal_notice"),
        reached(2, "I-2", "reminder_1"),
        reminder(2, "reminder_1", [line("I-2", level="reminder_1", due=-1)], also=[line("I-1", level="reminder_2")]),
    ]
    assert of(stream).softer_lines == 1


# ------------------------------------------------------------------------------------------------- demands
def test_a_demand_for_an_invoice_not_yet_due_is_counted_and_a_courtesy_notice_is_not() -> None:
    # Given a formal notice listing an invoice due in 5 days, one due today, and a courtesy notice for it
    stream = [
        reminder(0, "formal_notice", [line("I-1"), line("I-2", due=5), line("I-3", due=0)]),
        reminder(1, "courtesy", [line("I-4", due=4)]),
    ]
    cadence = of(stream)
    # Then the two invoices not yet due are counted as formal-notice demands, the courtesy line is no demand
    assert dict(cadence.not_yet_due) == {"formal_notice": 2}
    assert cadence.not_yet_due_example is not None and cadence.not_yet_due_example.invoice_id == "I-2"
    assert "demand lines for invoices not yet due" in rule_names(cadence)


def test_a_line_with_no_days_late_but_due_before_the_reminders_day_is_not_counted_not_yet_due() -> None:
    late = {**line("I-1", due=-3), "days_late": 0}  # e.g. an instalment date, the line's own due date passed
    assert of([reminder(0, "reminder_1", [late])]).not_yet_due == {}


def test_a_reminder_demanding_a_handed_over_invoice_is_counted_but_not_the_hand_over_letter() -> None:
    # Given I-1 handed over (old log: its level's hand_over action) with its letter, then another reminder for it
    stream = [
        reached(0, "I-1", "hand_over", actions=["hand_over"]),
        reminder(0, "hand_over", [line("I-1")]),
        reminder(12, "credit_block", [line("I-1"), line("I-2")]),
    ]
    cadence = of(stream)
    assert cadence.handed_over_lines == 1
    assert cadence.handed_over_example is not None and cadence.handed_over_example.day == day(12)
    assert "demand lines for invoices already handed over" in rule_names(cadence)


def test_a_collection_handed_over_event_hands_its_invoices_over_and_its_letter_may_come_later() -> None:
    # Given I-1 handed over on day 0, its letter held back by the cadence until day 4, then a credit-block notice
    handed = Fact(
        "collection.handed_over",
        {"handover_id": "H-1", "currency": "EUR", "invoice_ids": ["I-1"], "as_of": text(instant(0))},
        instant(0),
    )
    stream = [
        handed,
        reminder(2, "reminder_2", [line("I-2", level="reminder_2")], also=[line("I-1", level="hand_over")]),
        reminder(4, "hand_over", [line("I-1", level="hand_over")]),
        reminder(20, "credit_block", [line("I-1", level="credit_block"), line("I-3", level="credit_block")]),
    ]
    cadence = of(stream)
    # Then neither the line under `also` nor the letter is a demand about a handed-over invoice; the notice is
    assert cadence.handed_over_lines == 1
    assert cadence.handed_over_example is not None and cadence.handed_over_example.day == day(20)


def test_a_second_hand_over_letter_is_a_demand_about_a_handed_over_invoice() -> None:
    # Given I-1's hand-over letter written before the hand-over event in the same decision, then a second letter
    letter = reminder(0, "hand_over", [line("I-1")])
    stream = [letter, reached(0, "I-1", "hand_over", actions=["hand_over"]), reminder(15, "hand_over", [line("I-1")])]
    cadence = of(stream)
    # Then the first letter told the customer; the second is a demand about a file already handed over
    assert cadence.handed_over_lines == 1
    assert cadence.handed_over_example is not None and cadence.handed_over_example.day == day(15)


def test_a_hand_over_letter_listing_an_invoice_before_its_own_hand_over_does_not_tell_it() -> None:
    # Given I-2 listed in I-1's hand-over letter (an old grouped reminder), then I-2 handed over with its own letter
    stream = [
        reached(0, "I-1", "hand_over", actions=["hand_over"]),
        reminder(0, "hand_over", [line("I-1"), line("I-2")]),
        reached(9, "I-2", "hand_over", actions=["hand_over"]),
        reminder(9, "hand_over", [line("I-2")]),
    ]
    # Then I-2's own letter is its hand-over letter (the repeat breaks the once-per-invoice rule instead)
    cadence = of(stream)
    assert cadence.handed_over_lines == 0
    assert cadence.written["hand_over"].repeated == 1


# ------------------------------------------------------------------------------------------------- claims
def test_claims_are_the_latest_interest_and_the_fees_less_what_was_paid_and_waived() -> None:
    # Given interest recomputed on I-1, fixed on I-2 (a later figure ignored), fees, a payment and a waiver
    stream = [
        money("interest.computed", 0, "I-1", "5.00"),
        money("interest.computed", 9, "I-1", "7.50"),
        money("interest.computed", 0, "I-2", "3.00"),
        money("claim.fixed", 4, "I-2", "4.00", kind="interest"),
        money("interest.computed", 9, "I-2", "9.99"),
        money("fee.charged", 0, "I-1", "40.00"),
        money("fee.charged", 0, "I-2", "40.00"),
        money("interest.computed", 0, "I-3", "2.10", currency="GBP"),
        money("claim.settled", 10, "I-2", "40.00", kind="indemnity", credit="payment:P-1"),
        money("claim.settled", 10, "I-2", "4.00", kind="interest", credit="payment:P-1"),
        money("claim.waived", 11, "I-1", "7.50", kind="interest", reason="goodwill", author="anna"),
    ]
    cadence = of(stream)
    eur, gbp = cadence.claims["EUR"], cadence.claims["GBP"]
    assert (eur.interest, eur.fees, eur.charged) == (Decimal("11.50"), Decimal("80.00"), Decimal("91.50"))
    assert (eur.paid, eur.waived, eur.owed) == (Decimal("44.00"), Decimal("7.50"), Decimal("40.00"))
    assert (gbp.charged, gbp.owed) == (Decimal("2.10"), Decimal("2.10"))


def test_claims_are_summed_over_customers() -> None:
    cadence = of([money("fee.charged", 0, "I-1", "40.00")], [money("fee.charged", 0, "I-1", "40.00")])
    assert cadence.claims["EUR"].owed == Decimal("80.00")


@dataclass(frozen=True)
class _FoldedClaim:
    """A claim as a fold that keeps claims has it: charged, allocated by payments, waived, void if cancelled."""

    kind: str
    currency: str
    charged: Decimal
    allocated: Decimal = Decimal(0)
    waived: Decimal = Decimal(0)
    void: bool = False


@dataclass(frozen=True)
class _FoldedClaims:
    claims: tuple[_FoldedClaim, ...]

    def all(self) -> list[_FoldedClaim]:
        return list(self.claims)


@dataclass(frozen=True)
class _StateWithClaims:
    claims: _FoldedClaims


def test_the_claims_of_a_fold_that_keeps_them_give_what_payments_settled() -> None:
    # Given two customers' folded claims: interest partly paid, an indemnity waived, a cancelled invoice's claim
    first = _FoldedClaims(
        (
            _FoldedClaim("interest", "EUR", Decimal("12.00"), allocated=Decimal("5.00")),
            _FoldedClaim("indemnity", "EUR", Decimal("40.00"), waived=Decimal("40.00")),
            _FoldedClaim("indemnity", "EUR", Decimal("40.00"), void=True),
        )
    )
    second = _FoldedClaims((_FoldedClaim("indemnity", "GBP", Decimal("70.00"), allocated=Decimal("70.00")),))
    claims = claims_of_fold([_StateWithClaims(first), _StateWithClaims(second)])
    # Then per currency: charged, paid and waived from the fold, the void claim left out
    assert claims is not None
    eur, gbp = claims["EUR"], claims["GBP"]
    assert (eur.interest, eur.fees, eur.paid, eur.waived, eur.owed) == (
        Decimal("12.00"),
        Decimal("40.00"),
        Decimal("5.00"),
        Decimal("40.00"),
        Decimal("7.00"),
    )
    assert (gbp.charged, gbp.paid, gbp.owed) == (Decimal("70.00"), Decimal("70.00"), Decimal(0))
    # And a state that keeps no claims leaves the events' figures
    assert claims_of_fold([object()]) is None


# ------------------------------------------------------------------------------------------------- the verdict
def test_a_clean_history_breaks_no_rule() -> None:
    strict = replace(FR, min_days_between_contacts=7, max_contacts=4)
    stream = [
        reached(0, "I-1", "reminder_1"),
        reminder(0, "reminder_1", [line("I-1", due=-1)]),
        reached(14, "I-1", "reminder_2"),
        reminder(14, "reminder_2", [line("I-1", due=-15)]),
        reached(19, "I-1", "phone_call"),
        call(21, "I-1"),
        reached(29, "I-1", "formal_notice"),
        reminder(29, "formal_notice", [line("I-1", due=-30)]),
    ]
    assert of(stream, rules=strict).breaches() == []


def test_the_exit_code_follows_the_checks() -> None:
    clean = of([reminder(0, "reminder_1", [line("I-1")])])
    broken = of([reminder(n, "formal_notice", [line("I-1")]) for n in (0, 9)])
    assert exit_code([], clean) == EXIT_OK == 0
    assert exit_code([], broken) == EXIT_RULES_BROKEN == 3
    assert exit_code(["hash chain: altered"], clean) == exit_code(["hash chain: altered"], broken) == EXIT_UNEXPECTED
    assert "Everything as expected" in "\n".join(verdict_section([], clean.breaches(), EXIT_OK))
    said = "\n".join(verdict_section([], broken.breaches(), EXIT_RULES_BROKEN))
    assert "POLICY RULES BROKEN (the demo exits with status 3)" in said
    assert "invoices sent formal_notice more than once: 1 (e.g. acme-fr/C-1 invoice I-1 on 2026-10-10)" in said
    assert "Everything as expected" not in said


def test_the_nearest_rank_percentile() -> None:
    assert percentile([], 95) == 0
    assert percentile([4], 95) == 4
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([1, 2, 3], 50) == 2
