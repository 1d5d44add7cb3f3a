"""Ingest throughput on real RabbitMQ + PostgreSQL, next to a baseline measured in the same run.

    python -m tests.benchmarks.bench_ingest [--events 20000] [--workers 1,2] [--profile]

Every durability setting is on: durable queues, persistent messages published with publisher confirms, consumers
acking only after their transaction committed, PostgreSQL with ``synchronous_commit = on`` (checked, printed, and set
on the benchmark's databases). Each run creates its own databases and queue names and removes them afterwards.

- **baseline**: plain pika consumes with the same prefetch, parses each body as JSON and INSERTs the same rows
  (the columns of relance's ``events`` table, into a copy of it with the same indexes) with one ``executemany`` per
  batch of the same size, commits, then acks the batch with ``multiple=True``. No validation, no projection, no
  dedupe: the cost of moving the bytes durably.
- **relance(n)**: n ``relance worker ingest`` processes drain the same messages into a fresh ledger.

Two figures per run, both explicit:
- *drain*: events / wall time from the consumer's start (process spawn for relance, so Python start-up counts) until
  the last event is committed (polled every 50 ms);
- *sustained*: events committed between the first and the last batch / time between them, read from the rows'
  ``recorded_at`` (each batch stamps its rows when its transaction starts writing). This leaves start-up out and is
  the figure compared with the 5,000 events/s target.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import psycopg
from psycopg.types.json import Jsonb

from tests.e2e.erp_simulator import Message, generate, publish

TARGET = 5000
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass
class Result:
    name: str
    events: int
    drain_seconds: float
    sustained: float  # events/s between the first and the last batch
    batches: int

    @property
    def drain_rate(self) -> float:
        return self.events / self.drain_seconds if self.drain_seconds else 0.0


# ---------------------------------------------------------------------------------------------------- servers
def _plain(url: str) -> str:
    """psycopg wants postgresql://; relance's settings take either form."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    base, _, _ = _plain(url).rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def temp_database(admin_url: str, label: str) -> Iterator[str]:
    """A fresh database migrated to relance's schema, synchronous_commit forced on; dropped afterwards."""
    from shared.ledger.migrate import upgrade

    name = f"relance_bench_{uuid.uuid4().hex[:8]}_{label}"
    with psycopg.connect(_plain(admin_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    url = _with_database(admin_url, name)
    try:
        upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))
        yield url
    finally:
        with psycopg.connect(_plain(admin_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def machine_facts(admin_url: str, amqp_url: str) -> dict[str, str]:
    with psycopg.connect(_plain(admin_url)) as conn:
        pg_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        sync = str(conn.execute("SHOW synchronous_commit").fetchone()[0])  # type: ignore[index]
        fsync = str(conn.execute("SHOW fsync").fetchone()[0])  # type: ignore[index]
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        server = connection._impl.server_properties or {}
        rabbit = server.get("version", "?")
        rabbit = rabbit.decode() if isinstance(rabbit, bytes) else str(rabbit)
    finally:
        connection.close()
    return {
        "cores": str(os.cpu_count()),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "synchronous_commit (server default)": sync,
        "fsync": fsync,
        "rabbitmq": rabbit,
        "load average (1, 5, 15 min)": _load(),
    }


class Queues:
    """An exchange and queues of this run alone, declared durable; deleted at the end."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.names: list[str] = []
        self.exchanges: list[str] = []

    def base(self) -> str:
        return f"relance.bench.{uuid.uuid4().hex[:8]}"

    def baseline(self) -> tuple[str, str]:
        base = self.base()
        exchange, queue = f"{base}.events", f"{base}.baseline"
        self._run(lambda ch: _declare(ch, exchange, queue))
        self.exchanges.append(exchange)
        self.names.append(queue)
        return exchange, queue

    def depth(self, queue: str) -> int:
        counts: list[int] = []
        self._run(lambda ch: counts.append(ch.queue_declare(queue, passive=True).method.message_count))
        return counts[0]

    def cleanup(self) -> None:
        def delete(channel: Any) -> None:
            for name in self.names:
                channel.queue_delete(name)
            for name in self.exchanges:
                channel.exchange_delete(name)

        self._run(delete)

    def _run(self, action: Any) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            action(connection.channel())
        finally:
            connection.close()


def _declare(channel: Any, exchange: str, queue: str) -> None:
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, routing_key="#")


# ---------------------------------------------------------------------------------------------------- workload
def workload(events: int, customers: int) -> list[Message]:
    """``events`` valid, distinct v1 messages in the simulator's mix (invoices, payments, credit notes, …)."""
    scenario = generate(int(events * 1.15) + 100, customers=customers, seed=4242, prefix="bench")
    wanted = {event_id for _, event_id in scenario.required}
    seen: set[str] = set()
    chosen = []
    for message in scenario.messages:
        if message.message_id in wanted and message.message_id not in seen:
            seen.add(message.message_id)
            chosen.append(message)
    if len(chosen) < events:
        raise SystemExit(f"the generator produced only {len(chosen)} valid messages, {events} wanted")
    return chosen[:events]


# ---------------------------------------------------------------------------------------------------- baseline
def run_baseline(
    messages: list[Message], db_url: str, amqp_url: str, queues: Queues, batch_size: int, prefetch: int
) -> Result:
    exchange, queue = queues.baseline()
    publish(messages, amqp_url, exchange)
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE baseline_events (LIKE events INCLUDING ALL)")
        conn.commit()
    insert = (
        "INSERT INTO baseline_events (tenant, customer_id, version, event_id, event_type, data, metadata, "
        "occurred_at, recorded_at, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    versions: dict[tuple[str, str], tuple[int, str]] = {}
    total = len(messages)
    done = 0
    batches = 0
    batch_ms = 0.1
    started = time.monotonic()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    pending: list[tuple[int, str | None, bytes]] = []
    with psycopg.connect(db_url) as conn:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            pending.append((method.delivery_tag, properties.message_id, body))

        channel.basic_consume(queue, on_message_callback=on_message)
        while done < total:
            # Same rule as relance's batcher: apply when the batch is full or its oldest message waited batch_ms.
            deadline: float | None = None
            while len(pending) < batch_size and done + len(pending) < total:
                if pending and deadline is None:
                    deadline = time.monotonic() + batch_ms
                wait = batch_ms if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    break
                connection.process_data_events(time_limit=wait)
            batch, pending[:] = pending[:batch_size], pending[batch_size:]
            now = datetime.now(UTC)
            rows = []
            for _, message_id, body in batch:
                raw = json.loads(body)
                key = (raw["tenant"], raw["customer_id"])
                version, previous = versions.get(key, (0, "0" * 64))
                digest = hashlib.sha256(previous.encode() + body).hexdigest()
                versions[key] = (version + 1, digest)
                rows.append(
                    (
                        raw["tenant"],
                        raw["customer_id"],
                        version + 1,
                        raw["event_id"],
                        raw["event_type"],
                        Jsonb(raw["data"]),
                        Jsonb({"source": "erp", "message_id": message_id}),
                        raw["occurred_at"],
                        now,
                        previous,
                        digest,
                    )
                )
            with conn.cursor() as cursor:
                cursor.executemany(insert, rows)
            conn.commit()
            channel.basic_ack(delivery_tag=batch[-1][0], multiple=True)
            done += len(batch)
            batches += 1
        elapsed = time.monotonic() - started
        sustained = _sustained(conn, "baseline_events")
    connection.close()
    return Result("baseline (pika + executemany)", done, elapsed, sustained, batches)


def _sustained(conn: psycopg.Connection[Any], table: str) -> float:
    """Events committed from the first batch up to the last one, per second between their stamps."""
    row = conn.execute(
        f"SELECT min(recorded_at), max(recorded_at), count(*) FILTER (WHERE recorded_at < "
        f"(SELECT max(recorded_at) FROM {table})) FROM {table}"
    ).fetchone()
    assert row is not None
    first, last, before_last = row
    span = (last - first).total_seconds() if first and last else 0.0
    return before_last / span if span > 0 else 0.0


# ---------------------------------------------------------------------------------------------------- relance
def _relance() -> str:
    found = Path(sys.executable).with_name("relance")
    if found.exists():
        return str(found)
    which = shutil.which("relance")
    if which is None:
        raise SystemExit("the relance console script is not installed (pip install -e .)")
    return which


def run_relance(
    messages: list[Message],
    db_url: str,
    amqp_url: str,
    queues: Queues,
    workers: int,
    batch_size: int,
    prefetch: int,
    log_dir: Path,
    profile: Path | None = None,
) -> Result:
    from services.ingest.topology import declare_topology
    from shared.broker.amqp import connect
    from shared.config import load_settings

    base = queues.base()
    overrides = {
        "database_url": db_url,
        "amqp_url": amqp_url,
        "events_exchange": f"{base}.events",
        "ingest_queue": f"{base}.ingest",
        "dead_letter_queue": f"{base}.dead",
        "ingest_batch_size": batch_size,
        "ingest_prefetch": prefetch,
    }
    settings = load_settings(**overrides)
    connection = connect(settings, "bench")
    try:
        declare_topology(connection, settings)  # what the worker does at start-up, done before publishing
    finally:
        connection.close()
    queues.names += [settings.ingest_queue, settings.dead_letter_queue]
    queues.exchanges.append(settings.events_exchange)
    publish(messages, amqp_url, settings.events_exchange)
    assert queues.depth(settings.ingest_queue) == len(messages)

    env = {
        **os.environ,
        **{f"RELANCE_{key.upper()}": str(value) for key, value in overrides.items()},
        "RELANCE_DATABASE_URL": db_url.replace("postgresql://", "postgresql+psycopg://", 1),
        "RELANCE_LOG_FORMAT": "json",
    }
    command = [_relance(), "worker", "ingest"]
    if profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), *command]
    processes = []
    logs = []
    started = time.monotonic()
    for index in range(workers):
        path = log_dir / f"relance-{workers}-{index}.log"
        logs.append(path)
        with path.open("wb") as out:
            processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
    total = len(messages)
    with psycopg.connect(db_url, autocommit=True) as conn:
        try:
            while True:
                count = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])  # type: ignore[index]
                if count >= total:
                    break
                for index, process in enumerate(processes):
                    if process.poll() is not None:
                        tail = logs[index].read_text(errors="replace")[-3000:]
                        raise SystemExit(f"relance worker {index} exited with {process.returncode}:\n{tail}")
                if time.monotonic() - started > 600:
                    raise SystemExit(f"relance({workers}) did not drain in 600 s: {count}/{total} events")
                time.sleep(0.05)
            elapsed = time.monotonic() - started
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        sustained = _sustained(conn, "events")
        batches = int(conn.execute("SELECT count(DISTINCT recorded_at) FROM events").fetchone()[0])  # type: ignore[index]
    codes = [p.returncode for p in processes]
    if any(codes):
        raise SystemExit(f"relance workers exited with {codes} after SIGTERM; logs in {log_dir}")
    left = queues.depth(settings.ingest_queue)
    dead = queues.depth(settings.dead_letter_queue)
    if left or dead:
        raise SystemExit(f"relance({workers}) left {left} messages in the queue and dead-lettered {dead}")
    return Result(f"relance ({workers} worker{'s' if workers > 1 else ''})", total, elapsed, sustained, batches)


# ---------------------------------------------------------------------------------------------------- profile
_AREAS = [  # own time, first match wins
    ("pydantic (contract validation)", ("pydantic",)),
    ("json (stdlib encode/decode)", ("/json/",)),
    ("SQLAlchemy (compile, bind, results)", ("sqlalchemy/",)),
    ("psycopg (adapt, send, wait for PostgreSQL)", ("psycopg",)),
    ("pika (frames, consume, ack, publish)", ("pika/",)),
    ("structlog", ("structlog",)),
    ("relance code (services/, shared/)", ("services/", "shared/")),
    ("epoll wait (idle, waiting for deliveries)", ("epoll",)),
    ("builtins (regex, dict, isinstance, sha256, ...)", ("~",)),
]
_PHASES = [  # cumulative time of the functions that make up a batch
    ("worker loop, total", "services/ingest/worker.py", "_consume"),
    ("  apply batches (parse + record + dead-letter + ack)", "services/ingest/worker.py", "_apply"),
    ("    parse + validate messages", "shared/contracts/erp.py", "parse_event"),
    ("    Ledger.record (one transaction per batch)", "shared/ledger/writer.py", "record"),
    ("      lock streams + load snapshots", "shared/ledger/writer.py", "_lock_streams"),
    ("      look up known event ids", "shared/ledger/reader.py", "known_in_log"),
    ("      fold events into state", "shared/ledger/state.py", "apply"),
    ("      hash chain (canonical JSON + sha256)", "shared/ledger/hashing.py", "event_hash"),
    ("      save projections (snapshots, invoices)", "shared/ledger/projections.py", "save_projections"),
    ("      waiting on PostgreSQL (psycopg wait)", "psycopg/connection.py", "wait"),
    ("    ack", "pika/adapters/blocking_connection.py", "basic_ack"),
    ("  json.dumps anywhere", "json/__init__.py", "dumps"),
    ("  CustomerState.to_json (snapshot)", "shared/ledger/state.py", "to_json"),
]


def summarize_profile(path: Path, limit: int = 20) -> None:
    """Where one worker's time goes: the phases of a batch (cumulative), then own time grouped by library."""
    stats = pstats.Stats(str(path))
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(value[2] for value in raw.values())
    print(f"\nprofile of one relance worker ({total:.2f}s in its main thread), cumulative time per phase:")
    for label, file_part, function in _PHASES:
        seconds = sum(v[3] for (f, _, fn), v in raw.items() if file_part in f and fn == function)
        print(f"  {label:58} {seconds:7.2f}s  {100 * seconds / total:5.1f}%")
    areas: dict[str, float] = {}
    for (filename, _, function), value in raw.items():
        where = f"{filename}:{function}"
        label = next((name for name, needles in _AREAS if any(n in where for n in needles)), "other")
        areas[label] = areas.get(label, 0.0) + value[2]
    print("own time by area:")
    for label, seconds in sorted(areas.items(), key=lambda item: -item[1]):
        print(f"  {label:58} {seconds:7.2f}s  {100 * seconds / total:5.1f}%")
    print(f"\ntop {limit} functions by own time:")
    stats.sort_stats("tottime").print_stats(limit)


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    from shared.config import Settings

    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20000, help="messages per run (default 20000)")
    parser.add_argument("--customers", type=int, default=1000, help="customers the events spread over")
    parser.add_argument("--workers", default="1,2", help="relance process counts to run, comma separated")
    parser.add_argument("--batch-size", type=int, default=defaults.ingest_batch_size)
    parser.add_argument("--prefetch", type=int, default=defaults.ingest_prefetch)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("RELANCE_BENCH_DATABASE_URL") or os.environ.get("RELANCE_TEST_DATABASE_URL") or LOCAL_PG,
        help="PostgreSQL server where the benchmark may create and drop databases",
    )
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("RELANCE_BENCH_AMQP_URL") or os.environ.get("RELANCE_TEST_AMQP_URL") or LOCAL_AMQP,
    )
    parser.add_argument("--profile", action="store_true", help="also profile one relance worker (cProfile)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",") if n.strip()]

    facts = machine_facts(args.database_url, args.amqp_url)
    print("machine:")
    for key, value in facts.items():
        print(f"  {key:38} {value}")
    print(
        f"durability: durable queues, persistent messages, publisher confirms, ack after commit, "
        f"synchronous_commit=on on the benchmark databases; batch {args.batch_size}, prefetch {args.prefetch}"
    )
    messages = workload(args.events, args.customers)
    print(f"workload: {len(messages)} valid v1 messages over {args.customers} customers\n")

    results: list[Result] = []
    queues = Queues(args.amqp_url)
    log_dir = Path(tempfile.mkdtemp(prefix="relance-bench-"))
    try:
        if not args.skip_baseline:
            with temp_database(args.database_url, "baseline") as url:
                _check_sync(url)
                results.append(run_baseline(messages, url, args.amqp_url, queues, args.batch_size, args.prefetch))
                _report_line(results[-1])
        for workers in counts:
            with temp_database(args.database_url, f"r{workers}") as url:
                _check_sync(url)
                result = run_relance(
                    messages, url, args.amqp_url, queues, workers, args.batch_size, args.prefetch, log_dir
                )
                results.append(result)
                _report_line(result)
        if args.profile:
            profile = log_dir / "relance.prof"
            with temp_database(args.database_url, "profile") as url:
                run_relance(messages, url, args.amqp_url, queues, 1, args.batch_size, args.prefetch, log_dir, profile)
            summarize_profile(profile)
    finally:
        queues.cleanup()
    _report(results)
    print(f"\nworker logs: {log_dir}")
    return 0


def _check_sync(url: str) -> None:
    with psycopg.connect(url) as conn:
        value = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
    if value != "on":
        raise SystemExit(f"synchronous_commit is {value!r} on the benchmark database; refusing to measure")


def _report_line(result: Result) -> None:
    print(
        f"  {result.name}: {result.events} events, drain {result.drain_seconds:.2f}s "
        f"({result.drain_rate:,.0f}/s), sustained {result.sustained:,.0f}/s over {result.batches} batches; "
        f"load average {_load()} (other processes on the machine skew the figures)"
    )


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _report(results: list[Result]) -> None:
    if not results:
        return
    baseline = next((r for r in results if r.name.startswith("baseline")), None)
    header = f"{'run':32} {'events':>7} {'drain s':>8} {'drain ev/s':>11} {'sustained ev/s':>15} {'vs baseline':>12}"
    print("\n" + header)
    print("-" * len(header))
    for result in results:
        ratio = f"{result.sustained / baseline.sustained:.2f}" if baseline and baseline.sustained else "-"
        print(
            f"{result.name:32} {result.events:>7} {result.drain_seconds:>8.2f} {result.drain_rate:>11,.0f} "
            f"{result.sustained:>15,.0f} {ratio:>12}"
        )
    relance = [r for r in results if not r.name.startswith("baseline")]
    if relance:
        best = max(r.sustained for r in relance)
        verdict = "meets" if best >= TARGET else "is below"
        print(f"\nbest relance sustained rate {best:,.0f} events/s {verdict} the {TARGET:,} events/s target")
    print("ratio = sustained relance / sustained baseline")


if __name__ == "__main__":
    raise SystemExit(main())
