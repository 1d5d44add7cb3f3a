"""Batches on real servers: many commands in one worker's hands, sent together over a few reused connections.

The rig is test_worker.py's (the ledger on PostgreSQL, the engine's real commands relayed through RabbitMQ, aiosmtpd
with STARTTLS + AUTH), with a sink that also tells the connections its messages came over apart. What must hold: each
reminder reaches the server once, however many are in flight, and a worker killed in the middle of a batch leaves
no message sent twice, only the one it was waiting on in doubt.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as Server
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import text

from tests.factories import customer, invoice
from tests.integration.notifier.test_worker import DUE, REMIND, Rig
from tests.servers import AmqpNames
from tests.smtp_server import PASSWORD, USER, Recording, Smtp, free_port

pytestmark = pytest.mark.integration


class Counting(Recording):
    """A :class:`Recording` sink that also keeps which connection each message it accepted came over."""

    def __init__(self) -> None:
        super().__init__()
        self.connections: list[int] = []  # per accepted message: the number of its connection (session)
        self._numbers: dict[int, int] = {}

    async def handle_DATA(self, server: Server, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            self.connections.append(self._numbers.setdefault(id(session), len(self._numbers)))
        return reply


@pytest.fixture
def make_rig(
    pg_url: str, amqp_url: str, amqp_names: AmqpNames, tmp_path: Path, cert: tuple[Path, Path]
) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**overrides: Any) -> Rig:
        server = Smtp(Counting(), free_port(), cert)
        server.start()
        rig = Rig(pg_url, amqp_url, amqp_names, server, tmp_path, **overrides)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()
        rig.server.stop()


def clients(rig: Rig, count: int) -> list[dict[str, Any]]:
    """``count`` customers with an invoice due on DUE, and the reminder commands the engine decides on REMIND."""
    ids = [f"C-{n:02d}" for n in range(count)]
    for n, customer_id in enumerate(ids):
        rig.erp(
            customer_id,
            customer(f"Client {n}", emails=(f"ap@client{n}.example",), language="fr"),
            invoice(f"INV-{customer_id}", "150.00", due_date=DUE),
        )
    return rig.decide(REMIND, *ids)


def message_ids(rig: Rig) -> list[str]:
    return sorted(str(message["Message-ID"]) for message in rig.sink.messages())


def expected_ids(commands: list[dict[str, Any]]) -> list[str]:
    return sorted(f"<{c['command_id']}@mail.acme.example>" for c in commands)


def claim_transactions(rig: Rig) -> int:
    with rig.engine.connect() as conn:
        query = text("SELECT count(DISTINCT tx_id) FROM events WHERE event_type = 'reminder.sending'")
        return int(conn.execute(query).scalar_one())


def test_commands_in_a_worker_s_hands_together_are_each_sent_once_over_a_few_reused_connections(
    make_rig: Callable[..., Rig],
) -> None:
    # Given twelve reminders in the queue, each published twice, and a worker allowed three SMTP connections
    rig = make_rig(notifier_smtp_connections=3, notifier_batch_size=50)
    commands = clients(rig, 12)
    assert rig.relay() == 12 and rig.republish_outbox() == 12
    # When the worker drains the queue
    rig.start()
    rig.wait(lambda: rig.handled() == 24, "both copies of every command", timeout=30)
    rig.stop()
    # Then every reminder reached the server once, over at most three connections, each reused
    assert message_ids(rig) == expected_ids(commands)
    sink = rig.sink
    assert isinstance(sink, Counting)
    assert len(set(sink.connections)) <= 3 < len(sink.received)
    assert rig.sink.sessions == [(True, True)] * 12  # STARTTLS and AUTH on each connection
    assert [rig.outcome(c) for c in commands] == [["reminder.sent"]] * 12
    statuses = rig.worker.totals.by_status
    assert statuses == {"sent": 12, "already_sent": 12}
    # and their claims were recorded a batch at a time, not one transaction per command
    assert claim_transactions(rig) < len(commands)
    assert rig.depth(rig.settings.notifier_queue) == 0


def test_a_worker_killed_in_the_middle_of_a_batch_sends_nothing_twice(make_rig: Callable[..., Rig]) -> None:
    # Given eight reminders in the queue, and a server that will hold the first message it gets unanswered
    rig = make_rig(notifier_smtp_connections=3)
    commands = clients(rig, 8)
    assert rig.relay() == 8
    rig.sink.hold_next.set()
    worker = notifier_process(rig)
    try:
        # When the worker has sent the other seven over its two other connections, and is killed with kill -9
        # while it waits on the held one
        rig.wait(rig.sink.holding.is_set, "a message held by the server", timeout=30)
        rig.wait(lambda: sum(bool(rig.outcome(c)) for c in commands) == 7, "the seven others recorded", timeout=30)
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(10) == -signal.SIGKILL
        rig.sink.release.set()
        # and a new worker takes the batch over once the dead one's lease is over
        worker = notifier_process(rig)
        rig.wait(lambda: rig.done(commands), "an outcome for each command", timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    # Then each message reached the server once; the held one is unconfirmed, with a task to check it
    assert message_ids(rig) == expected_ids(commands)
    outcomes = [rig.outcome(c) for c in commands]
    assert sorted(outcomes) == [["reminder.sent"]] * 7 + [["reminder.unconfirmed"]]
    [cut] = [c for c, outcome in zip(commands, outcomes, strict=True) if outcome == ["reminder.unconfirmed"]]
    tasks = [t["kind"] for t in rig.data(cut["customer_id"], "task.created")]
    assert tasks == ["check_delivery"]


def notifier_process(rig: Rig) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(Path(sys.executable).with_name("relance")), "worker", "notifier"], env=env(rig))


def env(rig: Rig) -> dict[str, str]:
    """The environment of a ``relance worker notifier`` process on the rig's servers and names."""
    settings = rig.settings
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith("RELANCE_")},
        "RELANCE_DATABASE_URL": str(settings.database_url),
        "RELANCE_AMQP_URL": settings.amqp_url,
        "RELANCE_COMMANDS_EXCHANGE": settings.commands_exchange,
        "RELANCE_NOTIFIER_QUEUE": settings.notifier_queue,
        "RELANCE_QUEUE_TYPE": settings.queue_type,
        "RELANCE_SMTP_HOST": "127.0.0.1",
        "RELANCE_SMTP_PORT": str(rig.server.port),
        "RELANCE_SMTP_USERNAME": USER,
        "RELANCE_SMTP_PASSWORD": PASSWORD,
        "RELANCE_SMTP_CA_FILE": str(rig.server.cert[1]),
        "RELANCE_SMTP_TIMEOUT": "60",  # the held message is not timed out: the worker is killed waiting on it
        "RELANCE_SMTP_LEASE_SECONDS": "10",  # the shortest allowed: the dead worker's claim expires soon
        "RELANCE_NOTIFIER_RETRY_SECONDS": "1",
        "RELANCE_NOTIFIER_SMTP_CONNECTIONS": str(settings.notifier_smtp_connections),
        "RELANCE_ALLOW_PLACEHOLDER_SENDER": "true",
        "RELANCE_MAIL_FROM": settings.mail_from,
        "RELANCE_MAIL_DOMAIN": settings.mail_domain,
        "RELANCE_LOG_FORMAT": "json",
    }
