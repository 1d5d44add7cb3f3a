"""The whole collections chain as separate processes, as in production, with the days passing at the test's pace.

An ERP simulator (plain pika and JSON, nothing of relance) publishes what happens to a handful of customers over
three months to the events exchange: customers with their e-mail addresses, invoices, payments, a dispute, and a
customer named ``{{ 7*7 }} <script>`` whose address carries ``\\r\\nBcc: x@example.com``. ``relance worker ingest``,
``relance worker relay`` and ``relance worker notifier`` run as subprocesses on real PostgreSQL and RabbitMQ; the
notifier sends through a real SMTP server on loopback (aiosmtpd, STARTTLS required, AUTH, a CA file of the test).
Time moves with ``relance clock tick --at`` on the days the shipped ladder has a step (the escalation worker reads
the wall clock; the clock command is how a controlled clock drives the same evaluation).

Midway, the notifier is killed with ``kill -9`` while the SMTP server holds a message it has received but not yet
answered, and a new notifier is started: the message is never sent twice; it ends as ``reminder.unconfirmed`` with a
``check_delivery`` task, as it must when a worker dies between sending and recording.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest
from sqlalchemy import Engine, create_engine, select

from services.notifier import evidence
from services.notifier.delivery import fact_id
from shared.ledger import letters
from shared.ledger.schema import outbox
from shared.ledger.store import Ledger
from tests.servers import AmqpNames
from tests.smtp_server import PASSWORD, USER, Recording, Smtp, bodies, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme-fr"
DOMAIN = "mail.acme.example"
DUE = "2026-10-01"  # a Thursday; the shipped ladder then steps on 28 Sept, 2, 16 and 21 Oct, 2 and 16 Nov
# The ladder's days, and 5 October: the reminder_1 due on the 2nd waits for the shipped cadence (a week after the
# courtesy notice of 28 September)
TICKS = ("2026-09-28", "2026-10-02", "2026-10-05", "2026-10-16", "2026-11-02", "2026-11-16", "2026-11-18")
KILL_ON = "2026-10-16"  # the notifier is killed mid-send on this day's reminders
HOSTILE_NAME = "{{ 7*7 }} <script>"
HOSTILE_EMAIL = "ops@inj.example\r\nBcc: x@example.com"

EMAILS = {
    "C-LATE": ["compta@martin.example", "direction@martin.example"],
    "C-PAID": ["ap@paid.example"],
    "C-DISP": ["compta@litiges.example"],
    "C-INJ": ["ops@inj.example"],  # once the ERP has corrected the address
}
# What each customer must receive, level by level (C-INJ2's address is never valid: its reminders fail).
EXPECTED = {
    "C-LATE": ["courtesy", "reminder_1", "reminder_2", "formal_notice", "credit_block"],
    "C-DISP": ["courtesy", "reminder_1"],
    "C-INJ": ["courtesy", "reminder_1", "reminder_2"],
}
NEVER_REMINDED = ("F-INV-L2", "F-INV-P1", "F-INV-D1")  # paid before its first step, paid, disputed
OUTCOMES = ("sent", "failed", "unconfirmed", "skipped")


# ---------------------------------------------------------------------------------------------------- the ERP
def _envelope(event_id: str, event_type: str, customer_id: str, day: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "tenant": TENANT,
        "customer_id": customer_id,
        "occurred_at": f"{day}T08:00:00Z",
        "data": data,
    }


LATE_ADDRESS = {
    "lines": ["Boulangeries Martin SAS", "12 rue de la Gare"],
    "postal_code": "69002",
    "city": "Lyon",
    "country": "FR",
}


def _customer(
    customer_id: str, day: str, name: str, emails: list[str], version: int = 1, address: dict[str, Any] | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "emails": emails, "language": "fr", "contact_name": "Service comptable"}
    if address is not None:
        data["postal_address"] = address
    return _envelope(f"erp-cust-{customer_id}-v{version}", "customer.upserted", customer_id, day, data)


def _invoice(customer_id: str, invoice_id: str, amount: str) -> dict[str, Any]:
    data = {"invoice_id": invoice_id, "number": f"F-{invoice_id}", "issue_date": "2026-09-01", "due_date": DUE}
    data |= {"currency": "EUR", "amount": amount}
    return _envelope(f"erp-{invoice_id}", "invoice.issued", customer_id, "2026-09-01", data)


def _payment(customer_id: str, invoice_id: str, amount: str, day: str) -> dict[str, Any]:
    data: dict[str, Any] = {"payment_id": f"PAY-{invoice_id}", "amount": amount, "currency": "EUR", "received_on": day}
    data["allocations"] = [{"invoice_id": invoice_id, "amount": amount}]
    return _envelope(f"erp-pay-{invoice_id}", "payment.received", customer_id, day, data)


def _dispute(customer_id: str, invoice_id: str, day: str) -> dict[str, Any]:
    data = {"invoice_id": invoice_id, "reason": "goods returned", "opened_on": day}
    return _envelope(f"erp-disp-{invoice_id}", "invoice.disputed", customer_id, day, data)


def erp_days() -> dict[str, list[dict[str, Any]]]:
    """What the ERP reports, day by day, at 08:00."""
    return {
        "2026-09-01": [
            _customer("C-LATE", "2026-09-01", "Boulangeries Martin SAS", EMAILS["C-LATE"], address=LATE_ADDRESS),
            _invoice("C-LATE", "INV-L1", "1234.56"),
            _invoice("C-LATE", "INV-L2", "300.00"),
            _customer("C-PAID", "2026-09-01", "Paid Promptly Ltd", EMAILS["C-PAID"]),
            _invoice("C-PAID", "INV-P1", "800.00"),
            _customer("C-DISP", "2026-09-01", "Litiges SARL", EMAILS["C-DISP"]),
            _invoice("C-DISP", "INV-D1", "450.00"),
            _invoice("C-DISP", "INV-D2", "100.00"),
            _customer("C-INJ", "2026-09-01", HOSTILE_NAME, [HOSTILE_EMAIL]),
            _invoice("C-INJ", "INV-I1", "600.00"),
            _customer("C-INJ2", "2026-09-01", HOSTILE_NAME, [HOSTILE_EMAIL]),
            _invoice("C-INJ2", "INV-J1", "250.00"),
        ],
        # the ERP corrects one hostile customer's address (the name stays); the other one it never does
        "2026-09-02": [_customer("C-INJ", "2026-09-02", HOSTILE_NAME, EMAILS["C-INJ"], version=2)],
        "2026-09-20": [
            _payment("C-LATE", "INV-L2", "300.00", "2026-09-20"),
            _dispute("C-DISP", "INV-D1", "2026-09-20"),
        ],
        "2026-09-22": [_payment("C-PAID", "INV-P1", "800.00", "2026-09-22")],
        "2026-10-10": [
            _payment("C-DISP", "INV-D2", "100.00", "2026-10-10"),
            _payment("C-INJ2", "INV-J1", "250.00", "2026-10-10"),
        ],
        "2026-10-20": [_payment("C-INJ", "INV-I1", "600.00", "2026-10-20")],
        "2026-11-18": [_payment("C-LATE", "INV-L1", "1234.56", "2026-11-18")],
    }


class ErpSimulator:
    """The ERP's side of RabbitMQ: plain JSON, persistent, publisher confirms, ``mandatory`` (nothing dropped)."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self.exchange = exchange
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def publish(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            properties = pika.BasicProperties(
                content_type="application/json", delivery_mode=2, message_id=message["event_id"]
            )
            body = json.dumps(message).encode("utf-8")
            self.channel.basic_publish(self.exchange, message["event_type"], body, properties, mandatory=True)

    def close(self) -> None:
        self.connection.close()


# ---------------------------------------------------------------------------------------------------- relance
@dataclass
class Deployment:
    """The relance processes of the test, each logging (JSON) to a file of its own."""

    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: int = 0

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        self.started += 1
        log = self.logs / f"{self.started:02d}-{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *argv], env=self.env, cwd=ROOT, stdout=out, stderr=out
            )
        self.processes[name] = process
        return process

    def run(self, *argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", *argv], env=self.env, cwd=ROOT, capture_output=True, timeout=60
        )
        output = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode == 0, f"relance {' '.join(argv)} exited {done.returncode}:\n{output[-3000:]}"
        return done.stdout.decode()

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}{self.tails()}")

    def stop(self, name: str) -> int:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        return process.wait(30)

    def tails(self) -> str:
        return "".join(f"\n--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(self.logs.glob("*.log")))

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture
def server(cert: tuple[Path, Path]) -> Iterator[Smtp]:
    smtp = Smtp(Recording(), free_port(), cert)
    smtp.start()
    yield smtp
    smtp.sink.release.set()  # type: ignore[attr-defined]
    smtp.stop()


@pytest.fixture
def deployment(pg_url: str, amqp_url: str, amqp_names: AmqpNames, server: Smtp, tmp_path: Path) -> Iterator[Deployment]:
    rates = tmp_path / "rates.csv"
    rates.write_text("semester_start,rate\n2026-07-01,2.15\n", encoding="utf-8")
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("RELANCE_")},
        **amqp_names.env(),
        "RELANCE_DATABASE_URL": pg_url,
        "RELANCE_AMQP_URL": amqp_url,
        "RELANCE_RATES_FILE": str(rates),
        "RELANCE_SMTP_HOST": "127.0.0.1",
        "RELANCE_SMTP_PORT": str(server.port),
        "RELANCE_SMTP_TLS": "starttls",
        "RELANCE_SMTP_USERNAME": USER,
        "RELANCE_SMTP_PASSWORD": PASSWORD,
        "RELANCE_SMTP_CA_FILE": str(server.cert[1]),
        "RELANCE_SMTP_TIMEOUT": "5",
        "RELANCE_SMTP_ATTEMPTS": "2",
        "RELANCE_SMTP_LEASE_SECONDS": "10",  # the shortest allowed: a send cut short is settled quickly
        "RELANCE_NOTIFIER_RETRY_SECONDS": "1",
        "RELANCE_ALLOW_PLACEHOLDER_SENDER": "true",  # the shipped sender signs, to an SMTP server of the test's own
        "RELANCE_MAIL_FROM": "ar@acme.example",
        "RELANCE_MAIL_DOMAIN": DOMAIN,
        "RELANCE_RELAY_POLL_MS": "50",
        "RELANCE_INGEST_BATCH_MS": "20",
        "RELANCE_RETRY_MAX_SECONDS": "0.5",
        "RELANCE_LOG_FORMAT": "json",
    }
    started = Deployment(env, logs)
    try:
        yield started
    finally:
        started.kill_all()


class Broker:
    """The test's own look at RabbitMQ: an ERP queue bound to the commands exchange, and queue depths."""

    def __init__(self, amqp_url: str, names: AmqpNames) -> None:
        self.names = names
        self.erp_queue = f"{names.commands_exchange}.erp"
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(names.commands_exchange, exchange_type="topic", durable=True)
        self.channel.queue_declare(self.erp_queue, durable=True)
        self.channel.queue_bind(self.erp_queue, names.commands_exchange, routing_key="erp.#")

    def exists(self, queue: str) -> bool:
        try:
            self.channel.queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            self.channel = self.connection.channel()
            return False

    def depth(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def drain(self, queue: str) -> list[tuple[str, pika.BasicProperties, bytes]]:
        got: list[tuple[str, pika.BasicProperties, bytes]] = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((method.routing_key, properties, body))

    def close(self) -> None:
        self.channel.queue_delete(self.erp_queue)
        self.connection.close()


def wait(condition: Callable[[], bool], what: str, deployment: Deployment, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        deployment.check_alive()
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{deployment.tails()}")


def in_the_log(ledger: Ledger, event_ids: set[str]) -> Callable[[], bool]:
    return lambda: ledger.known_event_ids(TENANT, event_ids) == event_ids


def reminder_commands(engine: Engine) -> list[tuple[str, str, str]]:
    """(customer, level, command id) of every reminder the engine asked for, in order."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox.c.customer_id, outbox.c.payload, outbox.c.command_id)
            .where(outbox.c.kind == "notifier.send_reminder")
            .order_by(outbox.c.id)
        ).all()
    return [(row.customer_id, row.payload["level"], row.command_id) for row in rows]


def outcomes(engine: Engine) -> dict[str, list[str]]:
    """Command id -> the final facts the notifier recorded for it (one, once it is done)."""
    commands = [command_id for _, _, command_id in reminder_commands(engine)]
    wanted = {fact_id(c, fact): (c, fact) for c in commands for fact in OUTCOMES}
    found: dict[str, list[str]] = {c: [] for c in commands}
    for event_id in evidence.facts(engine, TENANT, wanted):
        command_id, fact = wanted[event_id]
        found[command_id].append(fact)
    return found


def settled(engine: Engine) -> bool:
    """Every command published, and every reminder ended one way or another."""
    with engine.connect() as conn:
        pending = conn.execute(select(outbox.c.id).where(outbox.c.published_at.is_(None))).first()
    return pending is None and all(outcomes(engine).values())


# ---------------------------------------------------------------------------------------------------- the test
def test_reminders_and_credit_commands_flow_once_each_through_separate_processes_and_a_kill_9(
    deployment: Deployment, server: Smtp, pg_url: str, amqp_url: str, amqp_names: AmqpNames
) -> None:
    sink: Recording = server.sink  # type: ignore[assignment]
    engine = create_engine(pg_url)
    ledger = Ledger(engine)
    broker = Broker(amqp_url, amqp_names)
    started = time.monotonic()
    try:
        # Given the three kinds of worker running, the queues they declare in place, and an ERP queue bound
        deployment.start("ingest", "worker", "ingest")
        deployment.start("notifier", "worker", "notifier")
        wait(
            lambda: broker.exists(amqp_names.queue) and broker.exists(amqp_names.notifier_queue),
            "the workers to declare their queues",
            deployment,
        )
        deployment.start("relay", "worker", "relay")
        erp = ErpSimulator(amqp_url, amqp_names.exchange)
        days = erp_days()
        rejected = {"erp-cust-C-INJ-v1", "erp-cust-C-INJ2-v1"}  # the addresses carrying "\r\nBcc:"
        # When the days pass: the ERP reports at 08:00, the clock ticks at 09:00 on the ladder's days
        for day in sorted({*days, *TICKS}):
            events = days.get(day, [])
            erp.publish(events)
            ids = {e["event_id"] for e in events} - rejected
            wait(in_the_log(ledger, ids), f"the ERP's events of {day}", deployment)
            if day not in TICKS:
                continue
            if day == KILL_ON:
                sink.hold_next.set()  # the server will keep the next message unanswered
            out = deployment.run("clock", "tick", "--at", f"{day}T09:00:00Z")
            assert "customer(s) evaluated" in out
            if day == KILL_ON:
                wait(sink.holding.is_set, "a message held by the SMTP server", deployment)
                # the notifier dies between handing a message over and hearing back
                notifier = deployment.processes.pop("notifier")
                notifier.send_signal(signal.SIGKILL)
                assert notifier.wait(10) == -signal.SIGKILL
                sink.release.set()
                deployment.start("notifier", "worker", "notifier")
            wait(lambda: settled(engine), f"the reminders of {day} to be settled", deployment, timeout=40)
        erp.close()
        for name in ("relay", "notifier", "ingest"):
            assert deployment.stop(name) == 0, deployment.tails()
        elapsed = time.monotonic() - started
        _assert_outcome(engine, ledger, sink, broker, amqp_names, deployment)
        print(f"\n{len(sink.received)} e-mails over {len(TICKS)} ticked days in {elapsed:.1f}s")
    finally:
        broker.close()
        engine.dispose()


def _assert_outcome(
    engine: Engine, ledger: Ledger, sink: Recording, broker: Broker, names: AmqpNames, deployment: Deployment
) -> None:
    commands = reminder_commands(engine)
    ended = outcomes(engine)
    assert all(len(facts) == 1 for facts in ended.values()), ended
    outcome = {command_id: facts[0] for command_id, facts in ended.items()}
    # Then the customers were reminded at the expected levels, and nobody else was
    delivered: dict[str, list[str]] = collections.defaultdict(list)
    for customer_id, level, command_id in commands:
        if outcome[command_id] in ("sent", "unconfirmed"):
            delivered[customer_id].append(level)
    assert dict(delivered) == EXPECTED
    # (C-INJ2's address never passed the contract: its reminders failed, each with a letter task to do instead)
    failed = [(c, level) for c, level, command_id in commands if outcome[command_id] == "failed"]
    assert failed == [("C-INJ2", "courtesy"), ("C-INJ2", "reminder_1")]
    for data in (e.data for e in ledger.read_stream(TENANT, "C-INJ2") if e.event_type == "reminder.failed"):
        assert "no recipient" in data["reason"]
    tasks = [e.data["kind"] for e in ledger.read_stream(TENANT, "C-INJ2") if e.event_type == "task.created"]
    assert tasks == ["send_letter", "send_letter"]
    assert not [e for e in ledger.read_stream(TENANT, "C-PAID") if e.event_type.startswith("reminder.")]
    # (the formal notice is also a letter to post: its PDF kept once, and a task, besides its e-mail copy)
    late = ledger.read_stream(TENANT, "C-LATE")
    assert [e.data["level"] for e in late if e.event_type == "reminder.letter_requested"] == ["formal_notice"]
    assert [e.data["kind"] for e in late if e.event_type == "task.created"].count("send_letter") == 1
    [rendered] = [e.data for e in late if e.event_type == "letter.rendered"]
    kept = letters.get(engine, TENANT, rendered["letter_id"])
    assert kept is not None and letters.verify(kept, rendered["sha256"])

    # And the one cut short by the kill was not sent again: unconfirmed, a check_delivery task naming it
    [cut] = [command_id for command_id, fact in outcome.items() if fact == "unconfirmed"]
    [(cut_customer, cut_level)] = [(c, level) for c, level, command_id in commands if command_id == cut]
    assert cut_level == "reminder_2"
    cut_message_id = f"<{cut}@{DOMAIN}>"
    [check] = [
        e.data
        for e in ledger.read_stream(TENANT, cut_customer)
        if e.event_type == "task.created" and e.data["kind"] == "check_delivery"
    ]
    assert check["command_id"] == cut and cut_message_id in check["note"]

    # And every message reached the server exactly once, by Message-ID, each to its customer's addresses only
    messages = sink.messages()
    ids = collections.Counter(m["Message-ID"] for m in messages)
    assert all(n == 1 for n in ids.values()), ids
    expected_ids = {f"<{c}@{DOMAIN}>" for c, fact in outcome.items() if fact in ("sent", "unconfirmed")}
    assert set(ids) == expected_ids and len(messages) == sum(len(levels) for levels in EXPECTED.values())
    assert sink.sessions == [(True, True)] * len(messages)  # STARTTLS, then AUTH, every time
    by_id = {m["Message-ID"]: (m, rcpts, raw) for m, (_, rcpts, raw) in zip(messages, sink.received, strict=True)}
    for customer_id, _, command_id in commands:
        if outcome[command_id] not in ("sent", "unconfirmed"):
            continue
        message, rcpts, raw = by_id[f"<{command_id}@{DOMAIN}>"]
        assert rcpts == EMAILS[customer_id] and message["To"] == ", ".join(EMAILS[customer_id])
        assert message["Bcc"] is None and message["Cc"] is None
        text, html = bodies(message)
        assert not [number for number in NEVER_REMINDED if number in text or number in html]
        # And the evidence: the stored MIME is what the server got, and hashes to what the log recorded
        stored = evidence.by_command(engine, TENANT, command_id)
        assert stored is not None and stored.mime == raw
        if outcome[command_id] == "sent":
            [sent] = [
                e.data
                for e in ledger.read_stream(TENANT, customer_id)
                if e.event_type == "reminder.sent" and e.data["command_id"] == command_id
            ]
            assert sent["message_id"] == message["Message-ID"] and evidence.verify(stored, sent["sha256"])
        if customer_id == "C-INJ":  # the hostile name is printed as it is, never run, and escaped in HTML
            assert HOSTILE_NAME in text and HOSTILE_NAME in message["Subject"]
            assert "{{ 7*7 }} &lt;script&gt;" in html and "<script>" not in html
    everyone = [r for _, rcpts, _ in sink.received for r in rcpts]
    assert "x@example.com" not in everyone and not any("x@example.com" in str(m) for m in messages)

    # And the hostile addresses were refused at the door, each with its reason
    dead = [{k: v.decode() if isinstance(v, bytes) else v for k, v in (p.headers or {}).items()} for _, p, _ in
            broker.drain(names.dead_letter_queue)]  # fmt: skip
    assert sorted(h["x-relance-event-id"] for h in dead) == ["erp-cust-C-INJ-v1", "erp-cust-C-INJ2-v1"]
    for headers in dead:
        assert headers["x-relance-kind"] == "schema" and "emails" in headers["x-relance-reason"], headers

    # And the ERP got one block and one unblock of C-LATE, by command id, the unblock after the payment
    credit = [e for e in ledger.read_stream(TENANT, "C-LATE") if e.event_type in ("credit.blocked", "credit.unblocked")]
    received = broker.drain(broker.erp_queue)
    assert [(key, p.message_id) for key, p, _ in received] == [
        ("erp.credit_block", credit[0].event_id),
        ("erp.credit_unblock", credit[1].event_id),
    ]
    assert all(json.loads(body)["command_id"] == p.message_id for _, p, body in received)
    assert all(json.loads(body)["customer_id"] == "C-LATE" for _, _, body in received)

    # And nothing is left waiting, and the log verifies
    for queue in (names.queue, names.notifier_queue, f"{names.notifier_queue}.retry", f"{names.notifier_queue}.dead"):
        assert broker.depth(queue) == 0, queue
    assert "intact" in deployment.run("verify")
