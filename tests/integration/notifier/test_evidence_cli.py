"""``relance evidence``: a sent reminder's stored bytes checked against the log, on both engines."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from services.cli import main
from services.notifier.delivery import MailSettings, SendResult, deliver
from services.notifier.render import RenderedReminder
from services.notifier.smtp import MemoryTransport, UnknownOutcome
from shared.ledger.db import make_engine
from shared.ledger.store import Incoming, Ledger

pytestmark = pytest.mark.integration

TENANT, CUSTOMER = "acme-fr", "C-0042"
MAIL = MailSettings(sender="billing@example.com", domain="mail.example.com", backoff_seconds=0.0)


SUBJECT = "Rappel : facture F-2026-001 impayée"
RENDERED = RenderedReminder(
    SUBJECT, "Montant dû : 1 234,56 €\n", "<p>Montant dû : 1&nbsp;234,56&nbsp;€</p>", "reminder_1", "3f9a0c1d", "fr"
)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    engine = make_engine(ledger_url)
    yield Ledger(engine)
    engine.dispose()


def send(
    ledger: Ledger,
    n: int = 1,
    transport: MemoryTransport | None = None,
    recipients: tuple[str, ...] = ("compta@martin.fr",),
) -> tuple[SendResult, MemoryTransport]:
    """Given a reminder.requested in the customer's stream, the notifier sends its command (evidence recorded)."""
    totals = {"outstanding": "1234.56", "interest": "0", "fees": "0"}
    data = {"reminder_id": f"R-{n}", "level": "reminder_1", "currency": "EUR", "invoice_ids": ["I-1"],
            "as_of": "2026-11-23T08:00:00Z", "totals": totals}  # fmt: skip
    command_id = f"esc-cmd-{n}"
    ledger.record([Incoming(TENANT, CUSTOMER, command_id, "reminder.requested", data, datetime.now(UTC))])
    command: dict[str, Any] = {"command_id": command_id, "command": "notifier.send_reminder", "tenant": TENANT,
                               "customer_id": CUSTOMER, "sequence": n, **data}  # fmt: skip
    transport = transport or MemoryTransport()
    result = asyncio.run(deliver(ledger, command, RENDERED, recipients, transport, MAIL))
    return result, transport


def evidence(url: str, *args: str) -> int:
    return main(["evidence", *args, "--database-url", url])


@pytest.mark.parametrize("written", ["<esc-cmd-1@mail.example.com>", "esc-cmd-1@mail.example.com"])
def test_show_verifies_the_hash_and_writes_the_exact_bytes(
    ledger: Ledger, ledger_url: str, written: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result, transport = send(ledger)
    [(_, _, sent_bytes)] = transport.sent
    capsys.readouterr()
    out = tmp_path / "reminder.eml"

    code = evidence(ledger_url, "show", "--message-id", written, "--tenant", TENANT, "--output", str(out))

    shown = capsys.readouterr().out
    assert code == 0, shown
    digest = hashlib.sha256(sent_bytes).hexdigest()
    assert digest == result.sha256
    fields = dict(_split(line) for line in _rows(shown))
    assert fields["tenant"] == TENANT and fields["customer"] == CUSTOMER and fields["command id"] == "esc-cmd-1"
    assert fields["Message-ID"] == "<esc-cmd-1@mail.example.com>"
    assert fields["recorded SHA-256"] == fields["recomputed SHA-256"] == digest
    assert fields["verdict"] == "hash verified"
    assert fields["recipients"] == "compta@martin.fr" and fields["subject"] == SUBJECT
    assert fields["template"] == "reminder_1, version 3f9a0c1d" and fields["SMTP reply"] == "250 OK queued"
    assert fields["sent at"].endswith("UTC")
    assert out.read_bytes() == sent_bytes


def test_show_without_a_tenant_finds_the_message(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    send(ledger)
    assert evidence(ledger_url, "show", "--message-id", " esc-cmd-1@mail.example.com ") == 0
    assert "hash verified" in capsys.readouterr().out


def test_an_unknown_message_id_exits_2_saying_so(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    send(ledger)
    capsys.readouterr()
    assert evidence(ledger_url, "show", "--message-id", "<nope@mail.example.com>") == 2
    captured = capsys.readouterr()
    assert "no stored message has the Message-ID '<nope@mail.example.com>'" in captured.err and captured.out == ""
    # a known Message-ID asked in another tenant is unknown there
    assert evidence(ledger_url, "show", "--message-id", "esc-cmd-1@mail.example.com", "--tenant", "other") == 2


def test_an_unconfirmed_send_is_shown_with_its_outcome_and_verified(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a connection lost while the message was transmitted: reminder.unconfirmed, never resent
    result, _ = send(ledger, transport=MemoryTransport(script=[UnknownOutcome("connection lost after DATA")]))
    assert result.status == "unconfirmed"
    capsys.readouterr()

    assert evidence(ledger_url, "show", "--message-id", "esc-cmd-1@mail.example.com") == 0

    shown = capsys.readouterr().out
    assert "hash verified" in shown and "reminder.unconfirmed at " in shown and "connection lost after DATA" in shown


def test_list_prints_a_customers_evidence_events_one_per_line(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    send(ledger, 1)
    send(ledger, 2)
    capsys.readouterr()

    assert evidence(ledger_url, "list", "--tenant", TENANT, "--customer", CUSTOMER) == 0

    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines[1:]] == ["reminder.sending", "reminder.sent"] * 2
    assert "<esc-cmd-2@mail.example.com>" in lines[4] and "250 OK queued" in lines[4]
    assert evidence(ledger_url, "list", "--tenant", TENANT, "--customer", "C-none") == 2


def test_tampered_bytes_are_a_hash_mismatch(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(sqlite_url)
    send(Ledger(engine))
    # Given someone who drops the append-only trigger and alters the stored message
    with engine.begin() as conn:
        stored = bytes(conn.execute(text("SELECT mime FROM sent_messages")).scalar_one())
        tampered = stored.replace(b"billing@example.com", b"billing@exampie.com")
        assert tampered != stored
        with pytest.raises(Exception, match="evidence"), conn.begin_nested():  # the trigger refuses it first
            conn.execute(text("UPDATE sent_messages SET mime = :mime"), {"mime": tampered})
        conn.execute(text("DROP TRIGGER sent_messages_append_only_update"))
        conn.execute(text("UPDATE sent_messages SET mime = :mime"), {"mime": tampered})
    engine.dispose()
    capsys.readouterr()

    code = evidence(sqlite_url, "show", "--message-id", "esc-cmd-1@mail.example.com")

    shown = capsys.readouterr().out
    assert code == 1
    fields = dict(_split(line) for line in _rows(shown))
    assert fields["verdict"] == "HASH MISMATCH"
    assert fields["recorded SHA-256"] != fields["recomputed SHA-256"]


def _rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _split(line: str) -> tuple[str, str]:
    return line[:19].strip(), line[20:]


def test_show_names_who_accepted_and_who_refused_a_reminder_sent_to_some_addresses(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a reminder for two addresses, one refused at RCPT TO with a 550
    refusing = MemoryTransport(refuse={"old@martin.fr": (550, "5.1.1 No such user")})
    send(ledger, transport=refusing, recipients=("compta@martin.fr", "old@martin.fr"))
    capsys.readouterr()
    # When its evidence is shown, Then it says who got it and who refused it, with the server's reply
    assert evidence(ledger_url, "show", "--message-id", "esc-cmd-1@mail.example.com") == 0
    fields = dict(_split(line) for line in _rows(capsys.readouterr().out))
    assert fields["recipients"] == "compta@martin.fr, old@martin.fr"
    assert fields["accepted by"] == "compta@martin.fr"
    assert fields["refused by"] == "old@martin.fr (550 5.1.1 No such user, permanent)"
