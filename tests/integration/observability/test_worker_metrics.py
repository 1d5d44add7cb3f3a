"""Each worker, started as `relance worker …` starts it with a metrics address, is scraped while it works.

Real PostgreSQL and RabbitMQ, the tests' SMTP server, a webhook receiver on loopback. The counters must move as the
work does (so many events published, so many applied), the gauges that need a query must follow the tables, and
readiness must follow the database of a PostgreSQL server the test stops and starts again.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import shared.observability.gauges as gauges
from services.escalation import worker as escalation
from services.notifier import worker as notifier
from services.relay import worker as relay
from services.webhook import worker as webhook
from shared.config import Settings, load_settings
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from tests.factories import customer, incoming, invoice
from tests.integration.ingest.test_worker import (  # noqa: F401 (rabbit, start_worker: fixtures)
    Rabbit,
    Worker,
    rabbit,
    start_worker,
)
from tests.integration.ingest.test_worker import invoice as erp_invoice
from tests.integration.notifier.test_worker import REMIND, Rig, make_rig  # noqa: F401 (make_rig: a fixture)
from tests.integration.relay.test_worker import Broker, blocked, broker, reminder, unblocked  # noqa: F401
from tests.integration.webhook.test_worker import Receiver, receiver, webhook_settings  # noqa: F401
from tests.servers import PrivatePostgres
from tests.smtp_server import free_port

pytestmark = pytest.mark.integration

DUE = "2026-10-30"  # a month before the tests run: customers are late


@pytest.fixture(autouse=True)
def quick_gauges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gauges refreshed every 0.2 s rather than 15 s, so a test sees them follow the tables."""
    monkeypatch.setattr(gauges, "REFRESH_SECONDS", 0.2)


# ---------------------------------------------------------------------------------------------------- scraping
def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def metric(base: str, name: str, **labels: str) -> float | None:
    """The sum of the samples ``name`` whose labels include ``labels``; None if the scrape has none."""
    status, body = get(base + "/metrics")
    assert status == 200
    values = [
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    return sum(values) if values else None


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def answers(base: str) -> bool:
    try:
        return get(base + "/livez")[0] in (200, 503)
    except OSError:
        return False


@contextmanager
def running(run: Callable[..., int], settings: Settings) -> Iterator[str]:
    """The worker's ``run(settings)`` on a thread, as `relance worker` runs it; yields its metrics URL."""
    assert settings.metrics_address is not None
    base = "http://" + settings.metrics_address
    stop = threading.Event()
    results: list[int] = []
    crashed: list[BaseException] = []

    def target() -> None:
        try:
            results.append(run(settings, stop=stop))
        except BaseException as exc:
            crashed.append(exc)
            raise

    thread = threading.Thread(target=target, name="worker-under-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: answers(base) or bool(crashed), "the metrics server", timeout=30)
        assert not crashed, crashed
        yield base
    finally:
        stop.set()
        thread.join(30)
    assert not crashed, crashed
    assert results == [0]


def address() -> str:
    return f"127.0.0.1:{free_port()}"


def rates(tmp_path: Path) -> Path:
    path = tmp_path / "rates.csv"
    path.write_text("2026-07-01,2.15\n", encoding="utf-8")  # the shipped table stops before the tests' semester
    return path


def late_customers(url: str, *ids: str) -> None:
    ledger = Ledger(make_engine(url))
    at = datetime(2026, 10, 1, 8, tzinfo=UTC)
    try:
        ledger.record(
            [
                incoming(ev.at(at), customer_id=c)
                for c in ids
                for ev in (
                    customer(f"Client {c}", emails=[f"ap@{c.lower()}.example"]),
                    invoice(f"I-{c}", "500.00", due_date=DUE),
                )
            ]
        )
    finally:
        ledger.engine.dispose()


# ---------------------------------------------------------------------------------------------------- the workers
def test_ingest_counts_each_kind_of_event_as_it_applies_them_and_the_dead_letters_by_reason(
    pg_url: str,
    rabbit: Rabbit,  # noqa: F811 (the fixture imported above)
    start_worker: Callable[..., Worker],  # noqa: F811
) -> None:
    # Given `relance worker ingest` with a metrics address
    where = address()
    worker = start_worker(pg_url, metrics_address=where, ingest_batch_size=10)
    base = f"http://{where}"
    wait_until(lambda: answers(base) and get(base + "/readyz")[0] == 200, "the worker to be ready")
    ready = orjson.loads(get(base + "/readyz")[1])
    assert ready["checks"] == {"database": "ok", "broker": "ok"}
    assert metric(base, "relance_worker_info", service="ingest") == 1

    # When 10 invoices are published, then 15 more, a duplicate and a message that is not JSON
    rabbit.publish([erp_invoice(f"E-{n}", f"C-{n % 4}", f"INV-{n}", "10.00") for n in range(10)])
    applied = {"service": "ingest", "kind": "invoice.issued", "outcome": "applied"}
    wait_until(lambda: metric(base, "relance_events_total", **applied) == 10, "10 events applied")
    rabbit.publish([erp_invoice(f"E-{n}", f"C-{n % 4}", f"INV-{n}", "10.00") for n in range(10, 25)])
    rabbit.publish([erp_invoice("E-3", "C-3", "INV-3", "10.00"), b"not json {"])

    # Then the counters followed: 25 applied, one duplicate, one rejected and dead-lettered as not JSON
    wait_until(lambda: metric(base, "relance_events_total", outcome="rejected") == 1, "the rejection")
    assert metric(base, "relance_events_total", **applied) == 25
    assert metric(base, "relance_events_total", kind="invoice.issued", outcome="duplicate") == 1
    assert metric(base, "relance_events_total", kind="unknown", outcome="rejected") == 1
    assert metric(base, "relance_dead_letters_total", service="ingest", reason="not_json") == 1
    batches = metric(base, "relance_batch_size_count", service="ingest")
    assert batches is not None and batches >= 3  # batches of at most 10
    assert metric(base, "relance_batch_size_sum", service="ingest") == 27
    assert metric(base, "relance_commit_seconds_count", service="ingest") == batches
    # And the queue's depth is read on the side, the heartbeat is recent, and every log line says who wrote it
    wait_until(lambda: metric(base, "relance_queue_depth", queue=rabbit.names.queue) == 0, "the queue depth")
    heartbeat = metric(base, "relance_heartbeat_timestamp_seconds", service="ingest")
    assert heartbeat is not None and abs(heartbeat - time.time()) < 10
    assert worker.stop() == 0
    started = worker.logged("ingest.worker_started")[0]
    assert (started["service"], started["pid"], started["host"]) == ("ingest", worker.process.pid, started["host"])
    assert started["version"] and started["host"]
    assert worker.logged("broker.connected")[0]["service"] == "ingest"


def test_escalation_counts_evaluations_and_decisions_and_follows_its_lag_behind_the_log(
    pg_url: str, tmp_path: Path
) -> None:
    # Given three late customers in the log
    late_customers(pg_url, "C-1", "C-2", "C-3")
    settings = load_settings(
        database_url=pg_url,
        rates_file=rates(tmp_path),
        metrics_address=address(),
        escalation_poll_ms=50,
        retry_max_seconds=0.2,
    )
    # When an escalation worker runs
    with running(escalation.run, settings) as base:
        # Then it evaluated each, recorded decisions, and caught up with the log
        wait_until(lambda: (metric(base, "relance_evaluations_total", outcome="ok") or 0) >= 3, "3 evaluations")
        assert metric(base, "relance_evaluations_total", outcome="failed") == 0
        decisions = metric(base, "relance_decisions_total")
        assert decisions is not None and decisions >= 3  # a reminder each, at least
        assert (metric(base, "relance_batch_size_sum", service="escalation") or 0) >= 3
        wait_until(lambda: metric(base, "relance_consumer_lag_events", service="escalation") == 0, "no lag")
        assert metric(base, "relance_timers_due") == 0
        assert metric(base, "relance_timers_overdue") == 0
        days = metric(base, "relance_rate_table_days_left", table="ecb")
        assert days is not None and days <= 31  # the file has no rate for January 2027
        assert get(base + "/readyz")[0] == 200
        # And when another customer's invoice arrives, the counter moves with it
        seen = metric(base, "relance_evaluations_total", outcome="ok") or 0
        late_customers(pg_url, "C-4")
        wait_until(lambda: (metric(base, "relance_evaluations_total", outcome="ok") or 0) > seen, "one more")


def test_the_relay_counts_the_commands_it_publishes_and_the_outbox_gauges_empty(
    pg_url: str,
    broker: Broker,  # noqa: F811 (the fixture imported above)
) -> None:
    # Given three commands in the outbox
    engine = make_engine(pg_url)
    Ledger(engine).record([blocked("C-1"), unblocked("C-1"), reminder("C-2")])
    settings = broker.settings(pg_url, metrics_address=address())
    # When a relay runs
    with running(relay.run, settings) as base:
        # Then it published them, and the outbox gauges say nothing is left
        wait_until(lambda: metric(base, "relance_commands_published_total", transport="amqp") == 3, "3 published")
        wait_until(lambda: metric(base, "relance_outbox_pending", transport="amqp") == 0, "an empty outbox")
        assert metric(base, "relance_outbox_oldest_age_seconds", transport="amqp") == 0
        assert metric(base, "relance_outbox_dead", transport="amqp") == 0
        assert orjson.loads(get(base + "/readyz")[1])["checks"]["broker"] == "ok"
        # And a new command is counted once published
        Ledger(engine).record([blocked("C-3")])
        wait_until(lambda: metric(base, "relance_commands_published_total", transport="amqp") == 4, "one more")
    assert len(broker.drain(broker.erp_queue)) == 3
    engine.dispose()


def test_the_notifier_counts_the_reminders_it_sends_and_times_each_smtp_transaction(
    make_rig: Callable[..., Rig],  # noqa: F811 (the fixture imported above)
) -> None:
    # Given two reminders waiting in the notifier's queue
    rig = make_rig(metrics_address=address(), allow_placeholder_sender=True)
    rig.customers("C-1", "C-2")
    commands = rig.decide(REMIND, "C-1", "C-2")
    assert len(commands) == 2 and rig.relay() == 2
    # When `relance worker notifier` runs
    with running(notifier.run, rig.settings) as base:
        # Then both were sent, each SMTP transaction timed, and the queue is read empty
        wait_until(lambda: metric(base, "relance_reminders_total", outcome="sent") == 2, "2 reminders sent")
        assert metric(base, "relance_smtp_seconds_count") == 2
        assert (metric(base, "relance_batch_size_sum", service="notifier") or 0) == 2
        wait_until(lambda: metric(base, "relance_queue_depth", queue=rig.settings.notifier_queue) == 0, "depth")
        assert get(base + "/readyz")[0] == 200
        # And a command published again is counted as skipped, not sent twice
        rig.republish_outbox()
        wait_until(lambda: metric(base, "relance_reminders_total", outcome="skipped") == 2, "2 skipped")
        assert metric(base, "relance_reminders_total", outcome="sent") == 2
    assert len(rig.sink.sessions) == 2  # two messages reached the SMTP server, no more


def test_the_webhook_counts_deliveries_and_retries(
    pg_url: str,
    receiver: Receiver,  # noqa: F811 (the fixture imported above)
) -> None:
    # Given three ERP commands, the receiver failing the first POST of one of them
    engine = make_engine(pg_url)
    Ledger(engine).record([blocked("C-1"), unblocked("C-1"), blocked("C-2")])
    receiver.answer = lambda command_id, earlier: (
        500 if command_id == "block-C-2-1" and not any(r.command_id == command_id for r in earlier) else 200
    )
    settings = webhook_settings(pg_url, receiver.url, metrics_address=address())
    # When a webhook worker runs
    with running(webhook.run, settings) as base:
        # Then each was delivered once, one after a retry
        wait_until(lambda: metric(base, "relance_webhook_deliveries_total", outcome="delivered") == 3, "3 delivered")
        assert metric(base, "relance_webhook_deliveries_total", outcome="retried") == 1
        assert metric(base, "relance_webhook_deliveries_total", outcome="dead") == 0
        assert metric(base, "relance_commands_published_total", transport="webhook") == 3
        wait_until(lambda: metric(base, "relance_outbox_pending", transport="webhook") == 0, "an empty outbox")
        assert orjson.loads(get(base + "/readyz")[1])["checks"] == {"database": "ok"}
    engine.dispose()


# ---------------------------------------------------------------------------------------------------- readiness
def test_readiness_follows_the_database_while_liveness_holds(private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    # Given an escalation worker on a PostgreSQL server of this test alone
    from shared.ledger.migrate import upgrade

    admin = create_engine(private_postgres.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE relance"))
    admin.dispose()
    url = make_url(private_postgres.admin_url).set(database="relance").render_as_string(hide_password=False)
    upgrade(url)
    settings = load_settings(
        database_url=url,
        rates_file=rates(tmp_path),
        metrics_address=address(),
        escalation_poll_ms=50,
        retry_max_seconds=0.5,
        liveness_seconds=3,
    )
    with running(escalation.run, settings) as base:
        wait_until(lambda: get(base + "/readyz")[0] == 200, "ready")
        # When the server stops
        private_postgres.stop()
        # Then the worker is not ready, saying why, and stays alive while it waits
        wait_until(lambda: get(base + "/readyz")[0] == 503, "not ready")
        body: dict[str, Any] = orjson.loads(get(base + "/readyz")[1])
        assert body["not_ready"] == ["database"] and body["checks"]["database"].startswith("unreachable: ")
        for _ in range(5):  # longer than the liveness limit
            assert get(base + "/livez")[0] == 200
            time.sleep(1)
        # And once the server is back, it is ready again
        private_postgres.start()
        wait_until(lambda: get(base + "/readyz")[0] == 200, "ready again")
        assert get(base + "/livez")[0] == 200
