"""End to end latency: ERP events offered at a fixed rate, from their publish to their row in the log.

    python -m tests.benchmarks.bench_e2e [--rates 1000,2000] [--seconds 20] [--customers 2000]

For each rate, ``--seconds`` of ``invoice.issued`` events (v1 envelope, ``--customers`` customers) are offered at that
rate to the events exchange by a pipelined publisher with confirms (persistent messages, durable queues), each
stamped with the wall clock just before its publish:

- **relance**: a ``relance worker ingest`` process on a fresh database (``synchronous_commit`` on) consumes them;
  an event's latency is its row's ``recorded_at`` (stamped by the ingest batch that wrote it, on the same machine's
  clock, a few milliseconds before that batch's commit) less its publish time.
- **baseline**: a raw pika consumer process on a queue of its own, with the same prefetch, acking each message on
  receipt; latency is its receipt time less the publish time.

Reported: ``e2e.p99@<rate>`` in milliseconds, judged against p99 < 1,000 ms at 1,000 events/s (and only reported
at the other rates), with p50 and the baseline's figures in the readable lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pika
import psycopg

from services.ingest.topology import declare_topology
from shared.broker.amqp import connect
from shared.broker.confirms import ConfirmingPublisher, Outgoing
from shared.config import load_settings
from tests.benchmarks import common

TARGET_MS = 1000.0


def events(count: int, customers: int, prefix: str) -> list[tuple[str, bytes]]:
    """(event_id, body) of ``count`` invoices spread over ``customers`` customers."""
    made = []
    for n in range(count):
        event_id = f"{prefix}-{n}"
        body = {
            "event_id": event_id,
            "event_type": "invoice.issued",
            "tenant": "bench",
            "customer_id": f"C-{n % customers:05d}",
            "occurred_at": "2026-11-02T09:15:00Z",
            "data": {
                "invoice_id": f"INV-{event_id}",
                "number": f"F-{n}",
                "issue_date": "2026-10-01",
                "due_date": "2026-10-31",
                "currency": "EUR",
                "amount": f"{100 + n % 900}.00",
            },
        }
        made.append((event_id, orjson.dumps(body)))
    return made


def offer(amqp_url: str, exchange: str, messages: list[tuple[str, bytes]], rate: int) -> dict[str, float]:
    """Publish ``messages`` at ``rate`` per second; the wall-clock publish time of each event id."""
    publisher = ConfirmingPublisher(pika.URLParameters(amqp_url), window=1000)
    stamps: dict[str, float] = {}
    try:
        began = time.monotonic()
        sent = 0
        while sent < len(messages):
            due = min(len(messages), int((time.monotonic() - began) * rate) + 1)
            while sent < due:
                event_id, body = messages[sent]
                properties = pika.BasicProperties(
                    content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent, message_id=event_id
                )
                stamps[event_id] = time.time()
                publisher.publish(Outgoing(sent, exchange, "invoice.issued", body, properties))
                sent += 1
            publisher.wait(0.001)  # send what is buffered now, take the confirms in
        publisher.flush()
        refused = [item for item in publisher.settled() if item.outcome.value != "confirmed"]
        if refused:
            raise SystemExit(f"{len(refused)} offered events were not confirmed")
    finally:
        publisher.close()
    return stamps


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ---------------------------------------------------------------------------------------------------- baseline
def raw_consumer(amqp_url: str, queue: str, count: int, prefetch: int, out: Path) -> None:
    """Consume ``count`` messages, ack each on receipt, then write {message_id: receipt time} to ``out``."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    received: dict[str, float] = {}

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        received.setdefault(properties.message_id, time.time())
        ch.basic_ack(method.delivery_tag)
        if len(received) >= count:
            ch.stop_consuming()

    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    connection.close()
    out.write_text(json.dumps(received))


def run_baseline(args: argparse.Namespace, amqp_url: str, rate: int, base: str) -> list[float]:
    exchange, queue = f"{base}.raw", f"{base}.raw"

    def declare(channel: Any) -> None:
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key="#")

    common.on_broker(amqp_url, declare)
    messages = events(rate * args.seconds, args.customers, f"raw{rate}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "received.json"
            command = [sys.executable, "-m", "tests.benchmarks.bench_e2e", "--raw-consumer", queue]
            command += ["--count", str(len(messages)), "--out", str(out), "--amqp-url", amqp_url]
            consumer = subprocess.Popen(command)
            wait_for_consumer(amqp_url, queue)
            stamps = offer(amqp_url, exchange, messages, rate)
            consumer.wait(timeout=120)
            received = json.loads(out.read_text())
    finally:
        common.delete_broker_names(amqp_url, [queue], [exchange])
    return [(received[event_id] - stamp) * 1000 for event_id, stamp in stamps.items()]


def wait_for_consumer(amqp_url: str, queue: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(pika.exceptions.AMQPError):
            declared = common.on_broker(amqp_url, lambda ch: ch.queue_declare(queue, passive=True))
            if declared.method.consumer_count:
                return
        time.sleep(0.1)
    raise SystemExit(f"no consumer on {queue} after {seconds:.0f} s")


# ---------------------------------------------------------------------------------------------------- relance
@contextlib.contextmanager
def ingest_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    relance = shutil.which("relance", path=str(Path(sys.executable).parent)) or "relance"
    with log.open("wb") as out:
        process = subprocess.Popen([relance, "worker", "ingest"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_relance(args: argparse.Namespace, amqp_url: str, admin_url: str, rate: int, base: str) -> list[float]:
    with common.temp_database(admin_url, f"e2e{rate}") as url, tempfile.TemporaryDirectory() as tmp:
        values = {"events_exchange": f"{base}.events", "ingest_queue": f"{base}.ingest"}
        values["dead_letter_queue"] = f"{base}.dead"
        settings = load_settings(amqp_url=amqp_url, database_url=common.sqlalchemy_url(url), **values)
        connection = connect(settings, "bench")
        try:
            declare_topology(connection, settings)
        finally:
            connection.close()
        env = {**os.environ, **{f"RELANCE_{key.upper()}": value for key, value in values.items()}}
        env |= {"RELANCE_AMQP_URL": amqp_url, "RELANCE_DATABASE_URL": common.sqlalchemy_url(url)}
        env["RELANCE_LOG_FORMAT"] = "json"
        messages = events(rate * args.seconds, args.customers, f"e2e{rate}")
        try:
            with ingest_worker(env, Path(tmp) / "worker.log") as worker:
                wait_for_consumer(amqp_url, settings.ingest_queue)
                stamps = offer(amqp_url, settings.events_exchange, messages, rate)
                recorded = wait_for_log(common.plain(url), len(messages), worker)
        finally:
            common.delete_broker_names(
                amqp_url, [settings.ingest_queue, settings.dead_letter_queue], [settings.events_exchange]
            )
    return [(recorded[event_id] - stamp) * 1000 for event_id, stamp in stamps.items()]


def wait_for_log(url: str, count: int, worker: subprocess.Popen[bytes]) -> dict[str, float]:
    """{event_id: recorded_at} once ``count`` events are in the log."""
    deadline = time.monotonic() + 120
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            found = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])  # type: ignore[index]
            if found >= count:
                break
            if worker.poll() is not None:
                raise SystemExit(f"relance worker ingest exited with {worker.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"only {found} of {count} events reached the log in time")
            time.sleep(0.1)
        rows = conn.execute("SELECT event_id, recorded_at FROM events").fetchall()
    return {event_id: recorded_at.timestamp() for event_id, recorded_at in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    common.sizing(parser, customers=2000, invoices=20000)
    parser.add_argument("--rates", default="1000,2000", help="events offered per second, one run each (1000,2000)")
    parser.add_argument("--seconds", type=int, default=20, help="how long each rate is offered (20)")
    parser.add_argument("--raw-consumer", metavar="QUEUE", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--amqp-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_consumer:
        raw_consumer(args.amqp_url, args.raw_consumer, args.count, load_settings().ingest_prefetch, args.out)
        return 0
    admin_url, amqp_url = common.database_server(), common.broker_server()
    common.print_machine(common.machine_facts(admin_url, amqp_url))
    for rate in (int(r) for r in args.rates.split(",") if r.strip()):
        base = common.bench_names()
        baseline = run_baseline(args, amqp_url, rate, base)
        relance = run_relance(args, amqp_url, admin_url, rate, base)
        p50, p99 = percentile(relance, 0.5), percentile(relance, 0.99)
        b50, b99 = percentile(baseline, 0.5), percentile(baseline, 0.99)
        print(
            f"  {rate:,} events/s for {args.seconds} s: relance p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, max "
            f"{max(relance):,.0f} ms; raw consumer p50 {b50:,.0f} ms, p99 {b99:,.0f} ms",
            flush=True,
        )
        judged = rate == 1000
        target = f"< {TARGET_MS:,.0f} ms" if judged else "reported"
        detail = {"p50_ms": round(p50, 1), "baseline_p50_ms": round(b50, 1), "events": len(relance)}
        detail["seconds"] = args.seconds
        met = p99 < TARGET_MS if judged else True
        common.report(common.Figure(f"e2e.p99@{rate}", p99, "ms", b99, target, met, detail=detail))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
