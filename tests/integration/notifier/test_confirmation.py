"""A payment plan's confirmation and a paused customer's reminder on real servers: PostgreSQL, RabbitMQ, SMTP.

The plan and its confirmation request are recorded as the action layer records them; the outbox writes the
``notifier.send_confirmation`` command, the relay publishes it to the commands exchange, and the notifier worker
(the rig of tests/integration/notifier/test_worker.py) takes it from the queue bound to both notifier commands.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from services.cli import main
from services.notifier import evidence
from shared.ledger.schema import outbox
from tests.factories import TENANT, Ev, customer, invoice, plan
from tests.integration.notifier.test_worker import DUE, REMIND, Rig, make_rig
from tests.smtp_server import bodies

pytestmark = pytest.mark.integration

__all__ = ["make_rig"]  # the rig's fixture, shared with the worker's tests

PEOPLE_META = {"source": "workspace", "author": "claire.martin", "request_id": "req-7"}
INSTALMENTS = [("2027-01-15", "1500.00"), ("2027-02-15", "1500.00"), ("2027-03-15", "1234.56")]


def agree_plan(rig: Rig, customer_id: str) -> dict[str, Any]:
    """The customer, two invoices and a plan with its confirmation request; the command the outbox wrote."""
    rig.erp(
        customer_id,
        customer("Boulangeries Martin SAS", emails=("compta@martin.example",), language="fr"),
        invoice("INV-1", "3000.00", number="F-2026-0101", issue_date="2026-09-15", due_date="2026-10-15"),
        invoice("INV-2", "1234.56", number="F-2026-0102", issue_date="2026-10-01", due_date="2026-10-31"),
    )
    request = {
        "author": "claire.martin",
        "confirmation_id": "act-plan-1",
        "plan_id": "P-1",
        "language": "fr",
        "currency": "EUR",
        "invoice_ids": ["INV-1", "INV-2"],
        "instalments": [{"due_date": d, "amount": a} for d, a in INSTALMENTS],
    }
    rig.erp(
        customer_id,
        plan("P-1", ["INV-1", "INV-2"], INSTALMENTS).with_id("act-plan"),
        Ev("payment_plan.confirmation_requested", request, "act-plan-1", metadata=PEOPLE_META),
        at=datetime(2026, 12, 1, 10, 30, tzinfo=UTC),
    )
    with rig.engine.connect() as conn:
        query = select(outbox.c.payload).where(outbox.c.kind == "notifier.send_confirmation")
        [command] = [dict(payload) for payload in conn.execute(query).scalars()]
    return command


def test_a_confirmation_published_twice_reaches_the_customer_once_with_its_evidence(
    make_rig: Callable[..., Rig], capsys: pytest.CaptureFixture[str]
) -> None:
    rig = make_rig()
    command = agree_plan(rig, "C-1")
    rig.start()
    # When the relay publishes the command, and publishes it again (its commit lost after RabbitMQ's confirms)
    assert rig.relay() >= 1  # with the ERP's erp.payment_plan, once the outbox writes it for a person's plan
    rig.wait(lambda: rig.outcome(command) != [], "the confirmation's outcome")
    assert rig.republish_outbox() >= 1
    rig.wait(lambda: rig.handled() == 2, "both copies of the command")
    rig.stop()
    # Then one message reached the server, and the copy ended as already sent
    statuses = collections.Counter(rig.worker.totals.by_status)
    assert statuses == {"sent": 1, "already_sent": 1}
    assert rig.outcome(command) == ["reminder.sent"] and len(rig.sink.received) == 1
    [message] = rig.sink.messages()
    [(_, rcpts, raw)] = rig.sink.received
    [sent] = rig.data("C-1", "reminder.sent")
    assert rcpts == ["compta@martin.example"] == sent["recipients"]
    assert sent["message_id"] == message["Message-ID"] == f"<{command['command_id']}@mail.acme.example>"
    assert (sent["level"], sent["reminder_id"]) == ("payment_plan_confirmation", "act-plan-1")
    assert (
        message["Subject"]
        == sent["subject"]
        == ("Confirmation de l'échéancier de paiement convenu — Boulangeries Martin SAS")
    )
    text, html = bodies(message)
    for part in (text, html):
        assert "F-2026-0101" in part and "F-2026-0102" in part and "15 mars 2027" in part
        assert "4\u202f234,56\xa0€" in part  # the plan's total, written the French way
    # And the stored bytes are those the server got, hashing to the evidence
    stored = evidence.by_message_id(rig.engine, sent["message_id"], TENANT)
    assert stored is not None and stored.mime == raw and stored.command_id == command["command_id"]
    assert sent["sha256"] == hashlib.sha256(raw).hexdigest() and evidence.verify(stored, sent["sha256"])
    assert rig.depth(rig.settings.notifier_queue) == 0
    # And an auditor finds it with relance evidence show, verified against the log
    args = ["evidence", "show", "--message-id", sent["message_id"], "--tenant", TENANT]
    assert main([*args, "--database-url", str(rig.settings.database_url)]) == 0
    shown = capsys.readouterr().out
    assert sent["sha256"] in shown and "payment_plan_confirmation" in shown, shown


def test_the_reminder_of_a_customer_paused_since_it_was_decided_is_skipped(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.customers("C-1")
    [command] = rig.decide(REMIND, "C-1")
    assert command["invoice_ids"] == ["INV-C-1"] and DUE < REMIND
    # Given the customer paused afterwards, until ten days after the day the notifier sends on (Paris time)
    until = (datetime.now(ZoneInfo("Europe/Paris")).date() + timedelta(days=10)).isoformat()
    pause = {"author": "claire.martin", "pause_id": "PZ-1", "reason": "insolvency talks", "until": until}
    rig.erp("C-1", Ev("customer.paused", pause, "act-pause", metadata=PEOPLE_META), at=datetime.now(UTC))
    rig.start()
    # When the reminder is published
    assert rig.relay() == 1
    rig.wait(lambda: rig.outcome(command) != [], "the reminder's outcome")
    rig.stop()
    # Then nothing reached the server, and the skip says until when and why
    assert rig.outcome(command) == ["reminder.skipped"] and rig.sink.received == []
    [skipped] = rig.data("C-1", "reminder.skipped")
    assert skipped["dropped"] == [{"invoice_id": "*", "reason": f"customer paused until {until} (insolvency talks)"}]
