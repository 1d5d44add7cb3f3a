"""The ingest worker against real RabbitMQ and PostgreSQL, run as `relance worker ingest` subprocesses.

Messages are published with plain pika, as an ERP would, never with relance's own publisher.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pika
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from services.ingest.service import Delivery, Ingestor
from shared.ledger.db import make_engine
from shared.ledger.schema import events
from shared.ledger.store import Ledger

pytestmark = pytest.mark.integration

TENANT = "acme-fr"
ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------------------------------------- helpers
def event(event_id: str, event_type: str, customer: str, data: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "tenant": TENANT,
        "customer_id": customer,
        "occurred_at": "2026-11-02T09:15:00Z",
        "data": data,
        **envelope,
    }


def invoice(event_id: str, customer: str, invoice_id: str, amount: str, currency: str = "EUR") -> dict[str, Any]:
    data = {
        "invoice_id": invoice_id,
        "number": f"F-{invoice_id}",
        "issue_date": "2026-10-01",
        "due_date": "2026-10-31",
        "currency": currency,
        "amount": amount,
    }
    return event(event_id, "invoice.issued", customer, data)


def payment(
    event_id: str, customer: str, payment_id: str, amount: str, allocations: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {"payment_id": payment_id, "amount": amount, "currency": "EUR", "received_on": "2026-11-05"}
    if allocations:
        data["allocations"] = allocations
    return event(event_id, "payment.received", customer, data)


def body(message: dict[str, Any] | bytes) -> bytes:
    return message if isinstance(message, bytes) else json.dumps(message).encode()


class Rabbit:
    """Plain pika, as an ERP would use it: declares the same topology and publishes with confirms."""

    def __init__(self, url: str, names: Any) -> None:
        self.names = names
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.exchange_declare(names.exchange, exchange_type="topic", durable=True)
        for queue in (names.queue, names.dead_letter_queue):
            self.channel.queue_declare(queue, durable=True)
        self.channel.queue_bind(names.queue, names.exchange, routing_key="#")

    def publish(self, messages: list[dict[str, Any] | bytes]) -> None:
        for message in messages:
            routing_key = message.get("event_type", "unknown") if isinstance(message, dict) else "unknown"
            self.channel.basic_publish(
                self.names.exchange,
                str(routing_key),
                body(message),
                pika.BasicProperties(content_type="application/json", delivery_mode=2),
                mandatory=True,
            )

    def ready(self, queue: str) -> int:
        """Messages waiting in the queue (unacked ones held by a consumer are not counted)."""
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def drain(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        messages: list[tuple[pika.BasicProperties, bytes]] = []
        while True:
            method, properties, payload = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((properties, payload))

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def rabbit(amqp_url: str, amqp_names: Any) -> Iterator[Rabbit]:
    client = Rabbit(amqp_url, amqp_names)
    yield client
    client.close()


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def lines(self) -> list[dict[str, Any]]:
        result = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                result.append(json.loads(line))
            except ValueError:
                result.append({"event": "raw", "text": line})
        return result

    def logged(self, event_name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event_name]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def start_worker(tmp_path: Path, amqp_url: str, amqp_names: Any) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(database_url: str, **settings: Any) -> Worker:
        env = {
            **os.environ,
            "RELANCE_DATABASE_URL": database_url,
            "RELANCE_AMQP_URL": amqp_url,
            "RELANCE_EVENTS_EXCHANGE": amqp_names.exchange,
            "RELANCE_INGEST_QUEUE": amqp_names.queue,
            "RELANCE_DEAD_LETTER_QUEUE": amqp_names.dead_letter_queue,
            "RELANCE_LOG_FORMAT": "json",
            "RELANCE_INGEST_BATCH_MS": "50",
            "RELANCE_RETRY_MAX_SECONDS": "1",
            **{f"RELANCE_{key.upper()}": str(value) for key, value in settings.items()},
        }
        log = tmp_path / f"worker-{len(started) + 1}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker", "ingest"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        worker = Worker(process, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


def wait_until(condition: Callable[[], bool], what: str, workers: list[Worker], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for worker in workers:
            if worker.process.poll() is not None:
                pytest.fail(
                    f"worker exited ({worker.process.returncode}) waiting for {what}:\n{worker.log.read_text()}"
                )
        time.sleep(0.1)
    logs = "\n".join(worker.log.read_text()[-4000:] for worker in workers)
    pytest.fail(f"timed out waiting for {what}; worker logs:\n{logs}")


def event_count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())
    except Exception:
        return -1  # the database is unreachable on purpose in some tests
    finally:
        engine.dispose()


def event_ids(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(select(events.c.event_id))]
    engine.dispose()
    return ids


# ---------------------------------------------------------------------------------------------------- tests
def test_valid_events_land_once_and_every_invalid_message_is_dead_lettered_with_its_reason(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker]
) -> None:
    # Given a queue holding valid events, duplicates, out-of-order payments and every kind of invalid message
    first_invoice = invoice("E-1", "C-1", "INV-1", "1000.00")
    valid: list[dict[str, Any] | bytes] = [
        event("E-0", "customer.upserted", "C-1", {"name": "Dupont SA", "emails": ["ap@dupont.example"]}),
        first_invoice,
        payment("E-2", "C-1", "P-1", "400.00", [{"invoice_id": "INV-1", "amount": "400.00"}]),
        first_invoice,  # redelivered by the ERP: same event_id
        payment("E-3", "C-2", "P-2", "250.00"),  # before its invoice
        invoice("E-4", "C-2", "INV-2", "1000.00"),
        invoice("E-5", "C-1", "INV-1", "1000.00"),  # same invoice, same content, new event_id: a duplicate
    ]
    float_amount = invoice("E-F", "C-3", "INV-F", "1.00")
    float_amount["data"]["amount"] = 1000.5
    invalid: dict[str, dict[str, Any] | bytes] = {
        "not_json": b"this is not json {",
        "schema": event("E-S", "invoice.issued", "C-3", {"invoice_id": "INV-S"}),  # data incomplete
        "unknown_event_type": event("E-U", "invoice.teleported", "C-3", {}),
        "oversize": body({**invoice("E-BIG", "C-3", "INV-BIG", "10.00"), "padding": "p" * 3000}),
        "float": float_amount,
        "business_rule": invoice("E-6", "C-1", "INV-1", "999.00"),  # INV-1 again with another amount
    }
    bulk: list[dict[str, Any] | bytes] = []
    expected_balance = {"C-1": Decimal("600.00"), "C-2": Decimal("750.00")}
    for n in range(40):
        customer = f"B-{n % 10}"
        bulk.append(invoice(f"BI-{n}", customer, f"BINV-{n}", f"{100 + n}.50"))
        bulk.append(payment(f"BP-{n}", customer, f"BPAY-{n}", "50.25"))
        expected_balance[customer] = (
            expected_balance.get(customer, Decimal(0)) + Decimal(f"{100 + n}.50") - Decimal("50.25")
        )
    bulk += bulk[:10]  # duplicates arriving late
    rabbit.publish(valid + list(invalid.values()) + bulk)

    # When one worker drains the queue
    worker = start_worker(pg_url, max_message_bytes=2048, ingest_batch_size=25)
    expected_events = 5 + 80
    wait_until(
        lambda: event_count(pg_url) == expected_events and rabbit.ready(rabbit.names.dead_letter_queue) == len(invalid),
        "all events applied and all rejections dead-lettered",
        [worker],
    )
    assert worker.stop() == 0

    # Then nothing is left in the queue, not even unacked (a stopped consumer's unacked messages come back)
    assert rabbit.ready(rabbit.names.queue) == 0
    # every valid event is in the log exactly once, streams are gapless and balances are the expected fold
    ids = event_ids(pg_url)
    bulk_ids = {f"BI-{n}" for n in range(40)} | {f"BP-{n}" for n in range(40)}
    # E-5 repeats E-1's content under another event_id: a duplicate, not appended
    assert sorted(ids) == sorted({"E-0", "E-1", "E-2", "E-3", "E-4"} | bulk_ids)
    ledger = Ledger(make_engine(pg_url))
    for customer, balance in expected_balance.items():
        stream = ledger.read_stream(TENANT, customer)
        assert [e.version for e in stream] == list(range(1, len(stream) + 1))
        assert ledger.state(TENANT, customer).balances() == {"EUR": balance}, customer
    assert ledger.verify().ok
    ledger.engine.dispose()
    # and each invalid message sits in the dead-letter queue, unchanged, with its kind and a reason
    dead = rabbit.drain(rabbit.names.dead_letter_queue)
    by_kind: dict[str, list[tuple[pika.BasicProperties, bytes]]] = {}
    for properties, payload in dead:
        by_kind.setdefault(properties.headers["x-relance-kind"], []).append((properties, payload))
    assert sorted(by_kind) == ["business_rule", "not_json", "oversize", "schema", "unknown_event_type"]
    assert len(by_kind["schema"]) == 2
    assert {payload for _, payload in by_kind["schema"]} == {body(invalid["schema"]), body(invalid["float"])}
    assert by_kind["not_json"][0][1] == b"this is not json {"
    for properties, _ in dead:
        headers = properties.headers
        assert headers["x-relance-reason"]
        assert headers["x-relance-rejected-at"]
        assert "x-relance-original-routing-key" in headers
        assert properties.delivery_mode == 2
    rule_properties = by_kind["business_rule"][0][0]
    assert "INV-1" in rule_properties.headers["x-relance-reason"]
    assert rule_properties.headers["x-relance-event-id"] == "E-6"
    assert rule_properties.headers["x-relance-tenant"] == TENANT
    assert rule_properties.headers["x-relance-customer"] == "C-1"
    assert rule_properties.headers["x-relance-original-routing-key"] == "invoice.issued"
    float_reason = next(p.headers["x-relance-reason"] for p, b in by_kind["schema"] if b == body(invalid["float"]))
    assert "1000.5" in float_reason
    assert "2048" in by_kind["oversize"][0][0].headers["x-relance-reason"]
    # and the worker said what it did, one line per batch
    committed = worker.logged("ingest.batch_committed")
    assert sum(line["size"] for line in committed) == len(valid) + len(invalid) + len(bulk)
    assert sum(line["applied"] for line in committed) == expected_events
    assert sum(line["rejected"] for line in committed) == len(invalid)
    assert max(line["size"] for line in committed) <= 25
    assert {line["kind"] for line in worker.logged("ingest.dead_lettered")} == set(by_kind)
    assert all(
        line.get("event_id") == "E-6"
        for line in worker.logged("ingest.dead_lettered")
        if line["kind"] == "business_rule"
    )


def test_a_worker_refuses_to_start_on_a_database_without_schema(
    tmp_path: Path, rabbit: Rabbit, start_worker: Callable[..., Worker]
) -> None:
    # Given an empty database
    worker = start_worker(f"sqlite:///{tmp_path / 'empty.db'}")
    # When the worker starts, Then it stops at once and says what to run
    assert worker.process.wait(30) != 0
    assert "relance db upgrade" in worker.log.read_text()


@pytest.fixture
def pg_switch(pg_url: str) -> Iterator[Callable[[bool], None]]:
    """Turn connections to the test database off (and kill those open) or on, without touching the server."""
    name = make_url(pg_url).database
    admin = create_engine(make_url(pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT")

    def switch(available: bool) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(available).lower()}'))
            if not available:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": name},
                )

    yield switch
    switch(True)
    admin.dispose()


def test_while_the_database_is_down_nothing_is_acked_and_the_batch_is_applied_once_it_is_back(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker], pg_switch: Callable[[bool], None]
) -> None:
    # Given a worker that has applied a first event
    worker = start_worker(pg_url)
    rabbit.publish([invoice("E-1", "C-1", "INV-1", "100.00")])
    wait_until(lambda: event_count(pg_url) == 1, "the first event", [worker])

    # When the database becomes unavailable and more events arrive
    pg_switch(False)
    rabbit.publish([invoice(f"E-{n}", "C-1", f"INV-{n}", "10.00") for n in range(2, 12)])
    wait_until(lambda: len(worker.logged("database.unavailable")) >= 2, "retries with backoff", [worker])

    # Then the worker holds them unacked, retrying, and applies them once the database is back
    assert rabbit.ready(rabbit.names.queue) == 0  # delivered to the worker, neither acked nor lost
    pg_switch(True)
    wait_until(lambda: event_count(pg_url) == 11, "the held batch applied", [worker])
    assert worker.stop() == 0
    assert rabbit.ready(rabbit.names.queue) == 0
    assert rabbit.ready(rabbit.names.dead_letter_queue) == 0
    assert sorted(event_ids(pg_url)) == sorted(f"E-{n}" for n in range(1, 12))
    assert worker.logged("database.available")


def test_messages_held_during_an_outage_were_not_acked(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker], pg_switch: Callable[[bool], None]
) -> None:
    # Given a worker retrying a batch against an unavailable database
    worker = start_worker(pg_url)
    wait_until(lambda: bool(worker.logged("broker.connected")), "the worker to consume", [worker])
    pg_switch(False)
    rabbit.publish([invoice(f"E-{n}", "C-1", f"INV-{n}", "10.00") for n in range(10)])
    wait_until(lambda: bool(worker.logged("database.unavailable")), "a failed attempt", [worker])

    # When the worker dies without a chance to clean up
    worker.kill()

    # Then every message is back in the queue: none had been acked
    wait_until(lambda: rabbit.ready(rabbit.names.queue) == 10, "the messages back in the queue", [])
    # and a new worker applies them once the database is back
    pg_switch(True)
    second = start_worker(pg_url)
    wait_until(lambda: event_count(pg_url) == 10, "the redelivered batch applied", [second])
    assert second.stop() == 0
    assert rabbit.ready(rabbit.names.queue) == 0


def test_sigterm_while_the_database_is_down_stops_promptly_and_leaves_the_batch_for_later(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker], pg_switch: Callable[[bool], None]
) -> None:
    worker = start_worker(pg_url, retry_max_seconds=30)
    wait_until(lambda: bool(worker.logged("broker.connected")), "the worker to consume", [worker])
    pg_switch(False)
    rabbit.publish([invoice(f"E-{n}", "C-1", f"INV-{n}", "10.00") for n in range(5)])
    wait_until(lambda: bool(worker.logged("database.unavailable")), "a failed attempt", [worker])

    started = time.monotonic()
    assert worker.stop(timeout=15) == 0
    assert time.monotonic() - started < 10
    assert worker.logged("ingest.stopped_with_unapplied_batch")
    wait_until(lambda: rabbit.ready(rabbit.names.queue) == 5, "the messages back in the queue", [])


def test_three_workers_side_by_side_with_one_killed_midway_lose_and_duplicate_nothing(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker]
) -> None:
    # Given three workers sharing the queue, small batches so they interleave on the same customers
    workers = [start_worker(pg_url, ingest_batch_size=20, ingest_prefetch=40) for _ in range(3)]
    for worker in workers:

        def consuming(w: Worker = worker) -> bool:
            return bool(w.logged("broker.connected"))

        wait_until(consuming, "workers to consume", workers)
    expected: dict[str, Decimal] = {}
    messages: list[dict[str, Any] | bytes] = []
    for n in range(3000):
        customer = f"K-{n % 25}"
        if n % 3 == 2:
            messages.append(payment(f"P-{n}", customer, f"PAY-{n}", "5.00"))
            expected[customer] = expected.get(customer, Decimal(0)) - Decimal("5.00")
        else:
            messages.append(invoice(f"I-{n}", customer, f"INV-{n}", "20.00"))
            expected[customer] = expected.get(customer, Decimal(0)) + Decimal("20.00")
    messages += messages[::7]  # duplicates
    rabbit.publish(messages)

    # When one of them is killed with SIGKILL in the middle of the work
    wait_until(lambda: event_count(pg_url) >= 600, "work under way", workers)
    workers[0].kill()
    survivors = workers[1:]
    wait_until(lambda: event_count(pg_url) == 3000, "all events applied", survivors, timeout=120)
    for worker in survivors:
        assert worker.stop() == 0

    # Then every event is in the log exactly once, streams are gapless, balances are the fold
    ids = event_ids(pg_url)
    assert len(ids) == len(set(ids)) == 3000
    assert rabbit.ready(rabbit.names.queue) == 0
    assert rabbit.ready(rabbit.names.dead_letter_queue) == 0
    ledger = Ledger(make_engine(pg_url))
    for customer, balance in expected.items():
        stream = ledger.read_stream(TENANT, customer)
        assert [e.version for e in stream] == list(range(1, len(stream) + 1))
        assert ledger.state(TENANT, customer).balances() == {"EUR": balance}
    assert ledger.verify().ok
    ledger.engine.dispose()


class FlakyProxy:
    """A TCP proxy in front of RabbitMQ whose connections the test can cut, like a network failure."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_a_lost_broker_connection_is_reopened_and_nothing_is_lost_or_applied_twice(
    pg_url: str, amqp_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker]
) -> None:
    # Given a worker whose connection to RabbitMQ goes through a proxy we can cut
    broker = pika.URLParameters(amqp_url)
    proxy = FlakyProxy(broker.host, broker.port)
    via_proxy = f"amqp://{broker.credentials.username}:{broker.credentials.password}@127.0.0.1:{proxy.port}/%2F"
    try:
        worker = start_worker(pg_url, amqp_url=via_proxy, ingest_batch_size=50)
        rabbit.publish([invoice(f"A-{n}", f"C-{n % 7}", f"INV-A-{n}", "10.00") for n in range(2000)])
        # When the connection is cut while the worker is busy, twice
        wait_until(lambda: event_count(pg_url) >= 300, "work under way", [worker])
        proxy.cut()
        wait_until(lambda: len(worker.logged("broker.connected")) >= 2, "a reconnection", [worker])
        proxy.cut()
        rabbit.publish([invoice(f"B-{n}", f"C-{n % 7}", f"INV-B-{n}", "10.00") for n in range(100)])
        # Then it reconnects and applies everything exactly once
        wait_until(lambda: event_count(pg_url) == 2100, "every event applied", [worker], timeout=120)
        assert worker.stop() == 0
    finally:
        proxy.close()
    assert worker.logged("broker.unavailable")
    ids = event_ids(pg_url)
    assert len(ids) == len(set(ids)) == 2100
    assert rabbit.ready(rabbit.names.queue) == 0
    assert rabbit.ready(rabbit.names.dead_letter_queue) == 0


def test_sigterm_finishes_the_batch_in_hand_acks_it_and_returns_the_rest(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker]
) -> None:
    # Given a worker busy with a long queue (published first, so the worker cannot keep pace with the publisher)
    rabbit.publish([invoice(f"E-{n}", f"C-{n % 13}", f"INV-{n}", "10.00") for n in range(5000)])
    worker = start_worker(pg_url, ingest_batch_size=100, ingest_prefetch=300)
    wait_until(lambda: event_count(pg_url) >= 500, "work under way", [worker])

    # When it is asked to stop
    assert worker.stop(timeout=30) == 0

    # Then every message it applied was acked, and every other one is back in the queue: none is both
    applied = event_count(pg_url)
    assert applied < 5000
    wait_until(lambda: applied + rabbit.ready(rabbit.names.queue) == 5000, "the unapplied messages requeued", [])
    assert worker.logged("ingest.stop_requested")
    assert worker.logged("ingest.worker_stopped")[0]["applied"] == applied


# ---------------------------------------------------------------------------------------------------- refusals
MAX_INVOICE = "999999999999999.99"  # the largest amount the contract accepts in EUR


def test_a_batch_the_database_refuses_for_its_data_is_dead_lettered_and_the_messages_behind_it_are_applied(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker]
) -> None:
    # Given a customer whose balance is a thousand of the largest invoices: numeric(24,6) holds no more
    ledger = Ledger(make_engine(pg_url))
    big = [
        invoice(f"BIG-{n}", "C-BIG", f"INV-BIG-{n}", MAX_INVOICE)
        for n in range(1000)  # 999,999,999,999,999,990.00 in all
    ]
    assert Ingestor(ledger).process([Delivery(body=body(m)) for m in big]).applied == 1000
    # and a queue whose first batches hold nothing but invoices that would overflow it, then valid events
    overflowing: list[dict[str, Any] | bytes] = [
        invoice(f"OVER-{n}", "C-BIG", f"INV-OVER-{n}", "100.00") for n in range(30)
    ]
    valid: list[dict[str, Any] | bytes] = [invoice(f"OK-{n}", f"C-{n % 4}", f"INV-OK-{n}", "10.00") for n in range(20)]
    rabbit.publish(overflowing + valid)

    # When a worker drains it, ten messages per batch
    worker = start_worker(pg_url, ingest_batch_size=10)
    wait_until(
        lambda: rabbit.ready(rabbit.names.dead_letter_queue) == 30 and event_count(pg_url) == 1020,
        "the overflowing invoices dead-lettered and the valid ones applied",
        [worker],
    )
    assert worker.stop() == 0

    # Then every culprit is in the dead letters as a storage refusal naming the SQLSTATE and the column
    dead = rabbit.drain(rabbit.names.dead_letter_queue)
    assert sorted(p.headers["x-relance-event-id"] for p, _ in dead) == sorted(f"OVER-{n}" for n in range(30))
    for properties, _ in dead:
        assert properties.headers["x-relance-kind"] == "storage"
        reason = properties.headers["x-relance-reason"]
        assert "SQLSTATE 22003" in reason and "customer_balances.balance" in reason, reason
    # the valid events behind them are applied, the big customer's stream is untouched, nothing waits in the queue
    assert rabbit.ready(rabbit.names.queue) == 0
    assert set(event_ids(pg_url)) >= {f"OK-{n}" for n in range(20)}
    assert len(ledger.read_stream(TENANT, "C-BIG")) == 1000
    assert not worker.logged("database.unavailable")
    assert ledger.verify().ok
    ledger.engine.dispose()


def test_a_database_out_of_step_with_the_code_keeps_the_batch_and_says_a_person_must_act(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker]
) -> None:
    # Given a worker running on a database where a table it writes has gone (a schema out of step)
    worker = start_worker(pg_url)
    wait_until(lambda: bool(worker.logged("broker.connected")), "the worker to consume", [worker])
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text("ALTER TABLE customer_balances RENAME TO customer_balances_away"))

    # When events arrive
    rabbit.publish([invoice(f"E-{n}", "C-1", f"INV-{n}", "10.00") for n in range(5)])

    # Then none is dead-lettered: the worker says, as an error, that a person must fix the database, and retries
    wait_until(lambda: len(worker.logged("ingest.ledger_needs_attention")) >= 2, "retries", [worker])
    line = worker.logged("ingest.ledger_needs_attention")[0]
    assert line["level"] == "error" and "42P01" in line["error"] and "customer_balances" in line["error"]
    assert rabbit.ready(rabbit.names.dead_letter_queue) == 0
    # and once the schema is put right, the held batch is applied
    with admin.begin() as conn:
        conn.execute(text("ALTER TABLE customer_balances_away RENAME TO customer_balances"))
    admin.dispose()
    wait_until(lambda: event_count(pg_url) == 5, "the held batch applied", [worker])
    assert worker.stop() == 0
    assert rabbit.ready(rabbit.names.dead_letter_queue) == 0


def test_a_database_server_that_goes_down_mid_run_is_waited_for_and_nothing_is_dead_lettered(
    private_postgres: Any, rabbit: Rabbit, start_worker: Callable[..., Worker]
) -> None:
    # Given a worker on a PostgreSQL server of this test alone, with a first event applied
    from shared.ledger.migrate import upgrade

    admin = create_engine(private_postgres.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE relance"))
    admin.dispose()
    url = make_url(private_postgres.admin_url).set(database="relance").render_as_string(hide_password=False)
    upgrade(url)
    worker = start_worker(url)
    rabbit.publish([invoice("E-0", "C-1", "INV-0", "10.00")])
    wait_until(lambda: event_count(url) == 1, "the first event", [worker])

    # When the server stops (connections refused) while events keep arriving
    private_postgres.stop()
    rabbit.publish([invoice(f"E-{n}", "C-1", f"INV-{n}", "10.00") for n in range(1, 11)])
    wait_until(lambda: len(worker.logged("database.unavailable")) >= 2, "retries with backoff", [worker])

    # Then it holds them, and applies them once the server is back; nothing is dead-lettered
    assert rabbit.ready(rabbit.names.queue) == 0
    private_postgres.start()
    wait_until(lambda: event_count(url) == 11, "the held batch applied", [worker])
    assert worker.stop() == 0
    assert rabbit.ready(rabbit.names.dead_letter_queue) == 0
    assert not worker.logged("ingest.ledger_needs_attention")


def test_an_event_id_reused_for_another_invoice_is_dead_lettered_across_batches_and_within_one(
    pg_url: str, rabbit: Rabbit, start_worker: Callable[..., Worker]
) -> None:
    # Given an invoice applied under event_id E-1
    worker = start_worker(pg_url)
    rabbit.publish([invoice("E-1", "C-1", "INV-1", "100.00")])
    wait_until(lambda: event_count(pg_url) == 1, "the first invoice", [worker])
    # When the ERP sends it again unchanged, then a second invoice under the same id, then, in one batch, a new
    # event and another reuse of its id
    rabbit.publish(
        [
            invoice("E-1", "C-1", "INV-1", "100.00"),
            invoice("E-1", "C-1", "INV-2", "300.00"),
            invoice("E-2", "C-2", "INV-3", "50.00"),
            invoice("E-2", "C-1", "INV-4", "50.00"),
        ]
    )
    wait_until(lambda: rabbit.ready(rabbit.names.dead_letter_queue) == 2, "the reuses dead-lettered", [worker])
    assert worker.stop() == 0
    # Then the redelivery was a duplicate, the first E-2 applied, and each reuse is in the dead letters with the id
    assert sorted(event_ids(pg_url)) == ["E-1", "E-2"]
    dead = rabbit.drain(rabbit.names.dead_letter_queue)
    headers = sorted((p.headers for p, _ in dead), key=lambda h: str(h["x-relance-event-id"]))
    assert [(h["x-relance-event-id"], h["x-relance-kind"]) for h in headers] == [
        ("E-1", "business_rule"),
        ("E-2", "business_rule"),
    ]
    assert "event_id E-1 is already used by another event" in headers[0]["x-relance-reason"]
    assert "data.amount" in headers[0]["x-relance-reason"] and "customer_id" in headers[1]["x-relance-reason"]
    assert sum(line["duplicates"] for line in worker.logged("ingest.batch_committed")) == 1
