"""``relance preview`` writes the bytes the notifier sends: the same rendering, the same MIME, the same recipients.

The reminder is decided by the escalation engine, sent by the notifier to a real SMTP server on loopback, and
previewed from the same ledger; the preview's message is compared with what the server received.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import select

from services.cli import main
from services.cli.notifier import preview_ladder
from services.escalation.policy import PolicyLibrary
from services.escalation.service import evaluate
from services.escalation.worker import real_rules
from services.notifier.delivery import MailSettings
from services.notifier.preview import compose, reminder_data
from services.notifier.render import RenderSettings, load_templates
from services.notifier.sender import load_sender
from services.notifier.service import Notifier
from shared.config import load_settings
from shared.ledger.db import make_engine
from shared.ledger.schema import outbox
from shared.ledger.store import Ledger
from tests.factories import CUSTOMER, TENANT, customer, incoming, invoice
from tests.smtp_server import Smtp

pytestmark = pytest.mark.integration

DUE = date(2026, 10, 30)
REMIND = date(2026, 11, 2)  # the first reminder of an invoice due on Friday 30 October
SENT_AT = datetime(2026, 11, 2, 10, 15, tzinfo=UTC)


def test_a_preview_is_byte_for_byte_the_message_the_notifier_sends(
    sqlite_url: str, smtp: Smtp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates = tmp_path / "rates.csv"
    rates.write_text("2026-07-01,2.15\n", encoding="utf-8")
    settings = load_settings(database_url=sqlite_url, mail_from="ar@example.com", rates_file=rates)
    engine = make_engine(sqlite_url)
    ledger = Ledger(engine)
    # Given a customer whose invoice is late, and the engine's decision to remind it
    moment = datetime(2026, 10, 1, 8, tzinfo=UTC)
    late = invoice("INV-1", "1234.56", issue_date="2026-09-30", due_date=DUE.isoformat(), number="F-0001")
    ledger.record([incoming(ev.at(moment)) for ev in (customer("Boulangeries Martin"), late)])
    library = PolicyLibrary.load(None)
    evaluate(ledger, library.for_tenant(TENANT), TENANT, CUSTOMER, datetime(2026, 11, 2, 9, tzinfo=UTC),
             rules=real_rules(settings))  # fmt: skip
    with engine.connect() as conn:
        [command] = conn.execute(select(outbox.c.payload).where(outbox.c.kind == "notifier.send_reminder")).scalars()
    # When the notifier sends it to the SMTP server
    notifier = Notifier(settings, engine, smtp.transport(), now=lambda: SENT_AT)
    assert asyncio.run(notifier.handle(dict(command))).status == "sent"
    [(_, _, sent)] = smtp.sink.received
    # And the same reminder is previewed from the ledger, for that command id and instant
    state = ledger.state(TENANT, CUSTOMER)
    policy = library.for_tenant(TENANT).for_customer(state.profile)
    [data] = reminder_data(state, preview_ladder(policy), command["level"], REMIND)
    assert data["reminder_id"].startswith("preview:")  # the letter's reference: the engine's id once it decides
    data = {**data, "reminder_id": command["reminder_id"]}
    render_settings = RenderSettings()
    templates = load_templates(render_settings.template_dir, TENANT)
    sender = load_sender(render_settings.sender_file, TENANT)
    mail = MailSettings.from_settings(settings)
    preview = compose(data, state.profile, sender, data["language"], templates, mail,
                      command_id=command["command_id"], at=SENT_AT)  # fmt: skip
    # Then, for the command's id, reminder id and instant, its message is exactly the bytes the server received
    assert preview.message is not None and preview.message.data == sent
    # And `relance preview` writes them too, but for the Message-ID, the boundary (both from the command id), Date
    # and the letter's reference (its own preview id)
    out = tmp_path / "out"
    monkeypatch.setenv("RELANCE_MAIL_FROM", settings.mail_from)
    args = ["preview", "--tenant", TENANT, "--customer", CUSTOMER, "--level", command["level"], "--out", str(out)]
    assert main([*args, "--date", REMIND.isoformat(), "--database-url", sqlite_url]) == 0
    [eml] = out.glob("*/message.eml")
    preview_id = f"preview:{CUSTOMER}:{command['level']}:EUR"
    assert normalised(eml.read_bytes(), preview_id) == normalised(sent, command["reminder_id"])
    engine.dispose()


def normalised(message: bytes, reminder_id: str) -> tuple[bytes, list[str]]:
    """The message's headers with what derives from the command id and the clock replaced by placeholders, and its
    text parts (decoded) with the reminder's reference replaced too."""
    head = message.split(b"\r\n\r\n", 1)[0]
    boundary = re.search(rb'boundary="([^"]+)"', head)
    assert boundary is not None
    head = head.replace(boundary.group(1), b"BOUNDARY")
    head = re.sub(rb"\r\nMessage-ID: <[^>]+>(\r\n|$)", b"\r\nMessage-ID: <ID>\\1", head)
    head = re.sub(rb"\r\nDate: [^\r]+(\r\n|$)", b"\r\nDate: DATE\\1", head)
    parsed = message_from_bytes(message, policy=policy.default)
    parts = [str(part.get_content()) for part in parsed.walk() if part.get_content_maintype() == "text"]
    assert len(parts) == 2 and all(reminder_id in part for part in parts)
    return head, [part.replace(reminder_id, "REF") for part in parts]
