"""The notifier's handling of a reminder command: re-checked against the ledger, routed, limited, sent once.

The commands are the real ones: the escalation engine decides on a ledger fed with ERP events, and the outbox rows
it writes are handed to :class:`services.notifier.service.Notifier` with an in-memory SMTP transport.
"""

from __future__ import annotations

import asyncio
import email
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from services.escalation.policy import PolicyLibrary
from services.escalation.service import evaluate
from services.escalation.worker import real_rules
from services.notifier.command import BadCommand
from services.notifier.evidence import take_slot
from services.notifier.service import Notifier, NotNow, still_due
from services.notifier.smtp import MemoryTransport, TemporaryFailure
from shared.config import Settings, load_settings
from shared.ledger.db import make_engine
from shared.ledger.schema import outbox
from shared.ledger.store import Ledger
from tests.factories import CUSTOMER, TENANT, customer, dispute, incoming, invoice, payment

DUE = date(2026, 10, 30)  # a Friday: the first reminder goes on Monday 2 November (1 November is a holiday)
REMIND = date(2026, 11, 2)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Slept:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.clock.now += timedelta(seconds=seconds)


class Desk:
    """A ledger, the escalation engine on a clock, and a notifier sending into memory."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.ledger = Ledger(engine)
        self.clock = Clock(datetime(2026, 10, 1, 10, tzinfo=UTC))
        self.slept = Slept(self.clock)
        self.transport = MemoryTransport()
        self.settings = settings
        self.notifier = Notifier(settings, engine, self.transport, now=self.clock, sleep=self.slept)
        self.books = PolicyLibrary.load(None).for_tenant
        self.rules = real_rules(settings)

    def erp(self, *events: Any, customer_id: str = CUSTOMER) -> None:
        outcomes = self.ledger.record([incoming(ev.at(self.clock.now), customer_id=customer_id) for ev in events])
        assert all(o.status in ("applied", "duplicate") for o in outcomes), outcomes

    def escalate(self, day: date, customer_id: str = CUSTOMER) -> list[dict[str, Any]]:
        """Decide on ``day`` at 09:00 UTC; the reminder commands the outbox holds afterwards, oldest first."""
        self.clock.now = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
        evaluate(self.ledger, self.books(TENANT), TENANT, customer_id, self.clock.now, rules=self.rules)
        return self.commands()

    def commands(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.payload).where(outbox.c.kind == "notifier.send_reminder").order_by(outbox.c.id)
            )
            return [dict(row.payload) for row in rows]

    def handle(self, command: dict[str, Any]) -> Any:
        return asyncio.run(self.notifier.handle(command))

    def types(self, customer_id: str = CUSTOMER) -> list[str]:
        return [e.event_type for e in self.ledger.read_stream(TENANT, customer_id)]

    def data(self, event_type: str, customer_id: str = CUSTOMER) -> list[dict[str, Any]]:
        return [e.data for e in self.ledger.read_stream(TENANT, customer_id) if e.event_type == event_type]


@pytest.fixture
def desk(ledger_url: str, tmp_path: Path) -> Iterator[Desk]:
    # The shipped table stops at the semester of 1 January 2026; these tests run in the next one.
    rates = tmp_path / "rates.csv"
    rates.write_text("2026-07-01,2.15\n", encoding="utf-8")
    engine = make_engine(ledger_url)
    yield Desk(engine, load_settings(database_url=ledger_url, mail_from="ar@example.com", rates_file=rates))
    engine.dispose()


def messages(desk: Desk) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(data, policy=email_policy.default)  # type: ignore[misc]
        for _, _, data in desk.transport.sent
    ]


def test_a_due_reminder_is_rendered_from_the_command_and_sent_once(desk: Desk) -> None:
    desk.erp(customer(), invoice("INV-1", "1234.56", due_date=DUE))
    [command] = desk.escalate(REMIND)
    outcome = desk.handle(command)
    assert (outcome.status, outcome.level, outcome.language) == ("sent", "reminder_1", "fr")
    [(sender, recipients, _)] = desk.transport.sent
    assert (sender, recipients) == ("ar@example.com", ("compta@martin.fr",))
    [message] = messages(desk)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "1\u202f234,56\xa0€" in text and "INV-1" not in message["Subject"]
    assert desk.handle(command).status == "already_sent"
    assert len(desk.transport.sent) == 1
    assert desk.types().count("reminder.sent") == 1


def test_an_invoice_paid_since_the_decision_is_not_reminded(desk: Desk) -> None:
    desk.erp(customer(), invoice("INV-1", "500.00", due_date=DUE))
    [command] = desk.escalate(REMIND)
    desk.erp(payment("PAY-1", "500.00", allocations={"INV-1": "500.00"}))
    outcome = desk.handle(command)
    assert outcome.status == "skipped" and outcome.dropped == ("INV-1",)
    assert desk.transport.sent == []
    [skipped] = desk.data("reminder.skipped")
    assert skipped["dropped"] == [{"invoice_id": "INV-1", "reason": "paid"}]
    assert desk.handle(command).status == "already_skipped"


def test_a_disputed_invoice_is_dropped_and_a_partial_payment_shows_today_s_outstanding(desk: Desk) -> None:
    desk.erp(
        customer(),
        invoice("INV-1", "1000.00", due_date=DUE),
        invoice("INV-2", "300.00", due_date=DUE),
        invoice("INV-3", "200.00", due_date=DUE),
    )
    [command] = desk.escalate(REMIND)
    assert sorted(command["invoice_ids"]) == ["INV-1", "INV-2", "INV-3"]
    desk.erp(dispute("INV-2"), payment("PAY-1", "400.00", allocations={"INV-1": "400.00"}))
    outcome = desk.handle(command)
    assert outcome.status == "sent" and outcome.dropped == ("INV-2",)
    text = messages(desk)[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "600,00\xa0€" in text and "800,00\xa0€" in text  # INV-1 now, and the total of INV-1 + INV-3
    assert "300,00" not in text


def test_a_reminder_overtaken_by_a_newer_one_is_not_sent(desk: Desk) -> None:
    desk.erp(customer(), invoice("INV-1", "900.00", due_date=DUE))
    desk.escalate(REMIND)
    first, second = desk.escalate(date(2026, 11, 16))
    assert (first["level"], second["level"]) == ("reminder_1", "reminder_2")
    assert desk.handle(first).status == "skipped"
    assert desk.handle(second).status == "sent"
    assert "superseded" in desk.data("reminder.skipped")[0]["dropped"][0]["reason"]


def test_a_reminder_whose_invoices_no_later_one_demands_again_is_still_sent(desk: Desk) -> None:
    # Given a first reminder for INV-1, unsent, and a week later (the cadence) one demanding a younger INV-2
    desk.erp(
        customer(), invoice("INV-1", "900.00", due_date=DUE), invoice("INV-2", "400.00", due_date=date(2026, 11, 5))
    )
    [first] = desk.escalate(REMIND)
    _, second = desk.escalate(date(2026, 11, 9))
    assert (first["invoice_ids"], second["invoice_ids"]) == (["INV-1"], ["INV-2"])
    assert [line["invoice_id"] for line in second["also"]] == ["INV-1"]  # listed apart, not demanded again
    # Then the first still goes out, for no later message demands INV-1: dropping it would lose its reminder
    assert desk.handle(first).status == "sent"
    assert desk.handle(second).status == "sent"
    assert desk.data("reminder.skipped") == []


ADDRESS = {
    "lines": ["Boulangeries Martin SAS", "12 rue des Lilas"],
    "postal_code": "69003",
    "city": "Lyon",
    "country": "FR",
}


def test_a_formal_notice_is_a_letter_task_and_an_email_copy(desk: Desk) -> None:
    desk.erp(customer(postal_address=ADDRESS), invoice("INV-1", "2000.00", due_date=DUE))
    commands = desk.escalate(DUE + timedelta(days=31))
    notice = commands[-1]
    assert (notice["level"], notice["channel"], notice["copy_channels"]) == ("formal_notice", "letter", ["email"])
    outcome = desk.handle(notice)
    assert outcome.status == "sent"
    tasks = [t for t in desk.data("task.created") if t["kind"] == "send_letter"]
    assert len(tasks) == 1 and "print and post" in tasks[0]["note"]
    [letter] = desk.data("letter.rendered")
    assert letter["letter_id"] in tasks[0]["note"] and "relance letters show" in tasks[0]["note"]
    text = messages(desk)[-1].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "40,00\xa0€" in text  # the fixed fee the formal notice charges
    assert desk.handle(notice).status == "already_sent"
    assert len([t for t in desk.data("task.created") if t["kind"] == "send_letter"]) == 1


def test_no_email_address_becomes_a_failed_reminder_and_a_letter_task(desk: Desk) -> None:
    desk.erp(customer(emails=()), invoice("INV-1", "100.00", due_date=DUE))
    [command] = desk.escalate(REMIND)
    assert desk.handle(command).status == "failed"
    [failed] = desk.data("reminder.failed")
    assert "no recipient" in failed["reason"]
    assert [t["kind"] for t in desk.data("task.created")] == ["send_letter"]


def test_quiet_hours_hold_the_reminder_back_until_they_end(desk: Desk, ledger_url: str) -> None:
    settings = load_settings(database_url=ledger_url, quiet_hours="20:00-08:00", timezone="Europe/Paris")
    desk.notifier = Notifier(settings, desk.engine, desk.transport, now=desk.clock, sleep=desk.slept)
    desk.erp(customer(), invoice("INV-1", "100.00", due_date=DUE))
    [command] = desk.escalate(REMIND)
    desk.clock.now = datetime(2026, 11, 2, 5, 30, tzinfo=UTC)  # 06:30 in Paris
    with pytest.raises(NotNow) as held:
        desk.handle(command)
    assert held.value.seconds == 90 * 60 and "2026-11-02T07:00:00+00:00" in held.value.reason
    assert desk.transport.sent == []
    desk.clock.now = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    assert desk.handle(command).status == "sent"


def test_the_rate_limit_makes_the_sender_wait_for_the_next_minute(desk: Desk, ledger_url: str) -> None:
    settings = load_settings(database_url=ledger_url, notifier_rate_per_minute=2)
    desk.notifier = Notifier(settings, desk.engine, desk.transport, now=desk.clock, sleep=desk.slept)
    commands = []
    for n in range(3):
        desk.erp(customer(f"Client {n}"), invoice(f"INV-{n}", "100.00", due_date=DUE), customer_id=f"C-{n}")
        commands += desk.escalate(REMIND, customer_id=f"C-{n}")[-1:]
    desk.clock.now = datetime(2026, 11, 2, 9, 0, 30, tzinfo=UTC)
    assert [desk.handle(c).status for c in commands] == ["sent", "sent", "sent"]
    assert desk.slept.seconds == [30.0]  # the third waited for 09:01
    assert len(desk.transport.sent) == 3


def test_the_budget_is_shared_and_starts_again_each_minute(desk: Desk) -> None:
    at = datetime(2026, 11, 2, 9, 0, 10, tzinfo=UTC)
    assert [take_slot(desk.engine, "t", 2, at) for _ in range(3)] == [0.0, 0.0, 50.0]
    assert take_slot(desk.engine, "other", 2, at) == 0.0
    assert take_slot(desk.engine, "t", 2, at + timedelta(seconds=50)) == 0.0
    assert take_slot(desk.engine, "t", 0, at) == 0.0  # 0: no limit


def test_a_deferring_server_leaves_the_command_to_be_retried(desk: Desk) -> None:
    from services.notifier.delivery import SendDeferred

    desk.erp(customer(), invoice("INV-1", "100.00", due_date=DUE))
    [command] = desk.escalate(REMIND)
    desk.transport.script = [TemporaryFailure("421 busy", "421 busy")] * 5
    with pytest.raises(SendDeferred):
        desk.handle(command)
    assert desk.handle(command).status == "sent"
    assert len(desk.transport.sent) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"command_id": None}, "missing field(s): command_id"),
        ({"command": "erp.credit_block"}, "not a notifier.send_reminder command"),
        ({"lines": "INV-1"}, "`lines` must be a list"),
        ({"totals": []}, "`totals` must be an object"),
        ({"lines": [{"invoice_id": "INV-1"}]}, "lines[0] (INV-1): missing field(s): number, issue_date, due_date"),
        ({"totals": {"outstanding": 100, "interest": "0", "fees": "0"}}, "totals.outstanding must be a decimal"),
    ],
)
def test_unusable_commands_are_refused_with_the_reason(desk: Desk, change: dict[str, Any], message: str) -> None:
    desk.erp(customer(), invoice("INV-1", "100.00", due_date=DUE))
    [command] = desk.escalate(REMIND)
    with pytest.raises(BadCommand, match=re.escape(message)):
        desk.handle({**command, **change})


def test_still_due_keeps_only_open_undisputed_invoices() -> None:
    from tests.factories import fold

    state = fold([customer(), invoice("A", "10.00", due_date=DUE), invoice("B", "20.00", due_date=DUE)])
    command = {
        "reminder_id": "R",
        "currency": "EUR",
        "lines": [{"invoice_id": "A", "outstanding": "10.00"}, {"invoice_id": "X", "outstanding": "5.00"}],
    }
    data, reasons = still_due(command, state)
    assert [line["invoice_id"] for line in data["lines"]] == ["A"]
    assert reasons == [{"invoice_id": "X", "reason": "unknown to the ledger"}]
    assert data["totals"] == {"outstanding": "10.00", "interest": "0", "fees": "0"}


def test_still_due_drops_from_the_invoices_listed_apart_what_is_no_longer_due_and_demands_nothing_for_them() -> None:
    from tests.factories import dispute, fold

    state = fold([customer(), invoice("A", "10.00", due_date=DUE), invoice("B", "20.00", due_date=DUE), dispute("B")])
    command = {
        "reminder_id": "R",
        "currency": "EUR",
        "lines": [{"invoice_id": "A", "outstanding": "10.00"}],
        "also": [{"invoice_id": "B", "outstanding": "20.00"}, {"invoice_id": "A", "outstanding": "9.00"}],
    }
    data, reasons = still_due(command, state)
    assert [line["invoice_id"] for line in data["also"]] == ["A"] and reasons == []
    assert data["totals"]["outstanding"] == "10.00"  # the lines alone


def test_a_replay_reproduces_the_decisions_around_the_notifier_s_evidence(desk: Desk, tmp_path: Path) -> None:
    from services.escalation.replay import replay
    from shared.ledger.migrate import upgrade

    desk.erp(customer(), invoice("INV-1", "700.00", due_date=DUE), invoice("INV-2", "90.00", due_date=DUE))
    handled: set[str] = set()
    for day in (REMIND, date(2026, 11, 16), date(2026, 11, 23), date(2026, 12, 1), date(2026, 12, 2)):
        fresh = [c for c in desk.escalate(day) if c["command_id"] not in handled]
        if day == date(2026, 12, 2):  # paid in full after the decision, before the send
            desk.erp(payment("PAY-1", "790.00", allocations={"INV-1": "700.00", "INV-2": "90.00"}))
        for command in fresh:
            desk.handle(command)
            handled.add(command["command_id"])
    recorded = desk.types()
    assert {"reminder.sent", "reminder.letter_requested", "task.created"} <= set(recorded)
    target_url = f"sqlite:///{tmp_path / 'replay.db'}"
    upgrade(target_url)
    target = Ledger(make_engine(target_url))
    report = replay(desk.ledger, target, desk.books, desk.rules)
    assert report.divergences == [] and report.decisions > 0
    assert [e.event_type for e in target.read_stream(TENANT, CUSTOMER)] == recorded
    target.engine.dispose()


# ---------------------------------------------------------------------------------------------------- claims statement
def paid_late_after_the_formal_notice(desk: Desk) -> dict[str, Any]:
    """The formal notice of an invoice, its principal paid 3 days later: the claims statement that follows."""
    desk.erp(customer(), invoice("INV-1", "2000.00", due_date=DUE))
    notice = desk.escalate(DUE + timedelta(days=31))[-1]
    assert notice["level"] == "formal_notice" and desk.handle(notice).status == "sent"
    desk.erp(payment("PAY-1", "2000.00", allocations={"INV-1": "2000.00"}, received_on=DUE + timedelta(days=34)))
    day = DUE + timedelta(days=34)
    while not (statements := [c for c in desk.escalate(day) if c["level"] == "claims"]):
        day += timedelta(days=1)
    # the shipped cadence: a week after the formal notice, the first contact day it allows
    assert day == DUE + timedelta(days=38)
    [statement] = statements
    assert statement["lines"] == [] and statement["template"] == "claims"
    return statement


def test_a_claims_statement_is_sent_with_the_claims_still_owed(desk: Desk) -> None:
    statement = paid_late_after_the_formal_notice(desk)
    outcome = desk.handle(statement)
    assert (outcome.status, outcome.level) == ("sent", "claims")
    message = messages(desk)[-1]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert message["Subject"].startswith("Relevé des sommes restant dues sur factures réglées")
    flat = " ".join(text.split())  # Babel's no-break spaces as spaces
    assert "La facture F-INV-1 a été réglée le 3 décembre 2026, avec 34 jours de retard" in flat
    # 34 days (31 October to 3 December) at 12.15 % on 2,000.00 = 22.635... = 22.64
    assert "pénalités de retard 22,64 €, indemnité forfaitaire 40,00 €." in flat
    assert "Total à régler : 62,64 €" in flat and "soit 12,15 % l'an" in flat and "Factures concernées" not in flat
    assert desk.handle(statement).status == "already_sent"


def test_a_claims_statement_drops_a_claim_waived_since_and_is_skipped_once_nothing_is_owed(desk: Desk) -> None:
    from services.cli.claims import waiver, waiver_id
    from shared.ledger.store import Incoming

    statement = paid_late_after_the_formal_notice(desk)
    state = desk.ledger.state(TENANT, CUSTOMER)
    found = waiver(state, "INV-1", "indemnity", "goodwill", "M. Durand", None)
    item = Incoming.of(
        found.event,
        stream=(TENANT, CUSTOMER),
        event_id=waiver_id(state, "INV-1", "indemnity"),
        occurred_at=desk.clock.now,
        metadata={"source": "cli", "author": found.event.author},
        expected_version=state.version,
    )
    assert [o.status for o in desk.ledger.record([item])] == ["applied"]
    # Then the statement still due asks for the interest alone
    data, reasons = still_due(statement, desk.ledger.state(TENANT, CUSTOMER))
    assert [c["kind"] for c in data["claims"]] == ["interest"] and reasons[0]["reason"] == "indemnity paid or waived"
    assert data["totals"]["claims"] == data["claims"][0]["amount"]
    # And once the interest is paid too (money no invoice takes settles the claims), it is skipped
    interest = data["claims"][0]["amount"]
    desk.erp(payment("PAY-2", interest, received_on=DUE + timedelta(days=38)))
    outcome = desk.handle(statement)
    assert outcome.status == "skipped" and outcome.dropped == ("INV-1", "INV-1")
    assert desk.transport.sent[1:] == []


def test_a_reminder_whose_invoices_were_all_paid_but_which_carries_claims_still_owed_goes_as_a_claims_statement() -> (
    None
):
    from tests.factories import fold
    from tests.unit.ledger.test_claims import INV1, INV2, claiming, fee, fixed

    # Given INV-1 paid late, its claims claimed and owed, and INV-2 paid since a reminder demanding it was decided
    state = fold(
        [
            customer(),
            INV1,
            INV2,
            fee("INV-1"),
            fixed("INV-1", "7.66", "2026-03-25"),
            claiming("INV-1"),
            payment("P1", "1000.00", allocations={"INV-1": "1000.00"}),
            payment("P2", "500.00", allocations={"INV-2": "500.00"}),
        ]
    )
    claims = [
        {"invoice_id": "INV-1", "number": "F-INV-1", "kind": "interest", "currency": "EUR", "amount": "7.66"},
        {"invoice_id": "INV-1", "number": "F-INV-1", "kind": "indemnity", "currency": "EUR", "amount": "40.00"},
    ]
    command = {
        "reminder_id": "R",
        "level": "reminder-1",
        "template": "reminder-1",
        "currency": "EUR",
        "lines": [{"invoice_id": "INV-2", "level": "reminder-1", "outstanding": "500.00"}],
        "claims": claims,
        "totals": {"outstanding": "500.00", "interest": "0", "fees": "0", "claims": "47.66"},
    }
    # Then what is left is the claims: it goes with the claims statement's template, its total the claims'
    data, reasons = still_due(command, state)
    assert data["lines"] == [] and data["claims"] == claims and data["template"] == "claims"
    assert data["totals"] == {"outstanding": "0", "interest": "0", "fees": "0", "claims": "47.66"}
    assert reasons == [{"invoice_id": "INV-2", "reason": "paid"}]
