"""The demo's e-mail: a real SMTP server in-process that files what it receives, and the notifier sending to it.

Each simulated day, after the escalation worker decided, the day's notifier commands (``notifier.send_reminder``, and
``notifier.send_confirmation`` for the payment plans people agreed) are taken
from the outbox (as `relance worker relay` would publish them) and handed to the real
:class:`~services.notifier.service.Notifier` on the simulated clock, so a reminder is checked against the ledger of
that day, rendered, sent over SMTP (aiosmtplib to aiosmtpd on loopback) and recorded as evidence exactly as in
production. The sink writes every message it accepts, byte for byte, to ``<out>/mail/``; the demo then checks that
each file's SHA-256 is the one its ``reminder.sent`` event recorded.
"""

from __future__ import annotations

import asyncio
import email
import hashlib
import shutil
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from email import policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import func, select

from services.notifier.render import RenderSettings
from services.notifier.service import Notifier, Outcome
from services.notifier.smtp import SendError, SmtpConfig, SmtpTransport
from shared.config import Settings
from shared.contracts import events
from shared.ledger.outbox import claim, mark_published
from shared.ledger.schema import letters as letters_table
from shared.ledger.store import Ledger

KINDS = (events.SEND_REMINDER, events.SEND_CONFIRMATION)  # the notifier's commands: reminders, plan confirmations
DEMO_SENDER_FILE = Path(__file__).parent / "sender.yaml"  # a French and a British sender, one per demo tenant


@dataclass
class Received:
    path: Path
    message_id: str
    sha256: str


class MailFolder:
    """aiosmtpd handler: accept every message and write its exact bytes to ``folder/NNNNN.eml``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.received: list[Received] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content
        if not isinstance(data, bytes):
            return "554 5.6.0 no message content"
        path = self.folder / f"{len(self.received) + 1:05d}.eml"
        path.write_bytes(data)
        headers = email.message_from_bytes(data, policy=policy.default)
        self.received.append(Received(path, str(headers.get("Message-ID", "")), hashlib.sha256(data).hexdigest()))
        return "250 2.0.0 Ok: filed"


@dataclass
class Mailed:
    """What the notifier did with the simulated period's reminder commands."""

    folder: Path
    outcomes: Counter[str] = field(default_factory=Counter)  # status -> commands
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)  # (level, language) -> e-mails sent
    letters: Counter[str] = field(default_factory=Counter)  # level -> letters to post (tasks)
    dropped: int = 0  # invoices left out of a reminder because paid or disputed since the decision
    received: list[Received] = field(default_factory=list)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


class DemoMailer:
    """The SMTP sink and the notifier of one demo run; ``deliver()`` after each simulated day."""

    def __init__(self, settings: Settings, ledger: Ledger, folder: Path, clock: Callable[[], datetime]) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.engine = engine = ledger.engine
        self.sink = MailFolder(folder)
        port = _free_port()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=port)
        self.transport = SmtpTransport(SmtpConfig("127.0.0.1", port, "none", timeout=10))
        render_settings = RenderSettings()
        if render_settings.sender_file is None:  # each demo tenant signs with a sender of its own country
            render_settings = RenderSettings(template_dir=render_settings.template_dir, sender_file=DEMO_SENDER_FILE)
        self.notifier = Notifier(settings, engine, self.transport, render_settings, now=clock, shared_ledger=ledger)
        self.loop = asyncio.new_event_loop()
        self.mailed = Mailed(folder)

    def __enter__(self) -> DemoMailer:
        self.notifier.load()
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.loop.run_until_complete(self.transport.close())
        self.loop.close()
        self.controller.stop()
        self.mailed.received = list(self.sink.received)

    def deliver(self) -> int:
        """Send the reminders the outbox holds now; how many commands were handled."""
        handled = 0
        while True:
            with self.engine.begin() as conn:
                commands = claim(conn, 500, KINDS)
                mark_published(conn, [c.id for c in commands])
            if not commands:
                return handled
            for command in commands:
                self._note(self.loop.run_until_complete(self._handle(command.payload)))
                handled += 1

    async def _handle(self, payload: dict[str, Any]) -> Outcome | str:
        try:
            return await self.notifier.handle(payload)
        except SendError as exc:  # the in-process server never defers; say so rather than hide it
            return f"command {payload.get('command_id')}: {exc.reason}"

    def _note(self, outcome: Outcome | str) -> None:
        mailed = self.mailed
        if isinstance(outcome, str):
            mailed.problems.append(outcome)
            return
        mailed.outcomes[outcome.status] += 1
        mailed.dropped += len(outcome.dropped) if outcome.status != "skipped" else 0
        if outcome.status == "sent":
            mailed.sent[(outcome.level, outcome.language)] += 1
        if outcome.letter:
            mailed.letters[outcome.level] += 1


def check_evidence(ledger: Ledger, mailed: Mailed) -> list[str]:
    """Every filed e-mail has a ``reminder.sent`` event with its hash, and every such event has its e-mail."""
    recorded: dict[str, str] = {}
    for tenant, customer_id in ledger.streams():
        for event in ledger.read_stream(tenant, customer_id):
            if event.event_type == events.ReminderSent.TYPE:
                recorded[str(event.data["message_id"])] = str(event.data["sha256"])
    problems = []
    filed = {r.message_id: r for r in mailed.received}
    for message_id, sha256 in recorded.items():
        received = filed.get(message_id)
        if received is None:
            problems.append(f"reminder.sent {message_id} but no such e-mail reached the SMTP server")
        elif received.sha256 != sha256:
            problems.append(f"{received.path.name}: SHA-256 {received.sha256} differs from the ledger's {sha256}")
    if len(filed) != len(mailed.received):
        problems.append(f"{len(mailed.received) - len(filed)} e-mail(s) received twice (same Message-ID)")
    problems += [
        f"{r.path.name}: received but not recorded as sent" for r in mailed.received if r.message_id not in recorded
    ]
    return problems


@dataclass(frozen=True, slots=True)
class Letters:
    """The letters the notifier rendered during the demo: how many, their pages and bytes, per day."""

    rendered: int
    pages: int
    size: int
    days: dict[date, int]  # UTC day rendered -> letters
    tenants: list[str]
    without_address: int  # letters not printed for want of a postal address (an agenda item each)


def letter_figures(ledger: Ledger) -> Letters:
    """What the ``letters`` table holds, and how many letters were left as ``postal_address_missing`` tasks."""
    query = select(
        letters_table.c.tenant, letters_table.c.created_at, letters_table.c.pages, func.length(letters_table.c.pdf)
    )
    with ledger.engine.connect() as conn:
        rows = conn.execute(query).all()
    days: Counter[date] = Counter(row[1].date() for row in rows)
    states = ledger.states(ledger.streams())
    without = sum(
        1 for state in states.values() for task in state.tasks.values() if task["kind"] == "postal_address_missing"
    )
    return Letters(
        rendered=len(rows),
        pages=sum(int(row[2]) for row in rows),
        size=sum(int(row[3] or 0) for row in rows),
        days=dict(sorted(days.items())),
        tenants=sorted({str(row[0]) for row in rows}),
        without_address=without,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
