"""The notifier worker on real servers: RabbitMQ in, PostgreSQL for the ledger, aiosmtpd (STARTTLS + AUTH) out.

The commands are real: the ERP's events go into the ledger, the escalation engine decides on a chosen day (as
tests/unit/notifier/test_service.py's Desk does) and :class:`services.relay.worker.Relay` publishes the outbox to the
test's commands exchange, where the queue the worker declares is bound. The worker runs on a thread of the test with a
:class:`threading.Event` to stop it, as ``relance worker notifier`` runs it, with an :class:`SmtpTransport` pointed at
the loopback server. What must hold in every case: each reminder reaches the server at most once, and each command
ends in exactly one recorded outcome, or waits in ``<queue>.retry``, or sits in ``<queue>.dead`` with its reason.
"""

from __future__ import annotations

import collections
import email
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email import policy as email_policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pika
import pytest
from babel.numbers import format_currency
from sqlalchemy import Engine, select, update

from services.escalation.agenda import build_agenda
from services.escalation.policy import PolicyLibrary
from services.escalation.service import evaluate
from services.escalation.worker import real_rules
from services.notifier import evidence
from services.notifier import service as notifier_service
from services.notifier.delivery import fact_id
from services.notifier.service import Notifier
from services.notifier.smtp import SmtpConfig, SmtpTransport
from services.notifier.worker import NotifierWorker, dead_queue, declare_notifier_topology, retry_queue
from shared.config import Settings, load_settings
from shared.ledger.db import make_engine
from shared.ledger.schema import outbox
from shared.ledger.store import Ledger
from tests.factories import TENANT, Ev, customer, incoming, invoice, payment
from tests.servers import AmqpNames, publish_outbox
from tests.smtp_server import PASSWORD, USER, Recording, Smtp, bodies, free_port
from tests.unit.notifier.test_letter_pdf import ADDRESS

pytestmark = pytest.mark.integration

DUE = date(2026, 10, 30)  # a Friday: the first reminder goes on Monday 2 November (1 November is a holiday)
REMIND = date(2026, 11, 2)
FINAL = ("reminder.sent", "reminder.failed", "reminder.unconfirmed", "reminder.skipped")
PEOPLE = {  # customer id -> (name, e-mail addresses, language, invoice amount)
    "C-1": ("Boulangeries Martin SAS", ("compta@martin.example",), "fr", "1234.56"),
    "C-2": ("Garage Dupont", ("factures@dupont.example", "gerant@dupont.example"), "fr", "89.90"),
    "C-3": ("Thames Widgets Ltd", ("ap@widgets.example",), "en", "2500.00"),
}


class Rig:
    """One tenant's ledger and decisions, the relay, a notifier worker on a thread, and the broker as seen outside."""

    def __init__(self, pg_url: str, amqp_url: str, names: AmqpNames, server: Smtp, tmp_path: Path, **overrides: Any):
        rates = tmp_path / "rates.csv"
        rates.write_text("2026-07-01,2.15\n", encoding="utf-8")  # the shipped table stops at January 2026
        options: dict[str, Any] = {
            "database_url": pg_url,
            "amqp_url": amqp_url,
            "rates_file": rates,
            "smtp_host": "127.0.0.1",
            "smtp_port": server.port,
            "smtp_tls": "starttls",
            "smtp_username": USER,
            "smtp_password": PASSWORD,
            "smtp_ca_file": server.cert[1],
            "smtp_timeout": 5,
            "smtp_attempts": 2,
            "notifier_retry_seconds": 1,
            "retry_max_seconds": 0.2,
            "mail_from": "ar@acme.example",
            "mail_domain": "mail.acme.example",
            "log_format": "json",
            **names.settings(),
        }
        self.settings: Settings = load_settings(**{**options, **overrides})
        self.server = server
        self.sink: Recording = server.sink  # type: ignore[assignment]
        self.engine: Engine = make_engine(pg_url, pool_size=5)
        self.ledger = Ledger(self.engine)
        self.books = PolicyLibrary.load(None).for_tenant
        self.rules = real_rules(self.settings)
        self.broker = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.broker.channel()
        declare_notifier_topology(self.channel, self.settings)  # as the worker does, before the relay publishes
        self.stopping = threading.Event()  # stops every worker of the rig
        self.workers: list[NotifierWorker] = []
        self._threads: list[threading.Thread] = []
        self._crash: list[BaseException] = []

    # ------------------------------------------------------------------------------------------------ the ERP side
    def erp(self, customer_id: str, *events: Ev, at: datetime | None = None) -> None:
        moment = at or datetime(2026, 10, 1, 8, tzinfo=UTC)
        outcomes = self.ledger.record([incoming(ev.at(moment), customer_id=customer_id) for ev in events])
        assert all(o.status == "applied" for o in outcomes), outcomes

    def customers(self, *ids: str) -> None:
        """The people of :data:`PEOPLE`, each with one invoice due on :data:`DUE`."""
        for customer_id in ids:
            name, emails, language, amount = PEOPLE[customer_id]
            self.erp(
                customer_id,
                customer(name, emails=emails, language=language, postal_address=ADDRESS),
                invoice(f"INV-{customer_id}", amount, due_date=DUE),
            )

    def decide(self, day: date, *customer_ids: str) -> list[dict[str, Any]]:
        """The escalation engine decides on ``day`` at 09:00 UTC; the reminder commands in the outbox afterwards."""
        at = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
        for customer_id in customer_ids:
            evaluate(self.ledger, self.books(TENANT), TENANT, customer_id, at, rules=self.rules)
        with self.engine.connect() as conn:
            query = select(outbox.c.payload).where(outbox.c.kind == "notifier.send_reminder").order_by(outbox.c.id)
            return [dict(payload) for payload in conn.execute(query).scalars()]

    def relay(self) -> int:
        """Publish every pending command to the test's commands exchange, as `relance worker relay` does."""
        return publish_outbox(self.settings, self.engine)

    def republish_outbox(self) -> int:
        """The relay died between RabbitMQ's confirms and its commit: every command goes out again."""
        with self.engine.begin() as conn:
            conn.execute(update(outbox).values(published_at=None))
        return self.relay()

    def publish_raw(self, body: bytes, message_id: str) -> None:
        """A message put straight into the notifier's queue, as a misbehaving producer would."""
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id=message_id)
        self.channel.basic_publish("", self.settings.notifier_queue, body, properties)

    # ------------------------------------------------------------------------------------------------ the worker
    def start(self, workers: int = 1) -> None:
        """Start notifier workers, each with its notifier and SMTP connection, as separate processes would."""
        for _ in range(workers):
            notifier = Notifier(self.settings, self.engine, SmtpTransport(SmtpConfig.from_settings(self.settings)))
            notifier.load()
            worker = NotifierWorker(self.settings, notifier, self.stopping)
            thread = threading.Thread(target=self._run, args=(worker,), name="notifier-worker", daemon=True)
            self.workers.append(worker)
            self._threads.append(thread)
            thread.start()

    def _run(self, worker: NotifierWorker) -> None:
        try:
            assert worker.run() == 0
        except BaseException as exc:
            self._crash.append(exc)
            raise

    @property
    def worker(self) -> NotifierWorker:
        return self.workers[0]

    def handled(self) -> int:
        return sum(worker.totals.handled for worker in self.workers)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=15)
            assert not thread.is_alive(), "a notifier worker did not stop"
        self.check_alive()

    def check_alive(self) -> None:
        if self._crash:
            raise AssertionError(f"a notifier worker died: {self._crash[0]!r}") from self._crash[0]
        if not self.stopping.is_set() and not all(thread.is_alive() for thread in self._threads):
            raise AssertionError("a notifier worker thread ended on its own")

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            self.check_alive()
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")

    def close(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=15)
        if self.broker.is_open:
            self.broker.close()
        self.engine.dispose()

    # ------------------------------------------------------------------------------------------------ looking
    def depth(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def drain(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        got: list[tuple[pika.BasicProperties, bytes]] = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((properties, body))

    def types(self, customer_id: str) -> list[str]:
        return [e.event_type for e in self.ledger.read_stream(TENANT, customer_id)]

    def data(self, customer_id: str, event_type: str) -> list[dict[str, Any]]:
        return [e.data for e in self.ledger.read_stream(TENANT, customer_id) if e.event_type == event_type]

    def outcome(self, command: dict[str, Any]) -> list[str]:
        """The final facts recorded for a command (exactly one, once it is done)."""
        wanted = {fact_id(command["command_id"], fact.split(".")[1]): fact for fact in FINAL}
        known = evidence.facts(self.engine, TENANT, wanted)
        return sorted(wanted[event_id] for event_id in known)

    def done(self, commands: list[dict[str, Any]]) -> bool:
        return all(self.outcome(c) for c in commands)


@pytest.fixture
def make_rig(
    pg_url: str, amqp_url: str, amqp_names: AmqpNames, tmp_path: Path, cert: tuple[Path, Path]
) -> Iterator[Callable[..., Rig]]:
    """A rig per test; ``started=False`` leaves the SMTP server down."""
    made: list[Rig] = []

    def make(*, started: bool = True, **overrides: Any) -> Rig:
        server = Smtp(Recording(), free_port(), cert)
        if started:
            server.start()
        rig = Rig(pg_url, amqp_url, amqp_names, server, tmp_path, **overrides)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()
        rig.server.stop()


def money(amount: Any, language: str) -> str:
    return str(format_currency(amount, "EUR", locale={"fr": "fr_FR", "en": "en_GB"}[language]))


# ---------------------------------------------------------------------------------------------------- cases
def test_reminders_of_several_customers_arrive_once_each_over_starttls_with_auth_and_match_the_evidence(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.customers("C-1", "C-2", "C-3")
    commands = rig.decide(REMIND, "C-1", "C-2", "C-3")
    assert [c["customer_id"] for c in commands] == ["C-1", "C-2", "C-3"]
    rig.start()
    # When the relay publishes the outbox to the commands exchange
    assert rig.relay() == 3
    rig.wait(lambda: rig.done(commands), "an outcome for each reminder")
    rig.stop()
    # Then one message per customer reached the server, over TLS after AUTH, to the customer's own addresses
    assert [rig.outcome(c) for c in commands] == [["reminder.sent"]] * 3
    assert len(rig.sink.received) == 3 and rig.sink.sessions == [(True, True)] * 3
    received = zip(rig.sink.messages(), rig.sink.received, strict=True)
    by_id = {message["Message-ID"]: (message, rcpts, raw) for message, (_, rcpts, raw) in received}
    assert len(by_id) == 3
    for command in commands:
        customer_id = command["customer_id"]
        name, emails, language, _ = PEOPLE[customer_id]
        [sent] = rig.data(customer_id, "reminder.sent")
        message, rcpts, raw = by_id[sent["message_id"]]
        assert sent["message_id"] == f"<{command['command_id']}@mail.acme.example>"
        assert rcpts == list(emails) == sent["recipients"]
        assert message["From"] == "ar@acme.example" and message["To"] == ", ".join(emails)
        # a multipart/alternative with a text and an HTML part, in the customer's language
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        text, html = bodies(message)
        assert name in text and sent["subject"] == message["Subject"]
        # the amounts are the ledger's
        invoice_state = rig.ledger.state(TENANT, customer_id).invoices[f"INV-{customer_id}"]
        outstanding = money(invoice_state.outstanding, language)
        assert outstanding in text and outstanding in html, (outstanding, text)
        assert f"F-INV-{customer_id}" in text and f"F-INV-{customer_id}" in html
        # and the stored MIME is the bytes the server got, hashing to the reminder.sent evidence
        stored = evidence.by_message_id(rig.engine, sent["message_id"], TENANT)
        assert stored is not None and stored.mime == raw and stored.command_id == command["command_id"]
        assert sent["sha256"] == hashlib.sha256(raw).hexdigest() and evidence.verify(stored, sent["sha256"])
        assert rig.types(customer_id)[-2:] == ["reminder.sending", "reminder.sent"]
    assert rig.depth(rig.settings.notifier_queue) == rig.depth(retry_queue(rig.settings)) == 0
    assert rig.depth(dead_queue(rig.settings)) == 0


def test_a_command_costs_its_own_send_not_a_tick_of_the_broker_connection(
    make_rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker whose broker connection is serviced in ticks of 5 s, far longer than a send on loopback
    from services.notifier import worker as notifier_worker

    monkeypatch.setattr(notifier_worker, "_TICK", 5.0)
    rig = make_rig()
    rig.customers("C-1", "C-2", "C-3")
    commands = rig.decide(REMIND, "C-1", "C-2", "C-3")
    rig.start()
    # When the three reminders are published
    assert rig.relay() == 3
    # Then all three are sent well within one tick: the end of each send wakes the connection's wait, where it used
    # to sit out the rest of the tick (200 ms a command with the shipped tick, whatever the send took)
    rig.wait(lambda: rig.done(commands), "an outcome for each reminder, before a single tick is over", timeout=3)
    assert [rig.outcome(c) for c in commands] == [["reminder.sent"]] * 3
    rig.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_every_command_published_twice_sends_one_message_each(make_rig: Callable[..., Rig], workers: int) -> None:
    rig = make_rig()
    rig.customers("C-1", "C-2", "C-3")
    commands = rig.decide(REMIND, "C-1", "C-2", "C-3")
    rig.start(workers)
    # When every command reaches the queue twice (the relay lost its commit after RabbitMQ's confirms), and with
    # two workers the copies of one command can be in both hands at once
    assert rig.relay() == 3
    assert rig.republish_outbox() == 3
    rig.wait(lambda: rig.handled() == 6, "both copies of each command")
    rig.stop()
    # Then each reminder went out once, and the copies ended as already sent
    statuses: collections.Counter[str] = collections.Counter()
    for worker in rig.workers:
        statuses.update(worker.totals.by_status)
    assert statuses == {"sent": 3, "already_sent": 3}
    ids = sorted(m["Message-ID"] for m in rig.sink.messages())
    assert ids == sorted(f"<{c['command_id']}@mail.acme.example>" for c in commands)
    for command in commands:
        assert rig.types(command["customer_id"]).count("reminder.sent") == 1
    assert rig.depth(rig.settings.notifier_queue) == rig.depth(retry_queue(rig.settings)) == 0


def test_an_smtp_server_down_at_first_defers_to_the_retry_queue_then_sends_once(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(started=False)
    rig.customers("C-1")
    [command] = rig.decide(REMIND, "C-1")
    rig.start()
    assert rig.relay() == 1
    # Given connections refused: the round's attempts run out and the command waits in <queue>.retry
    rig.wait(lambda: rig.depth(retry_queue(rig.settings)) == 1, "the command in the retry queue")
    assert "reminder.deferred" in rig.types("C-1") and rig.sink.received == []
    # When the server comes up
    rig.server.start()
    rig.wait(lambda: rig.done([command]), "the reminder to be sent", timeout=12)
    time.sleep(1.5)  # a redelivery, had there been one, would be back by now
    rig.stop()
    # Then it went out once, after the deferral, the same bytes as stored before the first attempt
    assert rig.outcome(command) == ["reminder.sent"] and len(rig.sink.received) == 1
    types = rig.types("C-1")
    assert types.index("reminder.deferred") < types.index("reminder.sent") and types.count("reminder.sent") == 1
    assert rig.sink.sessions == [(True, True)]
    [sent] = rig.data("C-1", "reminder.sent")
    stored = evidence.by_command(rig.engine, TENANT, command["command_id"])
    assert stored is not None and stored.mime == rig.sink.received[0][2] and evidence.verify(stored, sent["sha256"])
    assert rig.worker.totals.retried >= 1
    assert rig.depth(rig.settings.notifier_queue) == rig.depth(retry_queue(rig.settings)) == 0


def test_a_recipient_refused_for_a_while_then_for_good_fails_with_a_letter_task_and_the_others_go_out(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.customers("C-1", "C-2", "C-3")
    rig.sink.at_rcpt["ap@widgets.example"] = ["450 4.2.1 Mailbox busy, try later", "550 5.1.1 No such user"]
    commands = rig.decide(REMIND, "C-1", "C-2", "C-3")
    rig.start()
    assert rig.relay() == 3
    rig.wait(lambda: rig.done(commands), "an outcome for each reminder")
    time.sleep(0.5)
    rig.stop()
    # Then C-3's reminder failed on the 550 after the 450, with a send_letter task naming what is at risk
    outcomes = {c["customer_id"]: rig.outcome(c) for c in commands}
    assert outcomes == {"C-1": ["reminder.sent"], "C-2": ["reminder.sent"], "C-3": ["reminder.failed"]}
    [failed] = rig.data("C-3", "reminder.failed")
    assert failed["smtp_reply"].startswith("550") and "refused" in failed["reason"]
    [task] = rig.data("C-3", "task.created")
    assert task["kind"] == "send_letter" and task["amount_at_risk"] == "2500.00"
    assert task["invoice_ids"] == ["INV-C-3"] and task["command_id"] == commands[2]["command_id"]
    # And nothing duplicated: one message each to the others, none to C-3, every queue empty
    assert sorted(r for _, rcpts, _ in rig.sink.received for r in rcpts) == sorted(PEOPLE["C-1"][1] + PEOPLE["C-2"][1])
    assert len(rig.sink.received) == 2 and rig.sink.at_rcpt["ap@widgets.example"] == []
    for queue in (rig.settings.notifier_queue, retry_queue(rig.settings), dead_queue(rig.settings)):
        assert rig.depth(queue) == 0, queue


def test_malformed_messages_are_dead_lettered_with_the_reason_and_the_worker_goes_on(
    make_rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig()
    rig.customers("C-1")
    [command] = rig.decide(REMIND, "C-1")
    bad_amount = {**command, "command_id": "bad-amount", "lines": [{**command["lines"][0], "interest": "lots"}]}
    bad_copies = {**command, "command_id": "bad-copies", "channel": "letter", "copy_channels": 5}
    trips = {**command, "command_id": "trips-relance"}  # a valid command that relance itself fails on
    still_due = notifier_service.still_due

    def failing_on_it(command: Any, state: Any) -> Any:
        if command["command_id"] == "trips-relance":
            raise TypeError("unsupported operand type(s)")
        return still_due(command, state)

    monkeypatch.setattr(notifier_service, "still_due", failing_on_it)
    malformed = {
        "not-json": b"\xff{not json",
        "not-an-object": b'["notifier.send_reminder"]',
        "missing-fields": orjson.dumps({"command": "notifier.send_reminder", "tenant": TENANT, "customer_id": "C-1"}),
        "bad-amount": orjson.dumps(bad_amount),
        "bad-copies": orjson.dumps(bad_copies),
        "trips-relance": orjson.dumps(trips),  # passes the checks, then fails inside relance
        # two readers could see two commands: one keeping the first tenant, one the last
        "duplicate-key": orjson.dumps({**command, "command_id": "dup"})[:-1] + b',"tenant":"other"}',
    }
    rig.start()
    # When a producer puts unusable messages in the queue, ahead of a real command
    for message_id, body in malformed.items():
        rig.publish_raw(body, message_id)
    assert rig.relay() == 1
    rig.wait(lambda: rig.done([command]), "the real reminder to go out after them")
    rig.wait(lambda: rig.depth(dead_queue(rig.settings)) == len(malformed), "the dead letters")
    rig.stop()
    # Then each sits in <queue>.dead, body unchanged, saying why; the real one was sent
    dead = {p.message_id: (p.headers or {}, body) for p, body in rig.drain(dead_queue(rig.settings))}
    assert sorted(dead) == sorted(malformed)
    reasons = {}
    for message_id, (headers, body) in dead.items():
        assert body == malformed[message_id]
        reasons[message_id] = (headers["x-relance-kind"], headers["x-relance-reason"])
    assert reasons["not-json"][0] == "invalid_command" and reasons["not-json"][1].startswith("not JSON")
    assert reasons["not-an-object"] == ("invalid_command", "the message body is not a JSON object")
    assert reasons["duplicate-key"][0] == "invalid_command"
    assert reasons["duplicate-key"][1].startswith('tenant: duplicate key "tenant"')
    assert reasons["missing-fields"] == (
        "invalid_command",
        "missing field(s): command_id, reminder_id, level, template, currency, lines, totals",
    )
    assert reasons["bad-amount"] == (
        "invalid_command",
        "lines[0].interest must be a decimal string such as \"1234.56\", got 'lots'",
    )
    assert reasons["bad-copies"] == ("invalid_command", "copy_channels: Input should be a valid list")
    assert reasons["trips-relance"][0] == "internal_error" and reasons["trips-relance"][1].startswith("TypeError")
    assert rig.outcome(command) == ["reminder.sent"] and len(rig.sink.received) == 1
    assert "reminder.failed" not in rig.types("C-1")
    assert rig.depth(rig.settings.notifier_queue) == rig.depth(retry_queue(rig.settings)) == 0


def test_an_invoice_paid_between_the_decision_and_the_send_is_not_reminded(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.customers("C-1", "C-2")
    commands = rig.decide(REMIND, "C-1", "C-2")
    # When C-1 pays after the engine decided, before the notifier got the command
    rig.erp("C-1", payment("PAY-1", "1234.56", received_on=REMIND), at=datetime(2026, 11, 2, 9, 30, tzinfo=UTC))
    rig.start()
    assert rig.relay() == 2
    rig.wait(lambda: rig.done(commands), "an outcome for each reminder")
    rig.stop()
    # Then C-1 gets nothing and the log says why; C-2 is reminded as decided
    assert [rig.outcome(c) for c in commands] == [["reminder.skipped"], ["reminder.sent"]]
    [skipped] = rig.data("C-1", "reminder.skipped")
    assert skipped["dropped"] == [{"invoice_id": "INV-C-1", "reason": "paid"}]
    assert "reminder.sending" not in rig.types("C-1")
    assert [rcpts for _, rcpts, _ in rig.sink.received] == [list(PEOPLE["C-2"][1])]


def test_quiet_hours_covering_now_keep_the_command_in_the_retry_queue_unsent(make_rig: Callable[..., Rig]) -> None:
    zone = "Europe/Paris"
    today = datetime.now(ZoneInfo(zone))
    days = ",".join(d.strftime("%a").lower() for d in (today, today + timedelta(days=1)))  # now, whatever the hour
    rig = make_rig(quiet_days=days, timezone=zone, notifier_retry_seconds=60)
    rig.customers("C-1")
    [command] = rig.decide(REMIND, "C-1")
    rig.start()
    assert rig.relay() == 1
    rig.wait(lambda: rig.depth(retry_queue(rig.settings)) == 1, "the command in the retry queue")
    time.sleep(0.5)
    rig.stop()
    # Then nothing was sent or even attempted, and the command waits, saying why
    assert rig.sink.received == [] and rig.outcome(command) == []
    assert not {"reminder.sending", "reminder.deferred"} & set(rig.types("C-1"))
    assert rig.depth(rig.settings.notifier_queue) == 0
    [(properties, body)] = rig.drain(retry_queue(rig.settings))
    assert orjson.loads(body)["command_id"] == command["command_id"] == properties.message_id
    headers = properties.headers or {}
    assert "quiet hours" in headers["x-relance-retry-reason"] and headers["x-relance-retries"] == 1
    assert properties.expiration == "60000"


def test_a_formal_notice_states_the_interest_and_fee_the_ledger_charged(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.customers("C-1")
    # Given the engine reached the formal notice 30 days after the due date, charging interest and the fixed fee
    [notice] = [c for c in rig.decide(date(2026, 11, 30), "C-1") if c["level"] == "formal_notice"]
    [interest] = rig.data("C-1", "interest.computed")
    [fee] = rig.data("C-1", "fee.charged")
    assert Decimal(interest["amount"]) > 0 and fee["amount"] == "40.00"
    rig.start()
    assert rig.relay() >= 1
    rig.wait(lambda: rig.done([notice]), "an outcome for the formal notice")
    rig.stop()
    [sent] = rig.data("C-1", "reminder.sent")
    [message] = [m for m in rig.sink.messages() if m["Message-ID"] == sent["message_id"]]
    text, html = bodies(message)
    # Then the e-mail copy states the ledger's interest, fee and the total due, in French formatting
    for amount in (interest["amount"], fee["amount"], Decimal("1234.56") + Decimal(interest["amount"]) + 40):
        assert money(Decimal(amount), "fr") in text and money(Decimal(amount), "fr") in html, (amount, text)
    assert "D441-5" in text and "1344" in text  # the fixed-fee article and the formal notice's Civil Code article
    assert [t["kind"] for t in rig.data("C-1", "task.created")].count("send_letter") == 1
    # And the letter itself was rendered once, its PDF kept with the SHA-256 its letter.rendered recorded
    [rendered] = rig.data("C-1", "letter.rendered")
    assert rendered["level"] == "formal_notice" and rendered["pages"] >= 1


# --------------------------------------------------------------------------- header injection (issue 8.1)
HOSTILE_NAMES = {  # customer id -> a name written straight into the ledger, past the ERP contract
    "H-1": "Acme =?utf-8?q?=0D=0ABcc:_spy@attacker.example?=",
    "H-2": "Acme =?utf-8?q?=0D=0AReply-To:_spy@attacker.example?=",
    "H-3": "Acme =?utf-8?q?=0D=0A=0D=0APAY_TO_IBAN_FR76_6666_6666_6666?=",
    "H-4": "Acme =?utf-8?b?DQpCY2M6IHNweUBhdHRhY2tlci5leGFtcGxl?=",
    "H-5": "Acme =?UTF-8?Q?=0D=0ABcc:_spy@attacker.example?=",
    "H-6": "Acme =?utf-8?Q?=0d=0aBcc:_spy@attacker.example?=",
    "H-7": "Acme\u2028Bcc: spy@attacker.example",
    "H-8": "Acme\x85Bcc: spy@attacker.example",
    "H-9": "Acme\x9bBcc: spy@attacker.example",
    "H-10": "Acme\r\nBcc: spy@attacker.example",
}
GENUINE_NAME = "Société Générale — Ça va"


def test_names_that_could_forge_headers_send_nothing_and_a_genuine_accented_name_still_goes_out(
    make_rig: Callable[..., Rig],
) -> None:
    # Given customers whose names, put in the ledger by an attacker with database access or by an older ERP,
    # carry encoded words, Unicode line breaks and C1 controls, and one customer with an accented name
    rig = make_rig()
    for customer_id, name in {**HOSTILE_NAMES, "G-1": GENUINE_NAME}.items():
        address = f"ap@{customer_id.lower()}.example"
        rig.erp(customer_id, customer(name, emails=[address]), invoice(f"INV-{customer_id}", "100.00", due_date=DUE))
    ids = [*HOSTILE_NAMES, "G-1"]
    commands = rig.decide(REMIND, *ids)
    assert len(commands) == len(ids)
    rig.start()
    # When their reminders are published and handled
    assert rig.relay() == len(ids)
    rig.wait(lambda: rig.done(commands), "an outcome for each reminder")
    rig.stop()
    # Then the server received one message only, the genuine one, with exactly the intended headers and recipient
    [(_, rcpts, raw)] = rig.sink.received
    assert rcpts == ["ap@g-1.example"]
    for policy in (email_policy.compat32, email_policy.default):
        parsed = email.message_from_bytes(raw, policy=policy)
        assert parsed.keys() == ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]
        assert parsed.get_all("To") == ["ap@g-1.example"]
    subject = "Rappel : factures échues — Société Générale — Ça va"
    assert b"Subject: =?utf-8?q?Rappel_=3A_factures_=C3=A9chues_=E2=80=94_Soci=C3=A9t" in raw
    assert str(email.message_from_bytes(raw, policy=email_policy.default)["Subject"]) == subject
    [sent] = rig.data("G-1", "reminder.sent")
    assert sent["subject"] == subject and sent["accepted"] == ["ap@g-1.example"] and sent["refused"] == []
    # And every hostile reminder ended refused, never sent, with the reason and a task for a collector
    for command in commands[:-1]:
        customer_id = command["customer_id"]
        assert rig.outcome(command) == ["reminder.failed"], customer_id
        [failed] = rig.data(customer_id, "reminder.failed")
        assert failed["refusal"] == "unsafe_header_text" and "the customer's name" in failed["reason"]
        [task] = rig.data(customer_id, "task.created")
        assert task["kind"] == "send_letter" and "correct the customer's details in the ERP" in task["note"]
        assert "reminder.sent" not in rig.types(customer_id) and "reminder.sending" not in rig.types(customer_id)
    assert rig.depth(dead_queue(rig.settings)) == rig.depth(retry_queue(rig.settings)) == 0


# ------------------------------------------------------------------- several addresses, some refused (8.11)
def test_an_address_refused_for_good_gets_nothing_the_others_get_the_reminder_and_the_agenda_says_fix_it(
    make_rig: Callable[..., Rig],
) -> None:
    # Given C-2 with two addresses, the server refusing one of them for good, and C-1 with one address
    rig = make_rig()
    rig.customers("C-1", "C-2")
    rig.sink.refuse["gerant@dupont.example"] = "550 5.1.1 <gerant@dupont.example>: Recipient address rejected"
    commands = rig.decide(REMIND, "C-1", "C-2")
    rig.start()
    assert rig.relay() == 2
    rig.wait(lambda: rig.done(commands), "an outcome for each reminder")
    rig.stop()
    # Then both reminders are sent, C-2's to its accepted address only, once
    assert [rig.outcome(c) for c in commands] == [["reminder.sent"], ["reminder.sent"]]
    envelopes = sorted(rcpts for _, rcpts, _ in rig.sink.received)
    assert envelopes == [["compta@martin.example"], ["factures@dupont.example"]]
    # And the evidence names who accepted it and who refused it, with the server's code and text
    [sent] = rig.data("C-2", "reminder.sent")
    assert sent["accepted"] == ["factures@dupont.example"]
    assert sent["refused"] == [
        {"address": "gerant@dupont.example", "code": 550, "kind": "permanent",
         "reply": "5.1.1 <gerant@dupont.example>: Recipient address rejected"}
    ]  # fmt: skip
    # And the collector's agenda asks to fix the contact, naming the address and the server's reply
    [task] = rig.data("C-2", "task.created")
    agenda = build_agenda([rig.ledger.state(TENANT, "C-2")], date.fromisoformat(task["due_on"]))
    [item] = [i for i in agenda if i.kind == "fix_contact"]
    assert item.title == "address refused by the mail server: fix the contact"
    assert "gerant@dupont.example refused (550 5.1.1" in item.note and item.invoices == ("INV-C-2",)
    assert rig.data("C-1", "task.created") == []
