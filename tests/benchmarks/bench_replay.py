"""Replay of a log's decisions on real PostgreSQL, next to the in-memory fold + decide of the same events; and the
fold of one long stream.

    python -m tests.benchmarks.bench_replay [--customers 400] [--invoices 4000] [--ticks 3] [--rounds 2]

The ledger is filled through the write path (:mod:`tests.benchmarks.ledgers`), with ``relance clock tick`` run at
``--ticks`` instants between the months (the escalation worker's :func:`tick`), so the log holds recorded ticks and
the decisions taken at them. Then, alternating, ``--rounds`` times each on the same database:

- **baseline**: one streamed SELECT of the log in stream order, every event parsed and folded, the engine's
  ``decide`` called at every recorded tick on the state folded so far; nothing compared, nothing written;
- **relance**: :func:`services.escalation.replay.replay` in memory (what ``relance replay`` runs): the same, plus
  the decisions chained as evaluate records them and every stream compared with the recorded one.

``fold.long_stream``: one customer's stream of ``--long`` events folded in memory; the cost per event of the whole
stream against that of a stream of the same shape four times shorter (the old sorting fold, on shorter streams,
alongside).
"""

from __future__ import annotations

import argparse
import gc
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.escalation.replay import replay
from services.escalation.service import CLOCK_TICKED, PolicySource
from services.escalation.worker import policy_books, real_rules, tick
from shared.config import load_settings
from shared.contracts import events
from shared.contracts.events import parse
from shared.ledger.db import make_engine
from shared.ledger.hashing import utc
from shared.ledger.scan import STREAMED, read_only
from shared.ledger.schema import events as log_table
from shared.ledger.state import CustomerState
from shared.ledger.store import Ledger
from tests.benchmarks.common import (
    Figure,
    database_server,
    machine_facts,
    print_machine,
    report,
    sizing,
    sqlalchemy_url,
    temp_database,
)
from tests.benchmarks.ledgers import FIRST_DAY, fill, fold_seconds, receivables

EVENTS_PER_SECOND = 20000
SHARE_OF_FLOOR = 0.5
LONG_STREAM_RATIO = 0.9
EVENTS_PER_INVOICE = 1.88  # of the workload: the invoice, and its payment, credit note or dispute 88% of the time


def fold_and_decide(ledger: Ledger, books: Any, rules: Any) -> tuple[int, int]:
    """The floor of a replay: read, fold, decide at every recorded tick. Returns (events, ticks)."""
    seen = ticks = 0
    tenants: dict[str, PolicySource] = {}
    state: CustomerState | None = None
    with read_only(ledger.engine) as conn:
        query = select(log_table).order_by(log_table.c.tenant, log_table.c.customer_id, log_table.c.version)
        for row in conn.execute(query, execution_options=STREAMED).mappings():
            seen += 1
            if state is None or (state.tenant, state.customer_id) != (row["tenant"], row["customer_id"]):
                state = CustomerState(tenant=row["tenant"], customer_id=row["customer_id"])
            if row["event_type"] == CLOCK_TICKED:
                as_of = utc(events.ClockTicked.model_validate(row["data"]).as_of)
                book = tenants.get(state.tenant) or tenants.setdefault(state.tenant, books(state.tenant))
                rules.decide(state, book.for_customer(state.profile), as_of, rules.rates)
                ticks += 1
            state.apply(
                parse(row["event_type"], row["data"]),
                row["occurred_at"],
                row["event_id"],
                recorded_at=row["recorded_at"],
            )
            state.version = row["version"]
    return seen, ticks


def long_stream(count: int) -> None:
    from tests.unit.ledger.test_fold_indexes import ScanningClaims, SortingReceivables

    # Two streams of the same shape (the same mix of events over the same months), one four times the other
    items = [fact.item for fact in receivables(1, round(count / EVENTS_PER_INVOICE))]
    quarter = [fact.item for fact in receivables(1, round(count / 4 / EVENTS_PER_INVOICE))]
    seconds: dict[str, list[float]] = {"short": [], "long": []}
    for _ in range(5):  # alternating, the best of five: the machine is shared
        for label, stream in (("short", quarter), ("long", items)):
            gc.collect()
            seconds[label].append(fold_seconds(stream, time.perf_counter)[0])
    rate = {"short": len(quarter) / min(seconds["short"]), "long": len(items) / min(seconds["long"])}
    # The old sorting fold, for contrast, on the short stream and one twice as long (on the long one it takes minutes)
    half = [fact.item for fact in receivables(1, round(count / 2 / EVENTS_PER_INVOICE))]
    old: dict[str, float] = {}
    for stream in (quarter, half):
        state = CustomerState(tenant="t", customer_id="c", receivables=SortingReceivables(), claims=ScanningClaims())
        typed = [parse(i.event_type, i.data) for i in stream]
        began = time.perf_counter()
        for item, event in zip(stream, typed, strict=True):
            state.apply(event, item.occurred_at, item.event_id, recorded_at=item.occurred_at)
        old[f"{len(stream)} events"] = len(stream) / (time.perf_counter() - began)
    for label, stream in (("short", quarter), ("long", items)):
        print(f"  fold of {len(stream):,} events: {rate[label]:,.0f} events/s")
    print("  the old sorting fold: " + ", ".join(f"{k}: {v:,.0f} events/s" for k, v in old.items()))
    report(
        Figure(
            stage="fold.long_stream",
            value=rate["long"],
            unit=f"events/s folding a {len(items):,}-event stream",
            baseline=rate["short"],
            target=f"as fast per event as a {len(quarter):,}-event stream: ratio >= {LONG_STREAM_RATIO}",
            met=rate["long"] / rate["short"] >= LONG_STREAM_RATIO,
            detail={"old_fold_events_per_s": {k: round(v) for k, v in old.items()}},
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sizing(parser, customers=400, invoices=4000)
    parser.add_argument("--ticks", type=int, default=3, help="clock ticks recorded between the months (3)")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each, alternating (2)")
    parser.add_argument("--long", type=int, default=20000, help="events of the long stream (20,000)")
    args = parser.parse_args(argv)
    admin = database_server()
    print_machine(machine_facts(admin))
    long_stream(args.long)
    with temp_database(admin, "replay") as url:
        settings = load_settings(database_url=sqlalchemy_url(url))
        engine = make_engine(sqlalchemy_url(url))
        ledger = Ledger(engine)
        books, rules = policy_books(settings), real_rules(settings)
        facts = receivables(args.customers, args.invoices)
        began = time.perf_counter()
        at = 0
        for n in range(1, args.ticks + 1):
            instant = datetime.combine(FIRST_DAY, datetime.min.time(), tzinfo=UTC) + timedelta(days=45 * n)
            at = fill(ledger, facts, until=instant.date(), start=at)
            summary = tick(ledger, books, rules, instant)
            print(f"  tick at {instant:%Y-%m-%d}: {sum(summary.decisions.values()):,} decision(s)")
        fill(ledger, facts, start=at)
        print(
            f"  filled {len(facts):,} ERP events of {args.customers:,} customers in {time.perf_counter() - began:.1f} s"
        )
        floor_seconds: list[float] = []
        replay_seconds: list[float] = []
        total = ticks = 0
        for _ in range(args.rounds):
            began = time.perf_counter()
            total, ticks = fold_and_decide(ledger, books, rules)
            floor_seconds.append(time.perf_counter() - began)
            began = time.perf_counter()
            result = replay(ledger, None, books, rules)
            replay_seconds.append(time.perf_counter() - began)
            assert result.ok, [str(d) for d in result.divergences[:5]]
            print(
                f"  floor {floor_seconds[-1]:.2f} s, replay {replay_seconds[-1]:.2f} s "
                f"({result.streams:,} streams, {total:,} events, {ticks:,} ticks, {result.decisions:,} decisions)"
            )
        engine.dispose()
    value, baseline = total / min(replay_seconds), total / min(floor_seconds)
    report(
        Figure(
            stage="replay",
            value=value,
            unit="events/s",
            baseline=baseline,
            target=f">= {EVENTS_PER_SECOND:,} events/s and >= {SHARE_OF_FLOOR} of in-memory fold + decide",
            met=value >= EVENTS_PER_SECOND and value / baseline >= SHARE_OF_FLOOR,
            detail={"events": total, "ticks": ticks, "rounds": args.rounds},
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
