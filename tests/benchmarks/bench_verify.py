"""How long ``relance verify`` and ``relance checkpoint write`` take on a ledger of a given size, on PostgreSQL.

    python -m tests.benchmarks.bench_verify [--events 50000] [--customers 2000]

Fills a fresh database through :meth:`Ledger.record` (invoices and payments spread over the customers, in batches
of 1,000 like the ingest worker), then times, on the same ledger: the raw streamed SELECT of every event with a
SHA-256 of each (the floor), a full verify (chains, rebuild and comparison of every projection), a checkpoint
write, and a verify that also checks the log against that checkpoint. The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from shared.ledger import checkpoints as cp
from shared.ledger.db import make_engine
from shared.ledger.migrate import upgrade
from shared.ledger.schema import events
from shared.ledger.store import Incoming, Ledger
from shared.ledger.verify import CheckpointSources, verify

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def fill(ledger: Ledger, count: int, customers: int) -> None:
    rng = random.Random(7)
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    batch: list[Incoming] = []
    for n in range(count):
        customer = f"C-{rng.randrange(customers):05d}"
        day = start + timedelta(minutes=n)
        if n % 3 == 2:
            data: dict[str, Any] = {"payment_id": f"P-{n}", "amount": "40.00", "currency": "EUR",
                                    "received_on": day.date().isoformat()}  # fmt: skip
            batch.append(Incoming("bench", customer, f"e-{n}", "payment.received", data, day))
        else:
            data = {"invoice_id": f"I-{n}", "number": f"F-{n}", "issue_date": day.date().isoformat(),
                    "due_date": (day + timedelta(days=30)).date().isoformat(), "currency": "EUR",
                    "amount": f"{rng.randrange(50, 5000)}.00"}  # fmt: skip
            batch.append(Incoming("bench", customer, f"e-{n}", "invoice.issued", data, day))
        if len(batch) == 1000:
            ledger.record(batch)
            batch = []
    if batch:
        ledger.record(batch)


def timed(label: str, count: int, action: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - began
    print(f"{label:<42} {seconds:7.2f} s  {count / seconds:>9,.0f} events/s")
    return result


def floor(engine: Any) -> int:
    """One streamed SELECT of every event and a SHA-256 of its canonical bytes: the least verify can do."""
    seen = 0
    with engine.connect() as conn:
        rows = conn.execute(select(events), execution_options={"stream_results": True, "yield_per": 2000})
        for row in rows.mappings():
            hashlib.sha256(str(row["data"]).encode()).hexdigest()
            seen += 1
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50000)
    parser.add_argument("--customers", type=int, default=2000)
    args = parser.parse_args(argv)
    name = f"relance_bench_verify_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        engine = make_engine(url)
        ledger = Ledger(engine)
        timed(f"fill ({args.events:,} events, {args.customers:,} customers)", args.events,
              lambda: fill(ledger, args.events, args.customers))  # fmt: skip
        timed("floor: streamed SELECT + SHA-256", args.events, lambda: floor(engine))
        report = timed("verify (chains + rebuilt projections)", args.events, lambda: verify(engine))
        assert report.ok, report.problems[:5]
        key = Ed25519PrivateKey.generate()
        timed("checkpoint write", args.events, lambda: cp.write(engine, key))
        sources = CheckpointSources(public_key=key.public_key())
        report = timed("verify with one checkpoint", args.events, lambda: verify(engine, sources=sources))
        assert report.ok, report.problems[:5]
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
