"""Three ingest workers, one killed with SIGKILL mid-stream: nothing lost, nothing applied twice.

Given an external ERP (plain pika, not relance's publisher) that sends 20,000 v1 messages with duplicates,
out-of-order payments and invalid messages, and three ``relance worker ingest`` processes on real PostgreSQL and
RabbitMQ; when one worker is killed with ``kill -9`` while the log is part-way filled and a replacement starts; then
the log holds every valid event exactly once, every stream is gapless and its hash chain verifies, each customer's
balance per currency equals the one the simulator computed on its own, every invalid message sits in the
dead-letter queue with its rejection kind and a reason, and the ingest queue is empty once the workers have stopped.

The size is ``RELANCE_E2E_EVENTS`` (default 20000); ``RELANCE_E2E_TIMEOUT`` bounds each wait (default 240 s).
Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker
from sqlalchemy import Engine, create_engine, text

from shared.ledger.store import Ledger
from tests.e2e.erp_simulator import Scenario, generate, publish

if TYPE_CHECKING:
    from tests.servers import AmqpNames

pytestmark = pytest.mark.e2e

EVENTS = int(os.environ.get("RELANCE_E2E_EVENTS", "20000"))
TIMEOUT = float(os.environ.get("RELANCE_E2E_TIMEOUT", "240"))
WORKERS = 3


# ---------------------------------------------------------------------------------------------------- helpers
def _relance_executable() -> str:
    candidate = Path(sys.executable).with_name("relance")
    if candidate.exists():
        return str(candidate)
    pytest.fail(f"the relance console script is not installed next to {sys.executable} (pip install -e .)")


class Workers:
    """``relance worker ingest`` processes with the test's settings; each one logs (JSON) to its own file."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> int:
        index = len(self.processes)
        path = self.log_dir / f"worker-{index}.log"
        with path.open("wb") as out:
            process = subprocess.Popen(
                [_relance_executable(), "worker", "ingest"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        self.logs.append(path)
        return index

    def committed_batches(self, index: int) -> int:
        return self.logs[index].read_text(errors="replace").count("ingest.batch_committed")

    def check_alive(self) -> bool:
        """Raise if a worker exited other than by the test's kill -9; else False, so that a wait condition can read
        ``workers.check_alive() or ...``."""
        for index, process in enumerate(self.processes):
            if process.poll() is not None and process.returncode != -signal.SIGKILL:
                raise AssertionError(f"worker {index} exited early with {process.returncode}:\n{self.tail(index)}")
        return False

    def tail(self, index: int, lines: int = 25) -> str:
        content = self.logs[index].read_text(errors="replace").splitlines()
        return "\n".join(content[-lines:])

    def tails(self) -> str:
        return "\n".join(f"--- worker {i} ---\n{self.tail(i)}" for i in range(len(self.processes)))

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


class Broker:
    """The test's own view of the queues, through a connection of its own (pika is not thread-safe)."""

    def __init__(self, amqp_url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()

    def depth(self, queue: str) -> int | None:
        """Ready messages in the queue (unacked ones are not counted), or None if it does not exist."""
        try:
            return int(self.channel.queue_declare(queue, passive=True).method.message_count)
        except ChannelClosedByBroker:
            self.channel = self.connection.channel()
            return None

    def drain(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        messages: list[tuple[pika.BasicProperties, bytes]] = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((properties, body))

    def close(self) -> None:
        self.connection.close()


def _wait(what: str, condition: Callable[[], bool], describe: Callable[[], str], timeout: float = TIMEOUT) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {describe()}")
        time.sleep(0.2)
    return time.monotonic() - started


def _event_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM events")).scalar_one())


@pytest.fixture
def workers(tmp_path: Path, pg_url: str, amqp_url: str, amqp_names: AmqpNames) -> Iterator[Workers]:
    env = {
        **os.environ,
        "RELANCE_DATABASE_URL": pg_url,
        "RELANCE_AMQP_URL": amqp_url,
        "RELANCE_EVENTS_EXCHANGE": amqp_names.exchange,
        "RELANCE_INGEST_QUEUE": amqp_names.queue,
        "RELANCE_DEAD_LETTER_QUEUE": amqp_names.dead_letter_queue,
        "RELANCE_LOG_FORMAT": "json",
    }
    group = Workers(env, tmp_path)
    try:
        yield group
    finally:
        group.kill_all()


# ---------------------------------------------------------------------------------------------------- the test
def test_three_workers_and_a_kill_9_lose_and_duplicate_nothing(
    workers: Workers, pg_url: str, amqp_url: str, amqp_names: AmqpNames
) -> None:
    # Given: the ERP's messages and what must come of them, computed by the simulator alone.
    scenario = generate(EVENTS)
    expected = scenario.expected_events
    engine = create_engine(pg_url)
    broker = Broker(amqp_url)
    try:
        _run(scenario, expected, workers, engine, broker, amqp_url, amqp_names)
    except AssertionError:
        print(workers.tails())
        raise
    finally:
        broker.close()
        engine.dispose()


def _run(
    scenario: Scenario,
    expected: int,
    workers: Workers,
    engine: Engine,
    broker: Broker,
    amqp_url: str,
    names: AmqpNames,
) -> None:
    print(
        f"\nERP simulator: {scenario.published} messages ({len(scenario.invalid)} invalid), "
        f"{expected} events expected in the log, {len(scenario.balances)} non-zero balances"
    )
    # The workers declare the topology, as in a deployment; the ERP publishes once the queue is there.
    for _ in range(WORKERS):
        workers.start()
    _wait(
        "the workers to declare the ingest queue",
        lambda: workers.check_alive() or broker.depth(names.queue) is not None,
        lambda: "the queue does not exist",
        timeout=60,
    )

    # When: the ERP publishes while three workers consume, and one is killed part-way.
    started = time.monotonic()
    published: dict[str, Any] = {}

    def publish_all() -> None:
        try:
            publish(scenario.messages, amqp_url, names.exchange)
            published["seconds"] = time.monotonic() - started
        except BaseException as exc:
            published["error"] = exc

    publisher = threading.Thread(target=publish_all, name="erp-publisher")
    publisher.start()

    victim = 1
    _wait(
        "the log to be part-filled and the victim to have committed a batch",
        lambda: (
            workers.check_alive() or (_event_count(engine) >= expected // 4 and workers.committed_batches(victim) > 0)
        ),
        lambda: f"{_event_count(engine)} events in the log, victim batches {workers.committed_batches(victim)}",
    )
    workers.processes[victim].send_signal(signal.SIGKILL)
    workers.processes[victim].wait()
    at_kill = _event_count(engine)
    killed_after = time.monotonic() - started
    batches_before_kill = workers.committed_batches(victim)
    assert 0 < at_kill < expected, f"the kill must land mid-stream: {at_kill} of {expected} events were in the log"
    replacement = workers.start()
    print(
        f"kill -9 worker {victim} at {killed_after:.1f}s with {at_kill}/{expected} events in the log "
        f"(it had committed {batches_before_kill} batches); started worker {replacement}"
    )

    publisher.join(timeout=TIMEOUT)
    assert not publisher.is_alive(), "the publisher did not finish"
    if "error" in published:
        raise AssertionError(f"publishing failed: {published['error']!r}")

    first_wave_invalid = len(scenario.invalid) - len(scenario.late_messages)
    first_wave = _wait_drained(workers, engine, broker, names, expected, first_wave_invalid) - started
    # A re-issue of an invoice id with other content is a rejection only once the original is in the log.
    publish(scenario.late_messages, amqp_url, names.exchange)
    _wait_drained(workers, engine, broker, names, expected, len(scenario.invalid))
    print(
        f"published {len(scenario.messages)} messages in {published['seconds']:.1f}s; "
        f"all applied {first_wave:.1f}s after the first publish -> "
        f"{expected / first_wave:,.0f} events/s, {len(scenario.messages) / first_wave:,.0f} messages/s "
        f"with {WORKERS} workers (one killed and replaced)"
    )

    for index, process in enumerate(workers.processes):
        if index != victim:
            process.send_signal(signal.SIGTERM)
    for index, process in enumerate(workers.processes):
        if index != victim:
            code = process.wait(timeout=60)
            assert code == 0, f"worker {index} exited with {code} after SIGTERM:\n{workers.tail(index)}"

    # Then: with every consumer gone, an unacked message would be back in the queue: nothing is.
    assert broker.depth(names.queue) == 0, "messages are left in the ingest queue after the workers stopped"
    _assert_log(scenario, engine)
    _assert_dead_letters(scenario, broker.drain(names.dead_letter_queue))


def _wait_drained(
    workers: Workers, engine: Engine, broker: Broker, names: AmqpNames, expected: int, dead: int
) -> float:
    """Ingest queue empty, every expected event in the log, the dead letters in; and still so a moment later.

    Returns the monotonic time at which that state was first seen.

    ``message_count`` leaves out delivered-but-unacked messages, so this also waits for the counts to stay put;
    the final check after the workers stopped proves nothing was left unacked.
    """
    stable: list[tuple[float, tuple[int | None, int, int | None]]] = []

    def snapshot() -> tuple[int | None, int, int | None]:
        return (broker.depth(names.queue), _event_count(engine), broker.depth(names.dead_letter_queue))

    def done() -> bool:
        workers.check_alive()
        now = snapshot()
        queue, events, dlq = now
        if queue == 0 and events >= expected and dlq is not None and dlq >= dead:
            if stable and stable[0][1] != now:
                stable.clear()
            stable.append((time.monotonic(), now))
        else:
            stable.clear()
        return len(stable) >= 6

    def describe() -> str:
        queue, events, dlq = snapshot()
        return f"queue {queue} ready, {events}/{expected} events in the log, {dlq}/{dead} dead letters"

    _wait("the queue to drain", done, describe)
    return stable[0][0]


def _assert_log(scenario: Scenario, engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT tenant, event_id FROM events")).all()
        streams = conn.execute(
            text(
                "SELECT tenant, customer_id, count(*), min(version), max(version), count(DISTINCT version) "
                "FROM events GROUP BY tenant, customer_id"
            )
        ).all()
    counts = collections.Counter((tenant, event_id) for tenant, event_id in rows)
    twice = [key for key, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} events are in the log more than once, e.g. {twice[:5]}"
    logged = set(counts)
    missing = scenario.required - logged
    assert not missing, f"{len(missing)} valid events are missing from the log, e.g. {sorted(missing)[:5]}"
    alternatives = set().union(*scenario.alternatives) if scenario.alternatives else set()
    not_one = [sorted(group) for group in scenario.alternatives if len(group & logged) != 1]
    assert not not_one, f"{len(not_one)} re-sent invoices are not in the log exactly once, e.g. {not_one[:3]}"
    invalid_ids = {invalid.event_id for invalid in scenario.invalid if invalid.event_id}
    leaked = {event_id for _, event_id in logged} & invalid_ids
    assert not leaked, f"events of invalid messages reached the log: {sorted(leaked)[:5]}"
    extra = logged - scenario.required - alternatives
    assert not extra, f"{len(extra)} unexpected events in the log, e.g. {sorted(extra)[:5]}"
    assert len(rows) == scenario.expected_events

    gaps = [s for s in streams if not (s[3] == 1 and s[4] == s[2] == s[5])]
    assert not gaps, f"streams with a gap or a repeated version (tenant, customer, n, min, max, distinct): {gaps[:5]}"

    ledger = Ledger(engine)
    report = ledger.verify()
    assert report.ok, f"relance verify found {len(report.problems)} problems: {report.problems[:5]}"
    assert report.events == scenario.expected_events

    projected: dict[tuple[str, str, str], Decimal] = {}
    replayed: dict[tuple[str, str, str], Decimal] = {}
    for tenant, customer in ledger.streams():
        for currency, amount in ledger.state(tenant, customer).balances().items():
            if amount:
                projected[(tenant, customer, currency)] = amount
        for currency, amount in ledger.fold(tenant, customer).balances().items():
            if amount:
                replayed[(tenant, customer, currency)] = amount
    for name, balances in (("projected", projected), ("replayed from the log", replayed)):
        wrong = {
            key: (balances.get(key), scenario.balances.get(key))
            for key in set(balances) | set(scenario.balances)
            if balances.get(key) != scenario.balances.get(key)
        }
        assert not wrong, f"{len(wrong)} {name} balances differ (relance, expected): {sorted(wrong.items())[:5]}"
    print(
        f"log: {len(rows)} events in {len(streams)} gapless streams, hash chains verified, "
        f"{len(projected)} balances equal to the simulator's"
    )


def _assert_dead_letters(scenario: Scenario, dead: list[tuple[pika.BasicProperties, bytes]]) -> None:
    """Every invalid message is dead-lettered with its kind and a reason; nothing valid is.

    At-least-once: a worker killed between publishing a dead letter and acking its batch gets the batch redelivered
    and dead-letters the same message again, so a body may appear more than once; each copy must carry the same kind.
    """
    expected = {invalid.body: invalid for invalid in scenario.invalid}
    seen: collections.Counter[bytes] = collections.Counter()
    for properties, body in dead:
        invalid = expected.get(body)
        assert invalid is not None, f"a message that should have been applied was dead-lettered: {body[:200]!r}"
        headers = properties.headers or {}
        kind = _header(headers, "x-relance-kind")
        reason = _header(headers, "x-relance-reason")
        assert kind == invalid.kind, f"{invalid.key}: rejected as {kind!r}, expected {invalid.kind!r} ({reason})"
        assert reason and reason.strip(), f"{invalid.key}: dead-lettered without a reason"
        if invalid.event_id is not None:
            event_id = _header(headers, "x-relance-event-id")
            assert event_id == invalid.event_id, f"{invalid.key}: x-relance-event-id is {event_id!r}"
        seen[body] += 1
    missing = [invalid.key for body, invalid in expected.items() if body not in seen]
    assert not missing, f"{len(missing)} invalid messages are not in the dead-letter queue, e.g. {missing[:5]}"
    copies = sum(seen.values()) - len(seen)
    by_kind = collections.Counter(invalid.kind for invalid in scenario.invalid)
    print(
        f"dead letters: {len(seen)} invalid messages, each with its kind and reason "
        f"({', '.join(f'{k} {n}' for k, n in sorted(by_kind.items()))}); "
        f"{copies} extra copies from redelivery after the kill"
    )


def _header(headers: dict[str, Any], name: str) -> str | None:
    value = headers.get(name)
    return value.decode() if isinstance(value, bytes) else value
