"""Several OS processes appending to the same customers at once never break a stream.

Four processes (spawned, each with its own engine) append batches to the same three customers simultaneously:
each sends its own events plus a set of events that every process sends (the redeliveries a broker makes when a
worker dies before acking). Afterwards every stream is gapless, every unique event is in the log exactly once, the
hash chains verify and the projected balances equal the fold of the log.
"""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter
from typing import Any

import pytest

from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from tests.factories import TENANT, Ev, expected_balances, incoming, invoice, payment

pytestmark = pytest.mark.integration

PROCESSES = 4
CUSTOMERS = ("C-1", "C-2", "C-3")
OWN_PER_CUSTOMER = 40
SHARED_PER_CUSTOMER = 10


def own_events(worker: int, customer_id: str) -> list[Ev]:
    evs: list[Ev] = []
    for n in range(OWN_PER_CUSTOMER // 2):
        inv = f"{customer_id}-W{worker}-INV-{n}"
        evs.append(invoice(inv, f"{100 + worker * 10 + n}.{n:02d}", issue_date=f"2026-{1 + n % 9:02d}-0{1 + worker}"))
        allocations = {inv: "10.00"} if n % 3 == 0 else None
        evs.append(payment(f"{customer_id}-W{worker}-P-{n}", f"{40 + n}.50", allocations=allocations))
    return [ev.with_id(f"{customer_id}:{ev.event_id}") for ev in evs]


def shared_events(customer_id: str) -> list[Ev]:
    evs: list[Ev] = []
    for n in range(SHARED_PER_CUSTOMER // 2):
        evs.append(invoice(f"{customer_id}-SH-INV-{n}", f"{500 + n}.00", issue_date=f"2026-0{1 + n}-15"))
        evs.append(payment(f"{customer_id}-SH-P-{n}", f"{70 + n}.25"))
    return [ev.with_id(f"{customer_id}:{ev.event_id}") for ev in evs]


def unique_events(customer_id: str) -> list[Ev]:
    return [ev for w in range(PROCESSES) for ev in own_events(w, customer_id)] + shared_events(customer_id)


def append_concurrently(url: str, worker: int, start: Any, results: Any) -> None:
    """One appender process: its own events and everyone's shared ones, shuffled, in batches of mixed customers."""
    rng = random.Random(worker)
    items = [incoming(ev, customer_id=c) for c in CUSTOMERS for ev in own_events(worker, c) + shared_events(c)]
    rng.shuffle(items)
    engine = make_engine(url)
    ledger = Ledger(engine)
    counts: Counter[str] = Counter()
    start.wait(60)  # all processes begin together, once every one of them is ready
    position = 0
    while position < len(items):
        size = rng.randint(1, 12)
        counts.update(o.status for o in ledger.record(items[position : position + size]))
        position += size
    engine.dispose()
    results.put((worker, dict(counts)))


def test_concurrent_appenders_from_several_processes_never_break_a_stream(ledger_url: str) -> None:
    # Given four processes ready to append to the same three customers
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(target=append_concurrently, args=(ledger_url, w, start, results)) for w in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    # When they all append at once
    reports = dict(results.get(timeout=180) for _ in processes)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    # Then no event was lost or rejected, and the shared events were applied once and reported duplicate elsewhere
    totals: Counter[str] = Counter()
    for counts in reports.values():
        totals.update(counts)
    unique = {c: unique_events(c) for c in CUSTOMERS}
    all_unique = sum(len(evs) for evs in unique.values())
    assert totals["applied"] == all_unique, totals
    assert totals["duplicate"] == (PROCESSES - 1) * SHARED_PER_CUSTOMER * len(CUSTOMERS), totals
    assert set(totals) <= {"applied", "duplicate"}, totals

    engine = make_engine(ledger_url)
    try:
        ledger = Ledger(engine)
        for customer_id, evs in unique.items():
            stream = ledger.read_stream(TENANT, customer_id)
            # And each stream is gapless and holds every unique event exactly once
            assert [e.version for e in stream] == list(range(1, len(evs) + 1))
            assert sorted(e.event_id for e in stream) == sorted(ev.event_id for ev in evs)
            # And the projection equals the replay of the log, with the balances of the arithmetic
            state = ledger.state(TENANT, customer_id)
            assert state.version == len(evs)
            assert state.to_json() == ledger.fold(TENANT, customer_id).to_json()
            assert state.balances() == expected_balances(evs)
        # And every hash chain verifies
        report = ledger.verify()
        assert report.ok, report.problems
        assert (report.streams, report.events) == (len(CUSTOMERS), all_unique)
    finally:
        engine.dispose()
