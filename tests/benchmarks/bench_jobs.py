"""Why the pipeline is not made of Dramatiq actors: batched ingest against one actor call per event, same machine.

    python -m tests.benchmarks.bench_jobs [--events 3000] [--customers 300] [--threads 4] [--batch 1000]

Both apply the same ERP messages (the simulator's mix) with relance's own ``Ingestor`` into a fresh PostgreSQL
ledger with durability on (``synchronous_commit``, ``fsync``), each into its own database:

- **batched**: what ``relance worker ingest`` does per batch, without the AMQP part: ``Ingestor.process`` on
  ``--batch`` messages at a time, one transaction each;
- **one actor per event**: every message sent as one Dramatiq message (RabbitMQ, ``confirm_delivery=True``,
  persistent) to an actor that applies that one message in its own transaction, run by a ``dramatiq.Worker`` of
  ``--threads`` threads in this process. The figure counts from the first send to the last message applied; the
  sending alone is reported too.

It prints events/s of each and their ratio. It measures and never judges (exit status 0).
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import UTC, datetime

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from services.ingest.service import Delivery, Ingestor
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from shared.logging import configure_logging
from tests.benchmarks.bench_ingest import workload
from tests.benchmarks.common import bench_names, broker_server, database_server, sqlalchemy_url, temp_database


def batched(url: str, bodies: list[bytes], batch: int) -> float:
    engine = make_engine(sqlalchemy_url(url))
    ingestor = Ingestor(Ledger(engine))
    now = datetime.now(UTC)
    started = time.perf_counter()
    applied = 0
    for at in range(0, len(bodies), batch):
        result = ingestor.process([Delivery(body=b, received_at=now) for b in bodies[at : at + batch]])
        applied += len(result.applied_ids) + len(result.duplicate_ids)
    elapsed = time.perf_counter() - started
    engine.dispose()
    print(f"batched ({batch} per transaction): {applied} events in {elapsed:.2f} s: {applied / elapsed:,.0f} events/s")
    return applied / elapsed


def per_actor(url: str, amqp_url: str, bodies: list[bytes], threads: int) -> float:
    engine = make_engine(sqlalchemy_url(url), pool_size=threads + 2)
    ledger = Ledger(engine)
    queue = f"{bench_names()}.jobs"
    broker = RabbitmqBroker(url=amqp_url, confirm_delivery=True)
    done = threading.Semaphore(0)

    @dramatiq.actor(actor_name="bench.ingest_one", queue_name=queue, broker=broker, max_retries=20, min_backoff=100)
    def ingest_one(body: str) -> None:
        Ingestor(ledger).process([Delivery(body=body.encode(), received_at=datetime.now(UTC))])
        done.release()

    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=threads)
    started = time.perf_counter()
    for body in bodies:
        ingest_one.send(body.decode())
    sent = time.perf_counter() - started
    worker.start()
    for _ in bodies:
        done.acquire()
    elapsed = time.perf_counter() - started
    worker.stop()
    channel = broker.channel
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        channel.queue_delete(name)
    broker.close()
    engine.dispose()
    print(
        f"one Dramatiq actor call per event ({threads} threads): {len(bodies)} events in {elapsed:.2f} s: "
        f"{len(bodies) / elapsed:,.0f} events/s (sending them alone: {len(bodies) / sent:,.0f} messages/s)"
    )
    return len(bodies) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    configure_logging("warning", "console")  # a line per event would be measured too
    bodies = [m.body for m in workload(args.events, args.customers)]
    with temp_database(database_server(), "batched") as url:
        fast = batched(url, bodies, args.batch)
    with temp_database(database_server(), "actors") as url:
        slow = per_actor(url, broker_server(), bodies, args.threads)
    print(f"batched / one actor per event: {fast / slow:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
