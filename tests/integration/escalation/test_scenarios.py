"""Dunning scenarios end to end on real PostgreSQL and RabbitMQ, the clock in the test's hands.

Each scenario runs the way production does: the ERP's events go through ingest (the contract parser and the real
ledger; over RabbitMQ into a `relance worker ingest` process where ``amqp`` is set), the escalation worker fires its
durable timers and follows the log, day after day at 09:00 UTC (the test sets its clock), and the relay publishes the
outbox to a commands exchange of the test, where an ERP queue (``erp.#``) and a notifier queue (``notifier.#``) wait.
The tables say what each day must add to the customer's stream (every other day: nothing), which commands the ERP
receives and which reminders the notifier is asked to send. The shapes are those of the engine's unit tests
(tests/unit/escalation/test_engine.py), here with the database, the timers and the broker in the loop.

The last test runs everything at once as separate processes: two escalation workers, duplicate clock ticks, an
ingest worker fed redelivered messages and a relay restarted midway; each decision must still be recorded once and
each command received once.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

import pika
import pytest
from sqlalchemy import Engine, select
from sqlalchemy import text as sa_text

from services.cli import main
from services.escalation.engine import decision_id
from services.escalation.replay import replay
from services.escalation.service import CLOCK_TICKED
from services.escalation.timers import Timers
from services.escalation.worker import EscalationWorker, policy_books, real_rules
from services.ingest.service import Delivery, Ingestor
from shared.config import Settings, load_settings
from shared.contracts.erp import EVENT_TYPES
from shared.ledger.db import make_engine
from shared.ledger.schema import outbox
from shared.ledger.store import Ledger, RecordedEvent
from tests.factories import (
    CUSTOMER,
    TENANT,
    Ev,
    body,
    customer,
    dispute,
    dispute_resolved,
    invoice,
    payment,
    plan,
    promise,
    summary,
)
from tests.servers import RUN_ID, AmqpNames, CommandQueues, publish_outbox

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
ERP_EVENTS = frozenset(EVENT_TYPES)
CLAIM_FIGURES = frozenset({"fee.charged", "interest.computed", "claim.fixed"})

# The unit tests' ladder, as a tenant would write it. INV-1 is due on Monday 2 March 2026: the ladder then falls on
# 27 Feb (courtesy), 7 March (reminder-1), 14 March (call), 22 March (formal notice), 1 April (block), 16 April.
SCENARIO_POLICY = """
name: scenario
language: fr
levels:
  - {key: courtesy, offset_days: -3, channel: email, template: courtesy}
  - {key: reminder-1, offset_days: 5, channel: email, template: reminder-1}
  - {key: call, offset_days: 12, channel: phone, template: call}
  - {key: formal-notice, offset_days: 20, channel: letter, template: formal-notice,
     actions: [charge_interest, charge_fee]}
  - {key: block, offset_days: 30, channel: none, actions: [block_credit]}
  - {key: hand-over, offset_days: 45, channel: none, actions: [hand_over]}
business_days: false
block_over_credit_limit: false
"""
# Steps two days apart, for a customer that names it: three days of downtime pass over a whole step.
TIGHT_POLICY = """
name: tight
levels:
  - {key: reminder-1, offset_days: 1, channel: email, template: reminder-1}
  - {key: reminder-2, offset_days: 3, channel: email, template: reminder-2}
  - {key: final, offset_days: 5, channel: letter, template: final, actions: [charge_fee]}
business_days: false
block_over_credit_limit: false
"""
BOOK = "default: scenario\n"

DUE = date(2026, 3, 2)
INV1 = invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date=DUE)


# ---------------------------------------------------------------------------------------------------- fixtures
Commands = CommandQueues  # the test's commands exchange, with the queues an ERP and the notifier would bind to it


@pytest.fixture
def commands(amqp_url: str) -> Iterator[Commands]:
    with Commands.declared(amqp_url, f"relance.t.{RUN_ID}.scn{time.monotonic_ns()}") as names:
        yield names


def write_policies(directory: Path) -> Path:
    """A ``RELANCE_POLICY_DIR``: the scenario ladder by default, the tight one for customers naming it."""
    directory.mkdir()
    (directory / "scenario.yaml").write_text(SCENARIO_POLICY)
    (directory / "tight.yaml").write_text(TIGHT_POLICY)
    (directory / "book.yaml").write_text(BOOK)
    return directory


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    return write_policies(tmp_path / "policies")


@pytest.fixture
def rates_file(tmp_path: Path) -> Path:
    """The last shipped rate carried on to the semester after today's: the wall-clock test may run any day."""
    path = tmp_path / "rates.csv"
    rows = ["semester_start,rate"]
    year = 2026
    while date(year, 1, 1) <= datetime.now(UTC).date():
        rows += [f"{year}-07-01,2.15", f"{year + 1}-01-01,2.15"]
        year += 1
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def settings(
    pg_url: str, amqp_url: str, amqp_names: AmqpNames, commands: Commands, policy_dir: Path, rates_file: Path
) -> Settings:
    return load_settings(
        rates_file=rates_file,
        database_url=pg_url,
        amqp_url=amqp_url,
        policy_dir=policy_dir,
        escalation_poll_ms=20,
        relay_poll_ms=20,
        ingest_batch_ms=20,
        retry_max_seconds=0.5,
        log_format="json",
        **{**amqp_names.settings(), "commands_exchange": commands.exchange},  # the exchange its queues are bound to
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.require_database_url(), pool_size=10)
    yield engine
    engine.dispose()


class Processes:
    """``relance`` sub-commands run as separate processes with the test's settings."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.env = {
            **os.environ,
            "RELANCE_DATABASE_URL": settings.require_database_url(),
            "RELANCE_AMQP_URL": settings.amqp_url,
            "RELANCE_EVENTS_EXCHANGE": settings.events_exchange,
            "RELANCE_INGEST_QUEUE": settings.ingest_queue,
            "RELANCE_DEAD_LETTER_QUEUE": settings.dead_letter_queue,
            "RELANCE_COMMANDS_EXCHANGE": settings.commands_exchange,
            "RELANCE_POLICY_DIR": str(settings.policy_dir),
            "RELANCE_RATES_FILE": str(settings.rates_file),
            "RELANCE_ESCALATION_POLL_MS": "20",
            "RELANCE_RELAY_POLL_MS": "20",
            "RELANCE_INGEST_BATCH_MS": "20",
            "RELANCE_RETRY_MAX_SECONDS": "0.5",
            "RELANCE_LOG_FORMAT": "json",
        }
        self.logs = logs
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *argv: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"{'-'.join(argv[:2])}-{len(self.started)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *argv],
            env=self.env,
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.started.append((process, log))
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(30)

    def check_alive(self) -> None:
        for process, log in self.started:
            code = process.poll()
            if code not in (None, 0):
                pytest.fail(f"{process.args!r} exited with {code}:\n{log.read_text()[-3000:]}")

    def tails(self) -> str:
        return "".join(f"\n--- {log.name}\n{log.read_text()[-2000:]}" for _, log in self.started)

    def close(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    started = Processes(settings, tmp_path)
    yield started
    started.close()


def wait_until(
    condition: Callable[[], bool], what: str, processes: Processes | None = None, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if processes is not None:
            processes.check_alive()
        time.sleep(0.05)
    logs = "" if processes is None else processes.tails()
    pytest.fail(f"timed out waiting for {what}{logs}")


class Erp:
    """The ERP's side of the events exchange: plain pika, publisher confirms, the topology ingest declares."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.exchange_declare(settings.events_exchange, exchange_type="topic", durable=True)
        for queue in (settings.ingest_queue, settings.dead_letter_queue):
            self.channel.queue_declare(queue, durable=True)
        self.channel.queue_bind(settings.ingest_queue, settings.events_exchange, routing_key="#")

    def publish(self, messages: list[bytes]) -> None:
        for message in messages:
            self.channel.basic_publish(
                self.settings.events_exchange,
                json.loads(message)["event_type"],
                message,
                pika.BasicProperties(content_type="application/json", delivery_mode=2),
                mandatory=True,
            )

    def dead_letters(self) -> int:
        return int(self.channel.queue_declare(self.settings.dead_letter_queue, passive=True).method.message_count)

    def close(self) -> None:
        self.connection.close()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Desk:
    """One tenant's credit desk, run as in production, with the days passing at the test's pace."""

    def __init__(self, settings: Settings, engine: Engine, erp: Erp | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.ledger = Ledger(engine)
        self.erp_client = erp
        self.books = policy_books(settings)
        self.rules = real_rules(settings)
        self.clock = Clock(datetime(2026, 1, 1, 9, tzinfo=UTC))
        self.worker = self.start_worker()

    def start_worker(self) -> EscalationWorker:
        """A fresh escalation worker (a new process, as far as the database can tell)."""
        stop = threading.Event()
        return EscalationWorker(self.settings, Ledger(self.engine), self.books, self.rules, stop, clock=self.clock)

    def erp(self, day: date, *events: Ev, customer_id: str = CUSTOMER) -> None:
        """The ERP reports ``events`` at 08:00 on ``day``; returns once the ledger holds them."""
        moment = datetime.combine(day, clock_time(8), tzinfo=UTC)
        messages = [body(ev.at(moment), customer_id=customer_id) for ev in events]
        ids = {ev.event_id for ev in events}
        if self.erp_client is None:
            result = Ingestor(self.ledger).process([Delivery(message) for message in messages])
            assert (result.applied, result.rejections) == (len(events), []), result.rejections
        else:
            self.erp_client.publish(messages)
            wait_until(lambda: self.ledger.known_event_ids(TENANT, ids) == ids, f"ingest of {sorted(ids)}")
            assert self.erp_client.dead_letters() == 0
        # The log follower reads only below the oldest transaction still running on the server (it never skips an
        # event): wait until it can see these, or a transaction elsewhere would push their evaluation to a later day.
        wait_until(lambda: self.visible(ids), f"the log follower seeing {sorted(ids)}")

    def visible(self, ids: set[str]) -> bool:
        with self.engine.connect() as conn:
            newest = conn.execute(
                sa_text("SELECT max(tx_id) FROM events WHERE tenant = :t AND event_id = ANY(:ids)"),
                {"t": TENANT, "ids": sorted(ids)},
            ).scalar_one()
            xmin = conn.execute(sa_text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")).scalar_one()
        return newest is None or int(xmin) > int(newest)

    def at(self, day: date) -> None:
        """09:00 on ``day``: the worker fires what is due and evaluates what the ERP changed, until idle."""
        self.clock.now = datetime.combine(day, clock_time(9), tzinfo=UTC)
        while self.worker.run_once():
            pass

    def run(self, erp: dict[date, list[Ev]], until: date, down: frozenset[date] = frozenset()) -> None:
        day = min(erp)
        while day <= until:
            if day in erp:
                self.erp(day, *erp[day])
            if day in down:
                self.worker.stop.set()
            else:
                if self.worker.stop.is_set():
                    self.worker = self.start_worker()  # back after the outage: only the database remembers
                self.at(day)
            day += timedelta(days=1)

    def relay(self) -> int:
        """Publish every pending command, as `relance worker relay` does, and return how many."""
        return publish_outbox(self.settings, self.engine)

    def decisions(self, customer_id: str = CUSTOMER) -> list[RecordedEvent]:
        return [
            e
            for e in self.ledger.read_stream(TENANT, customer_id)
            if e.event_type not in ERP_EVENTS and e.event_type != CLOCK_TICKED
        ]

    def table(self, customer_id: str = CUSTOMER) -> dict[str, list[tuple[str, ...]]]:
        """Day -> the ladder's decisions of the day; the claims' figures (interest, indemnities) are checked in the
        reminders' totals, and day by day in tests/unit/escalation/test_claims.py."""
        table: dict[str, list[tuple[str, ...]]] = {}
        for event in self.decisions(customer_id):
            if event.event_type not in CLAIM_FIGURES:
                table.setdefault(event.occurred_at.astimezone(UTC).date().isoformat(), []).append(summary(event))
        return table


@pytest.fixture
def erp_over_rabbitmq(settings: Settings, processes: Processes) -> Iterator[Erp]:
    """An ERP publishing to RabbitMQ, drained into the ledger by a `relance worker ingest` process."""
    client = Erp(settings)
    processes.start("worker", "ingest")
    yield client
    client.close()


# ---------------------------------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Scenario:
    erp: dict[str, list[Ev]]  # day -> what the ERP reports at 08:00 that day
    until: str  # last day the desk runs
    decided: dict[str, list[tuple[str, ...]]]  # day -> decisions added to the stream (other days: none)
    reminders: list[tuple[str, str, str, str, str]]  # to the notifier: level, invoices, outstanding, interest, fees
    erp_commands: list[str] = field(default_factory=list)  # to the ERP, in order
    down: tuple[str, ...] = ()  # days the escalation worker does not run
    amqp: bool = False  # the ERP's events go through RabbitMQ and an ingest process
    timer: str | None = None  # the customer's next timer after the last day, None: nothing is due any more


LADDER_UNTIL_BLOCK = {
    "2026-02-27": [("level", "INV-1", "courtesy"), ("reminder", "EUR", "courtesy", "INV-1")],
    "2026-03-07": [("level", "INV-1", "reminder-1"), ("reminder", "EUR", "reminder-1", "INV-1")],
    "2026-03-14": [("level", "INV-1", "call"), ("task", "phone_call", "INV-1", "1000.00")],
    "2026-03-22": [
        ("level", "INV-1", "formal-notice"),
        ("reminder", "EUR", "formal-notice", "INV-1"),
    ],
    "2026-04-01": [("level", "INV-1", "block"), ("blocked", "level")],
}
LADDER_REMINDERS = [
    ("courtesy", "INV-1", "1000.00", "0", "0"),
    ("reminder-1", "INV-1", "1000.00", "0", "0"),
    ("formal-notice", "INV-1", "1000.00", "6.66", "40.00"),  # 20 days at ECB 2.15 + 10 = 12.15 % on 1000.00
]
COURTESY = [("level", "INV-1", "courtesy"), ("reminder", "EUR", "courtesy", "INV-1")]
INV2 = invoice("INV-2", "200.00", issue_date="2026-02-01", due_date=DUE)
INV3 = invoice("INV-3", "300.00", issue_date="2026-02-01", due_date=DUE)

SCENARIOS = {
    "full-ladder-unpaid": Scenario(
        erp={"2026-02-01": [customer(), INV1]},
        until="2026-04-30",
        decided={
            **LADDER_UNTIL_BLOCK,
            "2026-04-16": [
                ("level", "INV-1", "hand-over"),
                ("task", "hand_over", "INV-1", "1000.00"),
                ("handed_over", "EUR", "INV-1"),
            ],
        },
        reminders=LADDER_REMINDERS,
        erp_commands=["erp.credit_block", "erp.collection_handover"],
        amqp=True,
    ),
    "paid-the-day-before-a-step": Scenario(
        erp={"2026-02-01": [customer(), INV1], "2026-03-06": [payment("P1", "1000.00", received_on="2026-03-06")]},
        until="2026-04-30",
        decided={"2026-02-27": COURTESY},
        reminders=[("courtesy", "INV-1", "1000.00", "0", "0")],
    ),
    "partial-payment-re-anchors": Scenario(
        erp={"2026-02-01": [customer(), INV1], "2026-03-16": [payment("P1", "400.00", received_on="2026-03-16")]},
        until="2026-04-05",
        decided={
            "2026-02-27": COURTESY,
            "2026-03-07": LADDER_UNTIL_BLOCK["2026-03-07"],
            "2026-03-14": LADDER_UNTIL_BLOCK["2026-03-14"],
            # 22 March passes: the formal notice comes 8 days (call -> formal notice) after the payment
            "2026-03-24": [
                ("level", "INV-1", "formal-notice"),
                ("reminder", "EUR", "formal-notice", "INV-1"),
            ],
            "2026-04-03": [("level", "INV-1", "block"), ("blocked", "level")],
        },
        # 1000.00 for 14 days, then 600.00 for 8, at 12.15 %
        reminders=[*LADDER_REMINDERS[:2], ("formal-notice", "INV-1", "600.00", "6.26", "40.00")],
        erp_commands=["erp.credit_block"],
        timer="2026-04-18",
    ),
    "dispute-on-one-of-three-invoices": Scenario(
        erp={
            "2026-02-01": [customer(), INV1, INV2, INV3],
            "2026-03-01": [dispute("INV-2")],
            "2026-03-10": [dispute_resolved("INV-2")],
        },
        until="2026-03-18",
        decided={
            "2026-02-27": [
                ("level", "INV-1", "courtesy"),
                ("level", "INV-2", "courtesy"),
                ("level", "INV-3", "courtesy"),
                ("reminder", "EUR", "courtesy", "INV-1,INV-2,INV-3"),
            ],
            # INV-2 disputed: neither moved nor listed
            "2026-03-07": [
                ("level", "INV-1", "reminder-1"),
                ("level", "INV-3", "reminder-1"),
                ("reminder", "EUR", "reminder-1", "INV-1,INV-3"),
            ],
            # resolved: INV-2 resumes at the next level at once, demanded alone (the others are listed apart)
            "2026-03-10": [("level", "INV-2", "reminder-1"), ("reminder", "EUR", "reminder-1", "INV-2")],
            "2026-03-14": [
                ("level", "INV-1", "call"),
                ("level", "INV-3", "call"),
                ("task", "phone_call", "INV-1,INV-3", "1300.00"),
            ],
            "2026-03-17": [("level", "INV-2", "call"), ("task", "phone_call", "INV-2", "200.00")],
        },
        reminders=[
            ("courtesy", "INV-1,INV-2,INV-3", "1500.00", "0", "0"),
            ("reminder-1", "INV-1,INV-3", "1300.00", "0", "0"),
            ("reminder-1", "INV-2", "200.00", "0", "0"),
        ],
        timer="2026-03-22",
    ),
    "kept-promise": Scenario(
        erp={
            "2026-02-01": [customer(), INV1],
            "2026-03-05": [promise("PR1", "2026-03-12", "1000.00", ["INV-1"])],
            "2026-03-13": [payment("P1", "1000.00", received_on="2026-03-13")],
        },
        until="2026-04-30",
        decided={"2026-02-27": COURTESY, "2026-03-12": [("task", "check_promise", "INV-1", "1000.00")]},
        reminders=[("courtesy", "INV-1", "1000.00", "0", "0")],
    ),
    "broken-promise": Scenario(
        erp={"2026-02-01": [customer(), INV1], "2026-03-05": [promise("PR1", "2026-03-12", "1000.00", [])]},
        until="2026-03-25",
        decided={
            "2026-02-27": COURTESY,
            "2026-03-12": [("task", "check_promise", "INV-1", "1000.00")],
            # promised 12 March + 2 days of grace: on the 15th the ladder resumes with the next level
            "2026-03-15": [
                ("level", "INV-1", "reminder-1"),
                ("reminder", "EUR", "reminder-1", "INV-1"),
                ("task", "promise_broken", "INV-1", "1000.00"),
            ],
            "2026-03-22": [("level", "INV-1", "call"), ("task", "phone_call", "INV-1", "1000.00")],
        },
        reminders=LADDER_REMINDERS[:2],
        timer="2026-03-30",
    ),
    "payment-plan-instalment-unpaid": Scenario(
        erp={
            "2026-02-01": [customer(), invoice("INV-1", "1200.00", issue_date="2026-02-01", due_date=DUE)],
            "2026-03-08": [
                plan("PL1", ["INV-1"], [("2026-03-20", "400.00"), ("2026-04-20", "400.00"), ("2026-05-20", "400.00")])
            ],
        },
        until="2026-04-12",
        decided={
            "2026-02-27": COURTESY,
            "2026-03-07": LADDER_UNTIL_BLOCK["2026-03-07"],
            # the plan replaced the due date by 20 March (first instalment, unpaid): the call comes 12 days after
            "2026-04-01": [("level", "INV-1", "call"), ("task", "phone_call", "INV-1", "1200.00")],
            "2026-04-09": [
                ("level", "INV-1", "formal-notice"),
                ("reminder", "EUR", "formal-notice", "INV-1"),
            ],
        },
        reminders=[
            ("courtesy", "INV-1", "1200.00", "0", "0"),
            ("reminder-1", "INV-1", "1200.00", "0", "0"),
            # from the invoice's own due date: 38 days on 1200.00 at 12.15 %
            ("formal-notice", "INV-1", "1200.00", "15.18", "40.00"),
        ],
        timer="2026-04-19",
    ),
    "three-days-of-downtime": Scenario(
        erp={"2026-02-01": [customer(policy="tight"), INV1]},
        until="2026-03-12",
        down=("2026-03-05", "2026-03-06", "2026-03-07"),  # reminder-2 (5 March) and final (7 March) fall due
        decided={
            "2026-03-03": [("level", "INV-1", "reminder-1"), ("reminder", "EUR", "reminder-1", "INV-1")],
            "2026-03-08": [
                ("level", "INV-1", "final skipping reminder-2"),
                ("reminder", "EUR", "final", "INV-1"),
            ],
        },
        reminders=[("reminder-1", "INV-1", "1000.00", "0", "0"), ("final", "INV-1", "1000.00", "0", "40.00")],
    ),
    "payment-unblocks-credit": Scenario(
        erp={"2026-02-01": [customer(), INV1], "2026-04-03": [payment("P1", "1000.00", received_on="2026-04-03")]},
        until="2026-04-20",
        # the claimed interest (fixed through the payment: 32 days at 12.15 % on 1000.00 = 10.65) and the indemnity
        # stay owed: the customer is asked for them once, by a claims statement, and a collector is asked to pursue
        # or waive them
        decided={
            **LADDER_UNTIL_BLOCK,
            "2026-04-03": [
                ("reminder", "EUR", "claims", ""),
                ("unblocked",),
                ("task", "claim_owed", "INV-1", "50.65"),
            ],
        },
        reminders=[*LADDER_REMINDERS, ("claims", "", "0", "0", "0")],  # no invoice demanded: 50.65 in totals.claims
        erp_commands=["erp.credit_block", "erp.credit_unblock"],
        amqp=True,
    ),
}


def _day(text: str) -> date:
    return date.fromisoformat(text)


@pytest.mark.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_scenario(
    scenario: Scenario, settings: Settings, engine: Engine, commands: Commands, request: pytest.FixtureRequest
) -> None:
    erp = request.getfixturevalue("erp_over_rabbitmq") if scenario.amqp else None
    desk = Desk(settings, engine, erp)
    # Given the ERP's events, when the days pass (the worker down on some) and the relay publishes the outbox
    desk.run(
        {_day(day): events for day, events in scenario.erp.items()},
        _day(scenario.until),
        frozenset(_day(day) for day in scenario.down),
    )
    desk.relay()
    # Then the stream holds exactly the decisions of the table, each on its day
    assert desk.table() == scenario.decided
    # And every decision names the policy it followed and the instant it was taken at, preceded by its clock tick
    stream = desk.ledger.read_stream(TENANT, CUSTOMER)
    for previous, event in itertools.pairwise(stream):
        if event.event_type not in ERP_EVENTS and event.event_type != CLOCK_TICKED:
            assert event.metadata["clock"] in (previous.event_id, previous.metadata.get("clock"))
            assert datetime.fromisoformat(event.metadata["as_of"]) == event.occurred_at
            assert event.data["policy"] == ("tight" if scenario.down else "scenario")
    # And the notifier was asked for exactly the reminders listed, in order, with their amounts
    reminders = commands.drain(commands.notifier_queue)
    assert [
        (
            b["level"],
            ",".join(b["invoice_ids"]),
            b["totals"]["outstanding"],
            b["totals"]["interest"],
            b["totals"]["fees"],
        )
        for _, _, b in reminders
    ] == scenario.reminders
    # And the ERP received exactly the credit commands, each named by the decision that caused it
    received = commands.drain(commands.erp_queue)
    assert [m.routing_key for m, _, _ in received] == scenario.erp_commands
    credit = [
        e for e in desk.decisions() if e.event_type in ("credit.blocked", "credit.unblocked", "collection.handed_over")
    ]
    assert [p.message_id for _, p, _ in received] == [e.event_id for e in credit]
    assert all(b["command_id"] == p.message_id for _, p, b in received)
    # And the customer's timer points at the next step (or is gone), and the log is intact
    timer = Timers(engine).get(TENANT, CUSTOMER)
    assert (timer.due_at.date().isoformat() if timer else None) == scenario.timer
    assert desk.ledger.verify().ok


def test_the_worker_down_for_three_days_sends_the_level_due_now_once_and_records_the_one_passed_over(
    settings: Settings, engine: Engine
) -> None:
    desk = Desk(settings, engine)
    scenario = SCENARIOS["three-days-of-downtime"]
    desk.run({_day(d): e for d, e in scenario.erp.items()}, _day("2026-03-04"))
    # Given the worker stopped on 4 March with the customer's timer set for reminder-2 on 5 March
    timer = Timers(engine).get(TENANT, CUSTOMER)
    assert timer is not None and timer.due_at == datetime(2026, 3, 5, tzinfo=UTC)
    # When a new worker starts on 8 March at 09:00
    desk.worker = desk.start_worker()
    desk.at(_day("2026-03-08"))
    # Then the timer fired once, at that instant, and the final level names reminder-2 as passed over
    ticks = [e for e in desk.ledger.read_stream(TENANT, CUSTOMER) if e.event_type == CLOCK_TICKED]
    assert [(t.data["as_of"], t.data["trigger"]) for t in ticks][-1] == ("2026-03-08T09:00:00Z", "timer")
    (final,) = [
        e for e in desk.decisions() if e.event_type == "escalation.level_reached" and e.data["level"] == "final"
    ]
    assert final.data["skipped"] == ["reminder-2"] and final.data["step_date"] == "2026-03-07"
    assert [e.data["level"] for e in desk.decisions() if e.event_type == "reminder.requested"] == [
        "reminder-1",
        "final",
    ]


def test_credit_commands_keep_their_ids_through_repeated_ticks_and_relays(
    settings: Settings, engine: Engine, commands: Commands, capsys: pytest.CaptureFixture[str]
) -> None:
    desk = Desk(settings, engine)
    scenario = SCENARIOS["payment-unblocks-credit"]
    desk.run({_day(d): e for d, e in scenario.erp.items()}, _day("2026-04-05"))
    assert desk.relay() == 6  # three reminders, the claims statement, the block, the unblock
    # When the clock is ticked by hand again over the same days, twice each, and the relay runs again
    for at in ("2026-04-01T09:00:00Z", "2026-04-03T09:00:00Z", "2026-04-03T09:00:00Z", "2026-04-05T12:00:00Z"):
        assert main(["clock", "tick", "--at", at, "--database-url", settings.require_database_url()]) == 0
        assert "0 decision(s) recorded" in capsys.readouterr().out
    assert desk.relay() == 0
    # Then the ERP got one block and one unblock, whose ids derive from the customer and the block episode alone
    received = commands.drain(commands.erp_queue)
    block_id = decision_id(TENANT, CUSTOMER, "block", "1")
    assert [(m.routing_key, p.message_id) for m, p, _ in received] == [
        ("erp.credit_block", decision_id(TENANT, CUSTOMER, "credit.blocked", "1")),
        ("erp.credit_unblock", decision_id(TENANT, CUSTOMER, "credit.unblocked", block_id)),
    ]
    block, unblock = (b for _, _, b in received)
    assert block["block_id"] == unblock["block_id"] == block_id
    assert block["overdue"] == {"EUR": "1000.00"} and unblock["overdue"] == {}
    with engine.connect() as conn:
        assert sorted(conn.execute(select(outbox.c.kind)).scalars()) == [
            "erp.credit_block",
            "erp.credit_unblock",
            *["notifier.send_reminder"] * 4,
        ]


# ---------------------------------------------------------------------------------------------------- all at once
def test_redelivered_and_concurrent_triggers_record_each_decision_once_and_send_each_command_once(
    settings: Settings,
    engine: Engine,
    commands: Commands,
    processes: Processes,
    erp_over_rabbitmq: Erp,
    make_pg_database: Callable[[], str],
) -> None:
    """Separate processes on the wall clock: the invoices are dated from today, so every level is days away."""
    today = datetime.now(UTC).date()
    ledger = Ledger(engine)
    # Given eight customers, each with an invoice at a different distance from its due date (blocked ones among
    # them), published twice by the ERP (a redelivery), while two escalation workers and a relay are running
    # days late -> the level due today (each holds a day either side, should the test run across midnight)
    levels = {-10: None, -2: "courtesy", 6: "reminder-1", 8: "reminder-1", 14: "call", 24: "formal-notice", 35: "block"}
    levels[38] = "block"
    offsets = {f"C-{n}": days for n, days in enumerate(levels)}
    first = [
        body(ev.at(datetime.now(UTC)), customer_id=c)
        for c, days in offsets.items()
        for ev in (
            customer(f"Customer {c}").with_id(f"cust-{c}"),
            invoice(
                "INV-1", "1000.00", issue_date=today - timedelta(days=days + 30), due_date=today - timedelta(days=days)
            ).with_id(f"inv-{c}"),
        )
    ]
    # (and a backlog of timers due now for every customer, so the workers' timer rounds race with the log's)
    for c in offsets:
        Timers(engine).set(TENANT, c, datetime.now(UTC), 0, datetime.now(UTC))
    workers = [processes.start("worker", "escalation") for _ in range(2)]
    relay = processes.start("worker", "relay")
    erp_over_rabbitmq.publish(first + first[::-1])
    # And the clock ticked by hand at the same instant twice at once, as a backfill run twice would
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    ticks = [processes.start("clock", "tick", "--at", now) for _ in range(2)]
    blocked = {c for c, days in offsets.items() if days >= 30}
    wait_until(
        lambda: all(any(e.event_type == "credit.blocked" for e in ledger.read_stream(TENANT, c)) for c in blocked),
        "the blocks of the customers 35 and 38 days late",
        processes,
    )
    assert [tick.wait(60) for tick in ticks] == [0, 0]
    # When the relay is restarted midway, and the blocked customers pay (the payment redelivered too)
    assert processes.stop(relay) == 0
    payments = [
        body(payment(f"P-{c}", "1000.00", received_on=today).at(datetime.now(UTC)).with_id(f"pay-{c}"), customer_id=c)
        for c in blocked
    ]
    erp_over_rabbitmq.publish(payments * 2)
    relay = processes.start("worker", "relay")

    def settled() -> bool:
        unblocked = all(any(e.event_type == "credit.unblocked" for e in ledger.read_stream(TENANT, c)) for c in blocked)
        with engine.connect() as conn:
            pending = conn.execute(select(outbox.c.id).where(outbox.c.published_at.is_(None))).first()
        return unblocked and pending is None

    wait_until(settled, "the unblocks, and every command published", processes)
    for process in [*workers, relay]:
        assert processes.stop(process) == 0
    # Then each stream holds each decision once: exactly what one engine, fed the same events at the recorded
    # instants, decides (a serial replay of the log into a fresh database reproduces it event for event)
    fresh = make_engine(make_pg_database())
    try:
        report = replay(ledger, Ledger(fresh), policy_books(settings), real_rules(settings))
    finally:
        fresh.dispose()
    assert report.ok, report.divergences
    assert report.streams == len(offsets) and report.decisions > 0
    # And the levels are the ones due today, one reminder or task per customer and level, one block, one unblock
    for c, days in offsets.items():
        decisions = [e for e in ledger.read_stream(TENANT, c) if e.event_type not in ERP_EVENTS]
        reached = [e.data["level"] for e in decisions if e.event_type == "escalation.level_reached"]
        assert reached == ([levels[days]] if levels[days] else []), c
        kinds = [e.event_type for e in decisions]
        assert kinds.count("credit.blocked") == kinds.count("credit.unblocked") == (1 if c in blocked else 0)
    assert ledger.verify().ok
    # And the ERP received each block and unblock once, by command id, blocks before unblocks, as the notifier did
    # each reminder
    received = commands.drain(commands.erp_queue)
    ids = [p.message_id for _, p, _ in received]
    assert len(ids) == len(set(ids)) == 2 * len(blocked)
    for c in blocked:
        assert [m.routing_key for m, _, b in received if b["customer_id"] == c] == [
            "erp.credit_block",
            "erp.credit_unblock",
        ]
    reminders = [p.message_id for _, p, _ in commands.drain(commands.notifier_queue)]
    with engine.connect() as conn:
        recorded = set(
            conn.execute(select(outbox.c.command_id).where(outbox.c.kind == "notifier.send_reminder")).scalars()
        )
    # (courtesy, two reminder-1, a formal notice; and for the two customers past the block, which tells nothing,
    # the formal notice they reached on the way and were never sent)
    assert sorted(reminders) == sorted(recorded) and len(reminders) == len(set(reminders)) == 6
