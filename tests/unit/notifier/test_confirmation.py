"""The written confirmation of a payment plan (``notifier.send_confirmation``), and reminders to a paused customer.

The commands are the real ones: a plan and its confirmation request are recorded in the ledger as the action layer
records them, and the outbox row the ledger writes is handed to :class:`services.notifier.service.Notifier` with an
in-memory SMTP transport.
"""

from __future__ import annotations

import asyncio
import copy
import email
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from services.cli import main
from services.escalation.policy import PolicyLibrary
from services.escalation.service import evaluate
from services.escalation.worker import real_rules
from services.notifier import evidence
from services.notifier.command import BadCommand, parse_confirmation, read
from services.notifier.delivery import fact_id
from services.notifier.mime import UnsafeHeaderText
from services.notifier.render import (
    CONFIRMATION,
    SAMPLE_PROFILE,
    load_templates,
    render_confirmation,
    sample_confirmation,
)
from services.notifier.sender import Sender, Signatory
from services.notifier.service import Notifier, NotNow, confirmation_data, confirmation_still_due
from services.notifier.smtp import MemoryTransport
from shared.config import Settings, load_settings
from shared.contracts.commands import SendConfirmation
from shared.contracts.examples import COMMAND_EXAMPLES
from shared.ledger.db import make_engine
from shared.ledger.schema import outbox
from shared.ledger.store import Ledger
from tests.factories import CUSTOMER, TENANT, Ev, customer, fold, incoming, invoice, payment, plan

EXAMPLE = COMMAND_EXAMPLES["notifier.send_confirmation"]
AGREED = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
INSTALMENTS = [("2027-01-15", "1200.00"), ("2027-02-15", "1200.00"), ("2027-03-15", "1234.56")]
PEOPLE_META = {"source": "workspace", "author": "claire.martin", "request_id": "req-1"}
SENDER = Sender(
    company="Acme Distribution SAS",
    address=("12 rue des Lilas", "69003 Lyon"),
    email="credit@acme.example",
    iban="FR76 3000 4000 0500 0000 0000 000",
    signatory=Signatory("Camille Durand", titles=(("fr", "Responsable du crédit clients"), ("en", "Credit Manager"))),
)


def agreed(plan_id: str = "P-1", instalments: list[tuple[str, str]] = INSTALMENTS) -> list[Ev]:
    """A plan a person agreed on both invoices, and the request for its confirmation (as the action layer records)."""
    event_id = f"act-{plan_id}"
    data = {
        "author": "claire.martin",
        "confirmation_id": f"{event_id}-1",
        "plan_id": plan_id,
        "language": "fr",
        "currency": "EUR",
        "invoice_ids": ["INV-1", "INV-2"],
        "instalments": [{"due_date": d, "amount": a} for d, a in instalments],
    }
    return [
        plan(plan_id, ["INV-1", "INV-2"], instalments).with_id(event_id),
        Ev("payment_plan.confirmation_requested", data, f"{event_id}-1", metadata=PEOPLE_META),
    ]


def invoices() -> list[Ev]:
    return [
        invoice("INV-1", "2400.00", number="F-2026-0101", issue_date="2026-09-15", due_date="2026-10-15"),
        invoice("INV-2", "1234.56", number="F-2026-0102", issue_date="2026-10-01", due_date="2026-10-31"),
    ]


class Desk:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.ledger = Ledger(engine)
        self.now = AGREED
        self.transport = MemoryTransport()
        self.notifier = Notifier(settings, engine, self.transport, now=lambda: self.now)

    def record(self, *events: Ev) -> None:
        outcomes = self.ledger.record([incoming(ev.at(self.now)) for ev in events])
        assert all(o.status == "applied" for o in outcomes), outcomes

    def commands(self, kind: str = "notifier.send_confirmation") -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            query = select(outbox.c.payload).where(outbox.c.kind == kind).order_by(outbox.c.id)
            return [dict(payload) for payload in conn.execute(query).scalars()]

    def handle(self, command: dict[str, Any]) -> Any:
        return asyncio.run(self.notifier.handle(command))

    def data(self, event_type: str) -> list[dict[str, Any]]:
        return [e.data for e in self.ledger.read_stream(TENANT, CUSTOMER) if e.event_type == event_type]


@pytest.fixture
def desk(ledger_url: str, tmp_path: Path) -> Iterator[Desk]:
    rates = tmp_path / "rates.csv"
    rates.write_text("2026-07-01,2.15\n", encoding="utf-8")
    engine = make_engine(ledger_url)
    yield Desk(engine, load_settings(database_url=ledger_url, mail_from="ar@example.com", rates_file=rates))
    engine.dispose()


# ---------------------------------------------------------------------------------------------------- the command
def test_the_contract_example_is_read_as_a_confirmation_command() -> None:
    command = read(EXAMPLE)
    assert isinstance(command, SendConfirmation)
    assert (command.plan_id, [str(i.amount) for i in command.instalments]) == ("plan-2026-0042", ["617.28"] * 2)


def test_a_body_without_its_command_kind_is_still_a_reminder_command() -> None:
    with pytest.raises(BadCommand, match="missing field"):
        read({k: v for k, v in EXAMPLE.items() if k != "command"})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"plan_id": ""}, "missing field(s): plan_id"),
        ({"confirmation_id": None}, "missing field(s): confirmation_id"),
        ({"invoice_ids": []}, "`invoice_ids` must be a non-empty list of invoice ids"),
        ({"instalments": []}, "`instalments` must be a non-empty list of objects with a due_date and an amount"),
        (
            {"instalments": [{"due_date": "2027-01-15", "amount": 617.28}]},
            'instalments[0].amount must be a decimal string such as "1234.56", got 617.28',
        ),
        (
            {"instalments": [{"due_date": "15/01/2027", "amount": "617.28"}]},
            "instalments[0].due_date must be an ISO 8601 date, got '15/01/2027'",
        ),
    ],
)
def test_a_confirmation_command_refused_names_its_first_problem(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadCommand) as refused:
        parse_confirmation({**copy.deepcopy(EXAMPLE), **change})
    assert str(refused.value) == reason


# ---------------------------------------------------------------------------------------------------- the letter
def test_the_french_letter_states_invoices_instalments_total_and_what_a_missed_instalment_means() -> None:
    rendered = render_confirmation(sample_confirmation(), SAMPLE_PROFILE, SENDER, "fr", load_templates())
    assert rendered.subject == "Confirmation de l'échéancier de paiement convenu — Exemple SARL"
    text, html = rendered.text, rendered.html
    for part in (text, html):
        assert "F-2026-0001" in part and "F-2026-0002" in part
        assert "2\u202f400,00\xa0€" in part and "3\u202f600,00\xa0€" in part  # French grouping and currency sign
        assert "15 janvier 2027" in part and "1er octobre 2026" in part
        assert "Si une échéance n'est pas réglée à sa date" in part
        assert "Camille Durand" in part and "Responsable du crédit clients" in part
    assert "en 3 échéances" in text and "FR76 3000 4000 0500 0000 0000 000" in text
    assert "1. Le 15 janvier 2027 : 1\u202f200,00\xa0€" in text
    assert rendered.template_name == CONFIRMATION and rendered.language == "fr"


def test_the_english_letter_is_written_the_english_way() -> None:
    rendered = render_confirmation(sample_confirmation(), SAMPLE_PROFILE, SENDER, "en", load_templates())
    assert rendered.subject == "Confirmation of the payment plan agreed — Exemple SARL"
    assert "1. 15 January 2027: €1,200.00" in rendered.text and "Total of the plan: €3,600.00" in rendered.text
    assert "If an instalment is not paid by its date" in rendered.text
    assert "Credit Manager" in rendered.text and "€2,400.00" in rendered.html


def test_a_single_instalment_is_said_in_the_singular() -> None:
    data = {**sample_confirmation(), "instalments": [{"due_date": "2027-01-15", "amount": "3600.00"}]}
    assert "en une seule échéance" in render_confirmation(data, SAMPLE_PROFILE, SENDER, "fr").text
    assert "in a single instalment" in render_confirmation(data, SAMPLE_PROFILE, SENDER, "en").text


def test_hostile_erp_text_stays_inert_in_the_letter() -> None:
    data = sample_confirmation()
    data["invoices"][0]["number"] = "<img src=x onerror=alert(1)>"
    profile = {"name": "<script>alert(1)</script> {{ 7*7 }}", "contact_name": "{% raw %}"}
    rendered = render_confirmation(data, profile, SENDER, "fr")
    assert "<script>" not in rendered.html and "&lt;script&gt;alert(1)&lt;/script&gt; {{ 7*7 }}" in rendered.html
    assert "<img" not in rendered.html and "&lt;img src=x onerror=alert(1)&gt;" in rendered.html
    assert "{{ 7*7 }}" in rendered.subject and "49" not in rendered.subject
    assert "<img src=x onerror=alert(1)> du" in rendered.text  # text is literal


@pytest.mark.parametrize("name", ["=?utf-8?q?=0D=0ABcc:evil@example.com?=", "Martin\r\nBcc: evil@example.com"])
def test_a_name_that_could_forge_a_header_is_refused(name: str) -> None:
    with pytest.raises(UnsafeHeaderText):
        render_confirmation(sample_confirmation(), {"name": name}, SENDER, "en")


# ---------------------------------------------------------------------------------------------------- still due
def test_a_plan_that_stands_is_confirmed_and_one_changed_paid_or_unknown_is_not() -> None:
    command = read(agreed()[1].data | {"command_id": "c", "tenant": TENANT, "customer_id": CUSTOMER,
                                       "occurred_at": AGREED.isoformat(), "sequence": 3,
                                       "command": "notifier.send_confirmation"})  # fmt: skip
    assert isinstance(command, SendConfirmation)
    standing = fold([customer(), *invoices(), agreed()[0]])
    assert confirmation_still_due(command, standing) == []
    # one invoice paid: the plan still covers the other
    assert (
        confirmation_still_due(command, fold([customer(), *invoices(), agreed()[0], payment("PAY-1", "2400.00")])) == []
    )
    paid = fold([customer(), *invoices(), agreed()[0], payment("PAY-1", "3634.56")])
    assert [r["reason"] for r in confirmation_still_due(command, paid)] == ["paid", "paid"]
    changed = fold([customer(), *invoices(), agreed(instalments=[("2027-01-15", "3634.56")])[0].with_id("x")])
    assert confirmation_still_due(command, changed)[0]["reason"].startswith("payment plan P-1 changed since")
    unknown = fold([customer(), *invoices()])
    assert confirmation_still_due(command, unknown) == [
        {"invoice_id": "*", "reason": "payment plan P-1 unknown to the ledger"}
    ]


def test_the_letter_reads_the_invoices_from_the_ledger() -> None:
    state = fold([customer(), *invoices(), agreed()[0], payment("PAY-1", "400.00")])
    data = confirmation_data({"invoice_ids": ["INV-1", "INV-2", "INV-9"]}, state)
    assert [(i["number"], i["amount"], i["outstanding"]) for i in data["invoices"]] == [
        ("F-2026-0101", "2400.00", "2000.00"),
        ("F-2026-0102", "1234.56", "1234.56"),
    ]


# ---------------------------------------------------------------------------------------------------- sending
def test_a_confirmation_is_sent_once_with_the_evidence_of_a_reminder(desk: Desk) -> None:
    desk.record(customer(), *invoices(), *agreed())
    [command] = desk.commands()
    outcome = desk.handle(command)
    assert (outcome.status, outcome.level, outcome.language) == ("sent", CONFIRMATION, "fr")
    [(sender, recipients, raw)] = desk.transport.sent
    assert (sender, recipients) == ("ar@example.com", ("compta@martin.fr",))
    message = email.message_from_bytes(raw, policy=email_policy.default)  # type: ignore[arg-type]
    assert message["Subject"] == "Confirmation de l'échéancier de paiement convenu — Boulangeries Martin SAS"
    [sending], [sent] = desk.data("reminder.sending"), desk.data("reminder.sent")
    assert sent["command_id"] == command["command_id"] and sent["reminder_id"] == command["confirmation_id"]
    assert (sent["level"], sent["template"], sent["subject"]) == (CONFIRMATION, CONFIRMATION, message["Subject"])
    assert sending["sha256"] == sent["sha256"]
    stored = evidence.by_message_id(desk.engine, sent["message_id"], TENANT)
    assert stored is not None and stored.mime == raw and evidence.verify(stored, sent["sha256"])
    # When the same command comes again
    again = desk.handle(command)
    # Then nothing more is sent
    assert again.status == "already_sent" and len(desk.transport.sent) == 1


def test_a_confirmation_for_a_customer_without_an_address_asks_for_a_letter(desk: Desk) -> None:
    desk.record(customer(emails=()), *invoices(), *agreed())
    [command] = desk.commands()
    assert desk.handle(command).status == "failed" and desk.transport.sent == []
    [failed] = desk.data("reminder.failed")
    assert (failed["refusal"], failed["reason"]) == ("no_address", "the customer has no e-mail address")
    [task] = desk.data("task.created")
    assert task["kind"] == "send_letter" and "payment plan confirmation" in task["note"]
    assert task["task_id"] == fact_id(command["command_id"], "task/send_letter")


def test_a_confirmation_of_a_plan_whose_invoices_are_all_paid_is_skipped(desk: Desk) -> None:
    desk.record(customer(), *invoices(), *agreed())
    [command] = desk.commands()
    desk.record(payment("PAY-1", "3634.56"))
    assert desk.handle(command).status == "skipped" and desk.transport.sent == []
    [skipped] = desk.data("reminder.skipped")
    assert skipped["level"] == CONFIRMATION and {d["reason"] for d in skipped["dropped"]} == {"paid"}


def test_a_reminder_for_a_customer_paused_on_the_sending_day_is_skipped(desk: Desk) -> None:
    # Given a reminder decided on 2 November, and the customer paused that morning until 30 November
    books = PolicyLibrary.load(None).for_tenant
    desk.now = datetime(2026, 11, 2, 9, tzinfo=UTC)
    desk.record(customer(), invoice("INV-1", "1234.56", due_date=date(2026, 10, 30)))
    evaluate(desk.ledger, books(TENANT), TENANT, CUSTOMER, desk.now, rules=real_rules(desk.notifier.settings))
    [command] = desk.commands("notifier.send_reminder")
    pause = {"author": "claire.martin", "pause_id": "PZ-1", "reason": "insolvency\n talks", "until": "2026-11-30"}
    desk.record(Ev("customer.paused", pause, "act-pause", metadata=PEOPLE_META))
    # When the notifier gets the reminder
    outcome = desk.handle(command)
    # Then it is not sent, and the reason says until when and why
    assert outcome.status == "skipped" and desk.transport.sent == []
    [skipped] = desk.data("reminder.skipped")
    assert skipped["dropped"] == [{"invoice_id": "*", "reason": "customer paused until 2026-11-30 (insolvency talks)"}]


def test_a_reminder_handled_the_day_after_the_pause_ends_goes_out(desk: Desk) -> None:
    books = PolicyLibrary.load(None).for_tenant
    desk.now = datetime(2026, 11, 2, 9, tzinfo=UTC)
    desk.record(customer(), invoice("INV-1", "1234.56", due_date=date(2026, 10, 30)))
    evaluate(desk.ledger, books(TENANT), TENANT, CUSTOMER, desk.now, rules=real_rules(desk.notifier.settings))
    [command] = desk.commands("notifier.send_reminder")
    pause = {"author": "claire.martin", "pause_id": "PZ-1", "reason": "talks", "until": "2026-11-02"}
    desk.record(Ev("customer.paused", pause, "act-pause", metadata=PEOPLE_META))
    desk.now = datetime(2026, 11, 2, 23, 30, tzinfo=UTC)  # 3 November in Paris: the pause is over
    assert desk.handle(command).status == "sent"


def test_preview_writes_the_confirmation_letter_as_it_is_sent(tmp_path: Path) -> None:
    # Given a SQLite ledger where a plan was agreed and its confirmation requested
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    engine = make_engine(url)
    Ledger(engine).record([incoming(ev.at(AGREED)) for ev in (customer(), *invoices(), *agreed())])
    engine.dispose()
    # When previewing it by its confirmation id, in English
    args = ["preview", "--tenant", TENANT, "--customer", CUSTOMER, "--confirmation", "act-P-1-1", "--lang", "en"]
    assert main([*args, "--out", str(tmp_path / "out"), "--database-url", url]) == 0
    # Then the letter and the message are written, with the ledger's invoices and the plan's instalments
    folder = tmp_path / "out" / f"{CUSTOMER}-{CONFIRMATION}-en-EUR"
    text = (folder / "body.txt").read_text(encoding="utf-8")
    assert "Invoice F-2026-0101 dated 15 September 2026" in text and "3. 15 March 2027: €1,234.56" in text
    message = email.message_from_bytes((folder / "message.eml").read_bytes(), policy=email_policy.default)
    assert message["Message-ID"].startswith("<act-P-1-1@") and message["To"] == "compta@martin.fr"
    # And a confirmation the stream does not hold is refused
    assert main([*args[:5], "--confirmation", "nope", "--out", str(tmp_path), "--database-url", url]) == 1


def test_a_confirmation_the_mail_server_refuses_asks_a_person_to_post_it(desk: Desk) -> None:
    desk.record(customer(), *invoices(), *agreed())
    [command] = desk.commands()
    desk.transport.refuse["compta@martin.fr"] = (550, "no such user")
    assert desk.handle(command).status == "failed" and desk.transport.sent == []
    [task] = desk.data("task.created")
    assert task["kind"] == "send_letter" and task["note"].endswith(
        "send the payment plan confirmation by letter or call"
    )
    assert task["amount_at_risk"] == "3634.56" and task["invoice_ids"] == ["INV-1", "INV-2"]


def test_a_confirmation_waits_out_the_quiet_hours_like_a_reminder(ledger_url: str) -> None:
    # Given a tenant that sends nothing between 20:00 and 08:00 in Paris, and a plan agreed at 22:00 Paris time
    engine = make_engine(ledger_url)
    settings = load_settings(database_url=ledger_url, mail_from="ar@example.com", quiet_hours="20:00-08:00")
    late = datetime(2026, 12, 1, 21, tzinfo=UTC)
    transport = MemoryTransport()
    notifier = Notifier(settings, engine, transport, now=lambda: late)
    Ledger(engine).record([incoming(ev.at(late)) for ev in (customer(), *invoices(), *agreed())])
    with engine.connect() as conn:
        query = select(outbox.c.payload).where(outbox.c.kind == "notifier.send_confirmation")
        [command] = [dict(payload) for payload in conn.execute(query).scalars()]
    # When the notifier gets it, it is held back until 08:00, and nothing is sent
    with pytest.raises(NotNow, match="quiet hours"):
        asyncio.run(notifier.handle(command))
    assert transport.sent == []
    engine.dispose()


def test_a_hostile_name_reaches_the_subject_header_as_inert_text(desk: Desk) -> None:
    name = 'Martin "<script>alert(1)</script>" {{ 7*7 }} SAS'
    desk.record(customer(name), *invoices(), *agreed())
    [command] = desk.commands()
    assert desk.handle(command).status == "sent"
    [(_, _, raw)] = desk.transport.sent
    message = email.message_from_bytes(raw, policy=email_policy.default)  # type: ignore[arg-type]
    assert message["Subject"] == f"Confirmation de l'échéancier de paiement convenu — {name}"
    assert message["Bcc"] is None and len(message.keys()) == len(set(message.keys()))
    html = message.get_body(("html",))
    assert html is not None and "&lt;script&gt;" in html.get_content() and "<script>" not in html.get_content()
