"""Escalation at month-end: a sweep of every customer (``relance clock tick``), the same sweep with nothing new to
decide, and the escalation worker on due timers, on PostgreSQL, next to a baseline query of the same ledger.

    python -m tests.benchmarks.bench_escalation [--customers 2000] [--invoices 10000] [--batch-size 200]

Fills a fresh database through :meth:`Ledger.record` (batches of 1,000 events, as the ingest worker writes them):
each customer's profile and invoices, due on days spread so that, at the sweep's instant, invoices stand before
their due date and at every level of the shipped French ladder (reminders, call, formal notice, credit block,
hand-over); about one invoice in six is paid and one in ten disputed. Then, on that ledger and in this process:

* the baseline: one SQL query listing every overdue invoice with its days late;
* a first sweep a week before (:func:`services.escalation.worker.tick`, the code ``relance clock tick`` runs): the
  catch-up of every level reached since the due dates, shown but not judged;
* the floor of that sweep, shown but not judged: every state loaded and decided in memory, nothing recorded;
* ``escalation.sweep``: the sweep at the month-end instant, a week later, when most open invoices reach their next
  level (the reminders, calls, formal notices, blocks and hand-overs of the week), as a daily or weekly run meets it;
* ``escalation.sweep_unchanged``: the same sweep again, with nothing new to decide (the ratio to the one before);
* ``escalation.timers``: every timer set by the sweeps made due the next morning, then fired by
  :class:`~services.escalation.worker.EscalationWorker` (the worker class, in this process, one worker) until none is
  due, in customers per second.

Each sweep and the worker start with an empty state cache, as a new process would.
Logging is relance's own (JSON at info, one line per decision), written to /dev/null while measuring. The database is
dropped afterwards.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, text

from services.escalation.service import PolicyBooks, Rules
from services.escalation.worker import EscalationWorker, Summary, policy_books, real_rules, tick
from shared.config import load_settings
from shared.ledger.db import make_engine
from shared.ledger.store import Incoming, Ledger
from shared.logging import configure_logging
from tests.benchmarks import common

TENANT = "bench-fr"
AT = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)  # a Tuesday; the shipped rate table covers the first half of 2026
WEEK_BEFORE = AT - timedelta(days=7)
NEXT_MORNING = AT + timedelta(days=1)
# Days late at AT of the invoices (negative: not due yet), chosen so that every level of the ladder is reached.
DAYS_LATE = (-8, -3, 2, 9, 16, 22, 33, 48, 64)
FULL_SIZE = 20000  # customers of the figures, the size the sweep target is stated for
T = TypeVar("T")


def fill(ledger: Ledger, customers: int, invoices: int) -> int:
    """Profiles and invoices (some paid, some disputed) of ``customers`` customers; returns the events recorded."""
    rng = random.Random(11)
    batch: list[Incoming] = []
    recorded = 0

    def add(customer_id: str, event_id: str, event_type: str, data: dict[str, Any], at: datetime) -> None:
        nonlocal recorded
        batch.append(Incoming(TENANT, customer_id, event_id, event_type, data, at))
        if len(batch) == 1000:
            ledger.record(batch)
            recorded += len(batch)
            batch.clear()

    for n in range(customers):
        customer_id = f"C-{n:06d}"
        created = AT - timedelta(days=120)
        profile = {"name": f"Client {n} SARL", "emails": [f"compta{n}@example.fr"], "language": "fr"}
        add(customer_id, f"cust-{n}", "customer.upserted", profile, created)
        share = invoices // customers + (1 if n < invoices % customers else 0)
        for k in range(share):
            due = (AT - timedelta(days=rng.choice(DAYS_LATE))).date()
            invoice_id = f"I-{n}-{k}"
            issued = due - timedelta(days=30)
            amount = f"{rng.randrange(80, 9000)}.{rng.randrange(100):02d}"
            data = {"invoice_id": invoice_id, "number": f"F-{n}-{k}", "issue_date": issued.isoformat(),
                    "due_date": due.isoformat(), "currency": "EUR", "amount": amount}  # fmt: skip
            add(customer_id, f"inv-{invoice_id}", "invoice.issued", data, _morning(issued))
            luck = rng.random()
            if luck < 0.17:
                paid_on = min(due + timedelta(days=rng.randrange(-5, 10)), AT.date() - timedelta(days=1))
                paid = {"payment_id": f"P-{invoice_id}", "amount": amount, "currency": "EUR",
                        "received_on": paid_on.isoformat(), "allocations": [{"invoice_id": invoice_id,
                                                                            "amount": amount}]}  # fmt: skip
                add(customer_id, f"pay-{invoice_id}", "payment.received", paid, _morning(paid_on))
            elif luck < 0.27:
                disputed = {"invoice_id": invoice_id, "reason": "quantity delivered differs"}
                add(customer_id, f"disp-{invoice_id}", "invoice.disputed", disputed, _morning(issued) + timedelta(1))
    if batch:
        ledger.record(batch)
        recorded += len(batch)
    return recorded


def _morning(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)


def decide_only(engine: Engine, keys: list[tuple[str, str]], books: PolicyBooks, rules: Rules) -> int:
    """What the sweep cannot do without: every state loaded (snapshot and tail) and decided at ``AT``, in batches
    as the sweep reads them; nothing is recorded. Shown beside the sweep to say where its time goes."""
    ledger, decided = Ledger(engine), 0
    for start in range(0, len(keys), 200):
        for state in ledger.states(keys[start : start + 200]).values():
            decided += len(rules.decide(state, books(state.tenant).for_customer(state.profile), AT, rules.rates))
    return decided


def overdue_query(engine: Engine) -> int:
    """The baseline: every overdue invoice with its days late, in one query."""
    query = text(
        "SELECT tenant, customer_id, invoice_id, outstanding, CAST(:today AS date) - due_date AS days_late "
        "FROM invoice_balances WHERE status = 'open' AND due_date < CAST(:today AS date) ORDER BY tenant, customer_id"
    )
    with engine.connect() as conn:
        return len(conn.execute(query, {"today": AT.date()}).all())


@contextmanager
def quiet() -> Iterator[None]:
    """relance's log lines go to /dev/null meanwhile (rendered all the same: their cost is part of the figure)."""
    saved = sys.stderr
    with Path("/dev/null").open("w") as sink:
        sys.stderr = sink
        try:
            yield
        finally:
            sys.stderr = saved


def timed(label: str, action: Callable[[], T]) -> tuple[T, float]:
    began = time.perf_counter()
    with quiet():
        result = action()
    seconds = time.perf_counter() - began
    print(f"  {label:<52} {seconds:8.2f} s", flush=True)
    return result, seconds


def describe(summary: Summary) -> str:
    decided = ", ".join(f"{kind} {count}" for kind, count in sorted(summary.decisions.items()))
    return (
        f"{summary.customers} customers ({summary.unchanged} unchanged), {sum(summary.decisions.values())} decisions"
        f" ({decided or 'none'}), {summary.timers_set} timers set, {summary.failures} failures"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    common.sizing(parser, customers=2000, invoices=10000)
    parser.add_argument("--batch-size", type=int, default=None, help="customers per batch (RELANCE_ESCALATION_...)")
    args = parser.parse_args(argv)
    admin = common.database_server()
    common.print_machine(common.machine_facts(admin))
    configure_logging("info", "json")
    with common.temp_database(admin, "escalation") as url:
        overrides = {} if args.batch_size is None else {"escalation_batch_size": args.batch_size}
        settings = load_settings(database_url=common.sqlalchemy_url(url), **overrides)
        batch_size = settings.escalation_batch_size
        engine = make_engine(common.sqlalchemy_url(url))
        books, rules = policy_books(settings), real_rules(settings)
        print(f"workload: {args.customers:,} customers, {args.invoices:,} invoices; batches of {batch_size} customers")
        events, _ = timed("fill through Ledger.record", lambda: fill(Ledger(engine), args.customers, args.invoices))
        print(f"  ({events:,} events)")
        overdue, baseline = timed("baseline: one query, overdue invoices + days late", lambda: overdue_query(engine))
        print(f"  ({overdue:,} overdue invoices)")

        def sweep(at: datetime) -> Callable[[], Summary]:
            return lambda: tick(Ledger(engine), books, rules, at, batch_size=batch_size)

        catch_up, _ = timed(f"first sweep, {WEEK_BEFORE:%Y-%m-%d %H:%M}Z: catch-up", sweep(WEEK_BEFORE))
        print(f"  ({describe(catch_up)})")
        keys = Ledger(engine).streams(TENANT)
        decided, floor = timed(
            "floor: load every state, decide in memory, record nothing", lambda: decide_only(engine, keys, books, rules)
        )
        print(f"  ({decided:,} decisions)")
        first, swept = timed(f"sweep at {AT:%Y-%m-%d %H:%M}Z (clock tick)", sweep(AT))
        print(f"  ({describe(first)})")
        again, unchanged = timed("the same sweep again, nothing new", sweep(AT))
        print(f"  ({describe(again)})")
        with engine.begin() as conn:
            due = conn.execute(text("UPDATE timers SET due_at = :at"), {"at": NEXT_MORNING}).rowcount
        worker = EscalationWorker(settings, Ledger(engine), books, rules, threading.Event(), clock=lambda: NEXT_MORNING)

        def fire() -> int:
            fired = 0
            while claimed := worker.fire_due_timers():
                fired += claimed
            return fired

        fired, firing = timed(f"worker: {due:,} timers due {NEXT_MORNING:%Y-%m-%d %H:%M}Z, fired", fire)
        print(f"  ({fired:,} fired; {describe(worker.totals)})")
        engine.dispose()
    scale = args.customers / FULL_SIZE
    limit = 30.0 * scale
    sized = "" if args.customers == FULL_SIZE else f", scaled linearly from 30 s at {FULL_SIZE:,} customers"
    common.report(
        common.Figure(
            stage="escalation.sweep",
            value=swept,
            unit="s",
            baseline=baseline,
            target=f"< {limit:,.1f} s at {args.customers:,} customers / {args.invoices:,} invoices{sized}",
            met=swept < limit,
            detail={
                "customers": args.customers,
                "invoices": args.invoices,
                "decisions": sum(first.decisions.values()),
                "per_customer_ms": 1000 * swept / args.customers,
                "load_and_decide_seconds": floor,
            },
        )
    )
    speedup = swept / unchanged if unchanged else float("inf")
    common.report(
        common.Figure(
            stage="escalation.sweep_unchanged",
            value=speedup,
            unit="x faster than the sweep with decisions",
            baseline=None,
            target=">= 5x faster",
            met=speedup >= 5,
            detail={"seconds": unchanged, "sweep_seconds": swept},
        )
    )
    rate = fired / firing if firing else 0.0
    common.report(
        common.Figure(
            stage="escalation.timers",
            value=rate,
            unit="customers/s",
            baseline=None,
            target=">= 700 customers/s, one worker (the worker class in this process)",
            met=rate >= 700,
            detail={"timers": fired, "seconds": firing},
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
