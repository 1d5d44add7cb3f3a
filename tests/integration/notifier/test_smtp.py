"""The notifier's sender against a real SMTP server on loopback (aiosmtpd, STARTTLS + AUTH) and real PostgreSQL."""

from __future__ import annotations

import asyncio
import email
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import create_engine

from services.notifier import evidence, mime
from services.notifier.delivery import MailSettings, SendDeferred, deliver, fact_id
from services.notifier.smtp import SmtpTransport
from shared.ledger.store import Incoming, Ledger
from tests.smtp_server import Recording, Sink, Smtp, free_port

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Rendered:
    subject: str = "Rappel : facture F-2026-001 impayée"
    text: str = "Bonjour,\nMontant dû : 1 234,56 €\n.\nCordialement\n"
    html: str = "<p>Bonjour,</p><p>Montant dû : <b>1&nbsp;234,56&nbsp;€</b></p>"
    template_name: str = "reminder_1"
    template_version: str = "v-test"


@pytest.fixture
def ledger(pg_url: str) -> Iterator[Ledger]:
    engine = create_engine(pg_url)
    yield Ledger(engine)
    engine.dispose()


MAIL = MailSettings(sender="billing@example.com", domain="mail.example.com", backoff_seconds=0.01, backoff_max=0.05)


def command(ledger: Ledger, n: int = 1) -> dict[str, Any]:
    """Given a reminder.requested in the ledger: the notifier.send_reminder command the outbox made of it."""
    data = {"reminder_id": f"R-{n}", "level": "reminder_1", "currency": "EUR", "invoice_ids": ["I-1"],
            "as_of": "2026-11-23",
            "totals": {"outstanding": "1234.56", "interest": "0", "fees": "0"}}  # fmt: skip
    event_id = f"esc-cmd-{n}"
    ledger.record([Incoming("acme", "C-1", event_id, "reminder.requested", data, _now())])
    return {"command_id": event_id, "command": "notifier.send_reminder", "tenant": "acme", "customer_id": "C-1",
            "sequence": n, **data}  # fmt: skip


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def types(ledger: Ledger) -> list[str]:
    return [e.event_type for e in ledger.read_stream("acme", "C-1")]


def event(ledger: Ledger, event_type: str) -> dict[str, Any]:
    [found] = [e.data for e in ledger.read_stream("acme", "C-1") if e.event_type == event_type]
    return found


def test_sent_over_starttls_with_auth_parses_and_hash_matches_evidence(ledger: Ledger, smtp: Smtp) -> None:
    cmd = command(ledger)
    transport = smtp.transport()

    result = asyncio.run(deliver(ledger, cmd, Rendered(), ["jane@example.org"], transport, MAIL))

    assert result.status == "sent"
    [(sender, rcpts, data)] = smtp.sink.received
    assert (sender, rcpts) == ("billing@example.com", ["jane@example.org"])
    parsed: Message = email.message_from_bytes(data)
    assert parsed.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_payload(decode=True) for p in parsed.walk() if not p.is_multipart()}
    assert "1 234,56 €".encode() in parts["text/plain"] and b"<b>1&nbsp;234,56&nbsp;" in parts["text/html"]
    assert parsed["Message-ID"] == "<esc-cmd-1@mail.example.com>"
    sent = event(ledger, "reminder.sent")
    assert sent["sha256"] == hashlib.sha256(data).hexdigest() == result.sha256
    assert sent["recipients"] == ["jane@example.org"] and sent["subject"] == Rendered.subject
    assert sent["template"] == "reminder_1" and sent["template_version"] == "v-test"
    assert sent["smtp_reply"].startswith("250")
    stored = evidence.by_message_id(ledger.engine, "esc-cmd-1@mail.example.com")
    assert stored is not None and stored.mime == data and evidence.verify(stored, sent["sha256"])
    assert types(ledger) == ["reminder.requested", "reminder.sending", "reminder.sent"]


def test_connection_is_reused_for_several_messages(ledger: Ledger, smtp: Smtp) -> None:
    transport = smtp.transport()

    async def run() -> None:
        for n in (1, 2, 3):
            await deliver(ledger, command(ledger, n), Rendered(), ["jane@example.org"], transport, MAIL)
        await transport.close()

    asyncio.run(run())

    assert len(smtp.sink.received) == 3 and transport.connections == 1


def test_duplicate_delivery_sends_one_message(ledger: Ledger, smtp: Smtp) -> None:
    cmd = command(ledger)

    first = asyncio.run(deliver(ledger, cmd, Rendered(), ["jane@example.org"], smtp.transport(), MAIL))
    second = asyncio.run(deliver(ledger, cmd, Rendered(), ["jane@example.org"], smtp.transport(), MAIL))

    assert (first.status, second.status) == ("sent", "already_sent")
    assert second.message_id == first.message_id and second.sha256 == first.sha256
    assert len(smtp.sink.received) == 1
    assert types(ledger).count("reminder.sent") == 1


def test_4xx_then_success_retries_and_sends_once(ledger: Ledger, smtp: Smtp) -> None:
    smtp.sink.script = ["451 4.3.0 Try again later", "452 4.3.1 Insufficient storage"]

    result = asyncio.run(deliver(ledger, command(ledger), Rendered(), ["jane@example.org"], smtp.transport(), MAIL))

    assert result.status == "sent"
    assert len(smtp.sink.received) == 1
    assert types(ledger) == ["reminder.requested", "reminder.sending", "reminder.sent"]


def test_5xx_records_failed_and_a_collector_task(ledger: Ledger, smtp: Smtp) -> None:
    smtp.sink.script = ["550 5.1.1 Mailbox unavailable"]

    result = asyncio.run(deliver(ledger, command(ledger), Rendered(), ["jane@example.org"], smtp.transport(), MAIL))

    assert result.status == "failed" and smtp.sink.received == []
    failed = event(ledger, "reminder.failed")
    assert failed["smtp_reply"].startswith("550") and "refused" in failed["reason"]
    task = event(ledger, "task.created")
    assert task["kind"] == "send_letter" and task["amount_at_risk"] == "1234.56"
    again = asyncio.run(deliver(ledger, command(ledger), Rendered(), ["jane@example.org"], smtp.transport(), MAIL))
    assert again.status == "already_failed" and types(ledger).count("task.created") == 1


def test_server_down_for_a_while_then_up_sends_once(ledger: Ledger, cert: tuple[Path, Path]) -> None:
    server = Smtp(Sink(), free_port(), cert)  # not started: connections are refused
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            server.start()

    try:
        result = asyncio.run(
            deliver(ledger, command(ledger), Rendered(), ["jane@example.org"], server.transport(), MAIL, sleep=sleep)
        )
    finally:
        server.stop()

    assert result.status == "sent" and len(server.sink.received) == 1
    assert waits == sorted(waits) and len(waits) == 2  # backoff grows


def test_down_past_the_attempts_defers_then_a_redelivery_sends_the_same_bytes_once(
    ledger: Ledger, cert: tuple[Path, Path]
) -> None:
    server = Smtp(Sink(), free_port(), cert)
    cmd = command(ledger)
    with pytest.raises(SendDeferred):
        asyncio.run(deliver(ledger, cmd, Rendered(), ["jane@example.org"], server.transport(), MAIL))
    assert types(ledger)[-1] == "reminder.deferred"
    stored = evidence.by_command(ledger.engine, "acme", cmd["command_id"])

    server.start()
    try:
        result = asyncio.run(deliver(ledger, cmd, Rendered(), ["jane@example.org"], server.transport(), MAIL))
    finally:
        server.stop()

    assert result.status == "sent" and len(server.sink.received) == 1
    assert stored is not None and server.sink.received[0][2] == stored.mime and result.sha256 == stored.sha256


def test_bcc_injection_in_the_recipient_adds_no_recipient(ledger: Ledger, smtp: Smtp) -> None:
    hostile = Rendered(subject="{{ 7*7 }} <script> Bcc: x@example.com")

    bad = asyncio.run(
        deliver(ledger, command(ledger, 1), hostile, ["jane@example.org\r\nBcc: x@example.com"], smtp.transport(), MAIL)
    )
    good = asyncio.run(deliver(ledger, command(ledger, 2), hostile, ["jane@example.org"], smtp.transport(), MAIL))

    assert bad.status == "failed" and "control character" in event(ledger, "reminder.failed")["reason"]
    assert good.status == "sent"
    [(_, rcpts, data)] = smtp.sink.received
    assert rcpts == ["jane@example.org"]
    parsed = email.message_from_bytes(data)
    assert parsed["Bcc"] is None and parsed["Subject"] == "{{ 7*7 }} <script> Bcc: x@example.com"


def test_a_worker_killed_between_sending_and_recording_does_not_resend(ledger: Ledger, smtp: Smtp) -> None:
    """Given a send whose result was never recorded (the worker died), a redelivery past the lease does not resend."""
    cmd = command(ledger)

    class DiesAfterSending(SmtpTransport):
        async def send(self, sender: str, recipients: Any, data: bytes) -> NoReturn:
            await super().send(sender, recipients, data)
            raise KeyboardInterrupt  # the process is gone before reminder.sent is recorded

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(
            deliver(ledger, cmd, Rendered(), ["jane@example.org"], DiesAfterSending(smtp.transport().config), MAIL)
        )
    expired = MailSettings(sender=MAIL.sender, domain=MAIL.domain, lease_seconds=0)

    result = asyncio.run(deliver(ledger, cmd, Rendered(), ["jane@example.org"], smtp.transport(), expired))

    assert result.status == "unconfirmed" and len(smtp.sink.received) == 1
    assert event(ledger, "task.created")["kind"] == "check_delivery"
    assert result.message_id in event(ledger, "task.created")["note"]
    assert fact_id(cmd["command_id"], "sent") not in {e.event_id for e in ledger.read_stream("acme", "C-1")}


# --------------------------------------------------------------------------- header injection (issue 8.1)
def sink(smtp: Smtp) -> Recording:
    """The loopback smtp's sink, which can refuse given recipients at RCPT TO."""
    assert isinstance(smtp.sink, Recording)
    return smtp.sink


@pytest.mark.parametrize(
    "subject",
    ["Rappel — Acme =?utf-8?q?=0D=0ABcc:_spy@attacker.example?=",
     "Rappel — Acme =?utf-8?q?=0D=0A=0D=0APAY_TO_IBAN_FR76_6666?=",
     "Rappel — Acme =?utf-8?b?DQpCY2M6IHNweUBhdHRhY2tlci5leGFtcGxl?=",
     "Rappel — Acme\u2028Reply-To: spy@attacker.example"],
)  # fmt: skip
def test_a_subject_that_could_forge_headers_never_reaches_the_server(ledger: Ledger, smtp: Smtp, subject: str) -> None:
    result = asyncio.run(
        deliver(ledger, command(ledger), Rendered(subject=subject), ["jane@example.org"], smtp.transport(), MAIL)
    )

    assert result.status == "failed" and smtp.sink.received == []
    failed = event(ledger, "reminder.failed")
    assert failed["refusal"] == "unsafe_header_text" and "refused, the reminder is not sent" in failed["reason"]
    assert "correct the customer's details" in event(ledger, "task.created")["note"]
    assert types(ledger) == ["reminder.requested", "reminder.failed", "task.created"]


def test_stored_bytes_that_read_back_with_an_extra_header_are_never_sent(ledger: Ledger, smtp: Smtp) -> None:
    # Given a first round whose stored bytes carry a Bcc (as a vulnerable email package wrote them)
    cmd = command(ledger)
    genuine = mime.build(
        Rendered(), sender=MAIL.sender, recipients=["jane@example.org"], command_id=cmd["command_id"],
        domain=MAIL.domain, date=_now(),
    )  # fmt: skip
    forged = genuine.data.replace(b"\r\nDate:", b"\r\nBcc: spy@attacker.example\r\nDate:", 1)
    evidence.store(
        ledger.engine, tenant="acme", customer_id="C-1", command_id=cmd["command_id"],
        message_id=genuine.message_id, mime=forged,
    )  # fmt: skip
    # When the command is handled again
    result = asyncio.run(deliver(ledger, cmd, Rendered(), ["jane@example.org"], smtp.transport(), MAIL))
    # Then those bytes are refused before any SMTP exchange, with the reason, and a collector task
    assert result.status == "failed" and smtp.sink.received == []
    failed = event(ledger, "reminder.failed")
    assert failed["refusal"] == "message_mismatch" and "'Bcc'" in failed["reason"]
    assert failed["sha256"] == hashlib.sha256(forged).hexdigest()
    assert "reminder.sent" not in types(ledger) and event(ledger, "task.created")["kind"] == "send_letter"


# ------------------------------------------------------------------- several addresses, some refused (8.11)
def test_a_550_for_one_address_sends_to_the_others_and_records_who_refused(ledger: Ledger, smtp: Smtp) -> None:
    # Given a customer with two addresses, one of which the smtp refuses for good
    sink(smtp).refuse["old@example.org"] = "550 5.1.1 <old@example.org>: Recipient address rejected"
    cmd = command(ledger)

    result = asyncio.run(
        deliver(ledger, cmd, Rendered(), ["jane@example.org", "old@example.org"], smtp.transport(), MAIL)
    )
    # Then the message went once, to the accepted address only, its To header naming both as built
    assert result.status == "sent"
    [(_, rcpts, data)] = smtp.sink.received
    assert rcpts == ["jane@example.org"]
    assert email.message_from_bytes(data)["To"] == "jane@example.org, old@example.org"
    # And the evidence says who accepted it and who refused it, with the smtp's code and text
    sent = event(ledger, "reminder.sent")
    assert sent["accepted"] == ["jane@example.org"] and sent["recipients"] == ["jane@example.org", "old@example.org"]
    assert sent["refused"] == [
        {"address": "old@example.org", "code": 550, "reply": "5.1.1 <old@example.org>: Recipient address rejected",
         "kind": "permanent"}
    ]  # fmt: skip
    assert sent["smtp_reply"].startswith("250") and sent["sha256"] == hashlib.sha256(data).hexdigest()
    # And the refused address is a task for a collector, recorded with the evidence
    task = event(ledger, "task.created")
    assert task["kind"] == "fix_contact" and task["amount_at_risk"] == "1234.56"
    assert "old@example.org refused (550 5.1.1" in task["note"] and "correct the address" in task["note"]
    assert "went to jane@example.org only" in task["note"]
    assert types(ledger) == ["reminder.requested", "reminder.sending", "reminder.sent", "task.created"]


def test_a_4xx_for_one_address_sends_to_the_others_once_and_asks_a_person_to_forward(
    ledger: Ledger, smtp: Smtp
) -> None:
    sink(smtp).refuse["busy@example.org"] = "450 4.2.1 Mailbox busy, try later"
    cmd = command(ledger)
    recipients = ["busy@example.org", "jane@example.org"]

    first = asyncio.run(deliver(ledger, cmd, Rendered(), recipients, smtp.transport(), MAIL))
    again = asyncio.run(deliver(ledger, cmd, Rendered(), recipients, smtp.transport(), MAIL))

    # Then it went to the accepted address once, the deferred one is recorded and made a task, never resent
    assert (first.status, again.status) == ("sent", "already_sent")
    assert [rcpts for _, rcpts, _ in smtp.sink.received] == [["jane@example.org"]]
    sent = event(ledger, "reminder.sent")
    assert sent["accepted"] == ["jane@example.org"]
    assert [(r["address"], r["code"], r["kind"]) for r in sent["refused"]] == [("busy@example.org", 450, "temporary")]
    note = event(ledger, "task.created")["note"]
    assert "busy@example.org deferred (450 4.2.1 Mailbox busy, try later)" in note
    assert f"relance evidence show --message-id {first.message_id.strip('<>')}" in note


def test_every_address_refused_for_good_is_a_failure_as_with_one_address(ledger: Ledger, smtp: Smtp) -> None:
    for address in ("a@example.org", "b@example.org"):
        sink(smtp).refuse[address] = "550 5.1.1 No such user"

    result = asyncio.run(
        deliver(ledger, command(ledger), Rendered(), ["a@example.org", "b@example.org"], smtp.transport(), MAIL)
    )

    assert result.status == "failed" and smtp.sink.received == []
    failed = event(ledger, "reminder.failed")
    assert failed["smtp_reply"] == "a@example.org: 550 5.1.1 No such user; b@example.org: 550 5.1.1 No such user"
    assert event(ledger, "task.created")["kind"] == "send_letter" and "reminder.sent" not in types(ledger)


def test_every_address_refused_with_one_temporary_refusal_is_deferred_not_failed(ledger: Ledger, smtp: Smtp) -> None:
    sink(smtp).refuse["a@example.org"] = "550 5.1.1 No such user"
    sink(smtp).refuse["b@example.org"] = "451 4.3.0 Try again later"

    with pytest.raises(SendDeferred, match=r"b@example\.org: 451"):
        asyncio.run(
            deliver(ledger, command(ledger), Rendered(), ["a@example.org", "b@example.org"], smtp.transport(), MAIL)
        )

    assert smtp.sink.received == [] and types(ledger)[-1] == "reminder.deferred"
