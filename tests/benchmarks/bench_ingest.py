"""Ingest throughput on real RabbitMQ + PostgreSQL, next to a baseline measured in the same run.

    python -m tests.benchmarks.bench_ingest [--customers 1000] [--invoices 15000] [--events N] [--workers 1,2,4]
                                            [--partitions 8] [--hot 20] [--profile]

Every durability setting is on: durable queues, persistent messages published with publisher confirms, consumers
acking only after their transaction committed, PostgreSQL with ``synchronous_commit = on`` and ``fsync = on``
(checked; the benchmark refuses to measure otherwise). Each run creates its own databases and queue names and
removes them afterwards. The workload is the ERP simulator's mix (invoices, payments, credit notes, ...): ``--events``
messages (default: 4/3 of ``--invoices``) over ``--customers`` customers.

- **baseline**: plain pika consumes with the same prefetch, parses each body as JSON and INSERTs the same rows
  (the columns of relance's ``events`` table, into a copy of it with the same indexes) with one ``executemany`` per
  batch of the same size, commits, then acks the batch with ``multiple=True``. No validation, no projection, no
  dedupe: the cost of moving the bytes durably.
- **relance, 1 worker** (``ingest``): one ``relance worker ingest`` process, as deployed by default (one queue),
  drains the same messages into a fresh ledger; its peak resident memory is ``ingest.memory``.
- **scaling** (``ingest.scaling``): 1, 2 and 4 workers over ``--partitions`` customer partitions, on the spread
  workload and on a hot one (the same number of events over ``--hot`` customers). As for one worker, the messages
  are published first and the workers started together; the router moves them to the partitions meanwhile.

The rate is *sustained*: events committed between the first and the last batch / time between them, read from the
rows' ``recorded_at`` (each batch stamps its rows when its transaction starts writing). This leaves start-up out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import psycopg
from psycopg.types.json import Jsonb

from tests.benchmarks.common import (
    Figure,
    bench_names,
    broker_server,
    database_server,
    delete_broker_names,
    load_average,
    machine_facts,
    on_broker,
    print_machine,
    report,
    sizing,
    sqlalchemy_url,
    stop_processes,
    temp_database,
)
from tests.e2e.erp_simulator import Message, generate, publish

TARGET = 5000
MEMORY_TARGET_MB = 300


@dataclass
class Result:
    name: str
    events: int
    sustained: float  # events/s between the first and the last batch
    batches: int
    peak_rss_mb: float = 0.0


@dataclass
class Names:
    """The exchanges and queues of this run; deleted at the end."""

    amqp_url: str
    queues: list[str] = field(default_factory=list)
    exchanges: list[str] = field(default_factory=list)

    def depth(self, queue: str) -> int:
        return int(on_broker(self.amqp_url, lambda ch: ch.queue_declare(queue, passive=True).method.message_count))

    def consumers(self, queue: str) -> int:
        return int(on_broker(self.amqp_url, lambda ch: ch.queue_declare(queue, passive=True).method.consumer_count))

    def cleanup(self) -> None:
        delete_broker_names(self.amqp_url, self.queues, self.exchanges)


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
    # The simulator's clock starts on 2026-01-05 and moves about 20 minutes per event: events past tomorrow would be
    # refused as more than 24 hours ahead, and the run would time dead-lettering. They are left out, and said so.
    horizon = (datetime.now(UTC) + timedelta(hours=23)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kept = [m for m in chosen[:events] if json.loads(m.body)["occurred_at"] <= horizon]
    if len(kept) < events:
        print(f"note: {events - len(kept)} of the {events} events would occur more than a day from now; left out")
    return kept


# ---------------------------------------------------------------------------------------------------- baseline
def run_baseline(messages: list[Message], db_url: str, names: Names, batch_size: int, prefetch: int) -> Result:
    base = bench_names()
    exchange, queue = f"{base}.events", f"{base}.baseline"

    def declare(channel: Any) -> None:
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key="#")

    on_broker(names.amqp_url, declare)
    names.exchanges.append(exchange)
    names.queues.append(queue)
    amqp_url = names.amqp_url
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
        sustained = _sustained(conn, "baseline_events")
    connection.close()
    return Result("baseline (pika + executemany)", done, sustained, batches)


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


@dataclass
class Run:
    """One relance measurement: its workers' settings and where they log."""

    workers: int
    partitions: int
    batch_size: int
    prefetch: int
    log_dir: Path
    profile: Path | None = None


def run_relance(messages: list[Message], db_url: str, names: Names, run: Run) -> Result:
    """Publish the messages, then drain them with ``run.workers`` processes started together."""
    from services.ingest.topology import declare_topology, partition_queue, workers_queue
    from shared.broker.amqp import connect
    from shared.config import load_settings

    base = bench_names()
    overrides = {
        "database_url": sqlalchemy_url(db_url),
        "amqp_url": names.amqp_url,
        "events_exchange": f"{base}.events",
        "ingest_queue": f"{base}.ingest",
        "dead_letter_queue": f"{base}.dead",
        "ingest_batch_size": run.batch_size,
        "ingest_prefetch": run.prefetch,
        "ingest_partitions": run.partitions,
    }
    settings = load_settings(**overrides)
    connection = connect(settings, "bench")
    try:
        declare_topology(connection, settings)  # what the worker does at start-up, done before publishing
    finally:
        connection.close()
    partition_queues = [partition_queue(settings, p) for p in range(run.partitions)] if run.partitions > 1 else []
    names.queues += [settings.ingest_queue, settings.dead_letter_queue, *partition_queues]
    names.queues += [workers_queue(settings)] if run.partitions > 1 else []
    names.exchanges.append(settings.events_exchange)
    publish(messages, names.amqp_url, settings.events_exchange)

    env = {
        **os.environ,
        **{f"RELANCE_{key.upper()}": str(value) for key, value in overrides.items()},
        "RELANCE_LOG_FORMAT": "json",
    }
    command = [_relance(), "worker", "ingest"]
    if run.profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(run.profile), *command]
    label = f"relance ({run.workers} worker{'s' if run.workers > 1 else ''}"
    label += f", {run.partitions} partitions)" if run.partitions > 1 else ")"
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    for index in range(run.workers):
        path = run.log_dir / f"relance-{base}-{index}.log"
        logs.append(path)
        with path.open("wb") as out:
            processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
    peak = 0.0
    total = len(messages)
    with psycopg.connect(db_url, autocommit=True) as conn:
        try:
            started = time.monotonic()
            while True:
                count = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])  # type: ignore[index]
                peak = max([peak, *(_peak_rss_mb(p.pid) for p in processes)])
                if count >= total:
                    break
                _check_alive(processes, logs)
                if time.monotonic() - started > 600:
                    raise SystemExit(f"{label} did not drain in 600 s: {count}/{total} events")
                time.sleep(0.05)
        finally:
            stop_processes(processes)
        sustained = _sustained(conn, "events")
        batches = int(conn.execute("SELECT count(DISTINCT recorded_at) FROM events").fetchone()[0])  # type: ignore[index]
    codes = [p.returncode for p in processes]
    if any(codes):
        raise SystemExit(f"relance workers exited with {codes} after SIGTERM; logs in {run.log_dir}")
    left = sum(names.depth(q) for q in [settings.ingest_queue, *partition_queues])
    dead = names.depth(settings.dead_letter_queue)
    if left or dead:
        raise SystemExit(f"{label} left {left} messages in the queues and dead-lettered {dead}")
    return Result(label, total, sustained, batches, peak)


def _check_alive(processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    for index, process in enumerate(processes):
        if process.poll() is not None:
            tail = logs[index].read_text(errors="replace")[-3000:]
            raise SystemExit(f"relance worker {index} exited with {process.returncode}:\n{tail}")


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
    ("      look up known event ids", "shared/ledger/lookup.py", "known_in_log"),
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
    sizing(parser, customers=1000, invoices=15000)
    parser.add_argument("--events", type=int, default=None, help="messages per run (default: 4/3 of --invoices)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts of the scaling curve, comma separated")
    parser.add_argument("--partitions", type=int, default=8, help="customer partitions of the scaling runs (8)")
    parser.add_argument("--hot", type=int, default=20, help="customers of the hot workload (20)")
    parser.add_argument("--batch-size", type=int, default=defaults.ingest_batch_size)
    parser.add_argument("--prefetch", type=int, default=defaults.ingest_prefetch)
    parser.add_argument("--profile", action="store_true", help="also profile one relance worker (cProfile)")
    parser.add_argument("--skip-scaling", action="store_true", help="only the 1-worker figure, its baseline, memory")
    args = parser.parse_args(argv)
    events = args.events or args.invoices * 4 // 3
    counts = sorted({1, *(int(n) for n in args.workers.split(",") if n.strip())})
    admin, amqp_url = database_server(), broker_server()

    print_machine(machine_facts(admin, amqp_url))
    print(
        f"durability: durable queues, persistent messages, publisher confirms, ack after commit, "
        f"synchronous_commit=on and fsync=on on the benchmark databases; batch {args.batch_size}, "
        f"prefetch {args.prefetch}"
    )
    spread = workload(events, args.customers)
    print(f"workload: {len(spread)} valid v1 messages over {args.customers} customers\n")

    names = Names(amqp_url)
    log_dir = Path(tempfile.mkdtemp(prefix="relance-bench-"))

    def measure(messages: list[Message], run: Run) -> Result:
        with temp_database(admin, f"r{run.workers}p{run.partitions}") as url:
            result = run_relance(messages, url, names, run)
        _line(result)
        return result

    try:
        with temp_database(admin, "baseline") as url:
            baseline = run_baseline(spread, url, names, args.batch_size, args.prefetch)
        _line(baseline)
        single = measure(spread, Run(1, 1, args.batch_size, args.prefetch, log_dir))
        curves: dict[str, dict[int, float]] = {}
        if not args.skip_scaling:
            hot = workload(events, args.hot)
            for shape, messages in (("spread", spread), (f"hot ({args.hot} customers)", hot)):
                curves[shape] = {
                    n: measure(messages, Run(n, args.partitions, args.batch_size, args.prefetch, log_dir)).sustained
                    for n in counts
                }
        if args.profile:
            profile = log_dir / "relance.prof"
            measure(spread, Run(1, 1, args.batch_size, args.prefetch, log_dir, profile))
            summarize_profile(profile)
    finally:
        names.cleanup()

    ratio = single.sustained / baseline.sustained if baseline.sustained else 0.0
    report(
        Figure(
            stage="ingest",
            value=single.sustained,
            unit="events/s",
            baseline=baseline.sustained,
            target=f">= {TARGET:,} events/s and >= 0.5 of baseline",
            met=single.sustained >= TARGET and ratio >= 0.5,
            detail={"events": single.events, "customers": args.customers, "batches": single.batches},
        )
    )
    if curves:
        _scaling(curves, args.partitions)
    report(
        Figure(
            stage="ingest.memory",
            value=single.peak_rss_mb,
            unit="MB",
            baseline=None,
            target=f"< {MEMORY_TARGET_MB} MB",
            met=0 < single.peak_rss_mb < MEMORY_TARGET_MB,
            detail={"customers": args.customers, "events": single.events, "state_cache_mb": Settings().state_cache_mb},
        )
    )
    print(f"\nworker logs: {log_dir}")
    return 0


def _scaling(curves: dict[str, dict[int, float]], partitions: int) -> None:
    """One figure: the smallest gain of more than one worker over one, every curve in the detail."""
    print(f"\nscaling over {partitions} partitions, sustained events/s (relative to 1 worker):")
    relative: dict[str, dict[str, float]] = {}
    for shape, curve in curves.items():
        one = curve[1] or 1.0
        relative[shape] = {f"{n} workers": round(rate / one, 3) for n, rate in curve.items() if n > 1}
        cells = ", ".join(f"{n}: {rate:,.0f} ({rate / one:.2f}x)" for n, rate in curve.items())
        print(f"  {shape:24} {cells}")
    worst = min(value for gains in relative.values() for value in gains.values())
    report(
        Figure(
            stage="ingest.scaling",
            value=worst,
            unit="x of 1 worker (worst of 2 and 4 workers, spread and hot)",
            baseline=None,
            target="more than 1 worker adds throughput",
            met=worst > 1.0,
            detail={"partitions": partitions, "relative": relative, "events_per_second": curves},
        )
    )


def _line(result: Result) -> None:
    memory = f", peak RSS {result.peak_rss_mb:,.0f} MB" if result.peak_rss_mb else ""
    print(
        f"  {result.name}: {result.events} events, sustained {result.sustained:,.0f}/s over {result.batches} "
        f"batches{memory}; load average {load_average()} (other processes on the machine skew the figures)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
