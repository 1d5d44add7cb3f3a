"""The gauges that need a query count what the tables hold, on both engines, and a failing query is survived."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from shared.ledger.db import make_engine
from shared.ledger.schema import checkpoints, cursors, outbox, timers
from shared.ledger.store import Ledger
from shared.observability.gauges import Refresher, escalation_gauges, outbox_gauges
from shared.observability.metrics import EscalationMetrics, RelayMetrics
from tests.factories import customer, incoming, invoice

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = make_engine(ledger_url)
    yield engine
    engine.dispose()


def command(n: int, kind: str, age: timedelta, **state: Any) -> dict[str, Any]:
    return {
        "tenant": "acme-fr",
        "customer_id": f"C-{n}",
        "command_id": f"cmd-{n}",
        "kind": kind,
        "payload": {},
        "created_at": NOW - age,
        "attempts": 0,
        "published_at": None,
        "dead_at": None,
        **state,  # every row with the same keys: one executemany
    }


def test_outbox_gauges_count_the_pending_and_dead_commands_of_the_transport_and_the_oldest_ones_age(
    engine: Engine,
) -> None:
    # Given commands pending, published and dead, of the relay's kinds and of another
    with engine.begin() as conn:
        conn.execute(
            insert(outbox),
            [
                command(1, "notifier.send_reminder", timedelta(minutes=10)),
                command(2, "erp.credit_block", timedelta(minutes=3)),
                command(3, "notifier.send_reminder", timedelta(hours=2), published_at=NOW),
                command(4, "erp.credit_block", timedelta(hours=1), dead_at=NOW),
                command(5, "erp.credit_unblock", timedelta(days=1)),  # not the relay's in this test
            ],
        )
    metrics = RelayMetrics()
    # When the gauges are refreshed
    outbox_gauges(engine, metrics, ("notifier.send_reminder", "erp.credit_block"), clock=lambda: NOW)()
    # Then they count the pending and dead rows of those kinds, and the oldest pending one is 10 minutes old
    assert metrics.outbox_pending._value.get() == 2
    assert metrics.outbox_oldest_age._value.get() == 600
    assert metrics.outbox_dead._value.get() == 1


def test_an_empty_outbox_has_no_oldest_command(engine: Engine) -> None:
    metrics = RelayMetrics()
    outbox_gauges(engine, metrics, ("notifier.send_reminder",), clock=lambda: NOW)()
    assert (metrics.outbox_pending._value.get(), metrics.outbox_oldest_age._value.get()) == (0, 0)


def test_escalation_gauges_count_due_and_overdue_timers_the_lag_behind_the_log_and_the_checkpoint_age(
    engine: Engine,
) -> None:
    # Given timers due now, overdue and later, a log of four events of which the follower read two
    Ledger(engine).record(
        [incoming(ev, customer_id=c) for c in ("C-1", "C-2") for ev in (customer(c), invoice(f"I-{c}", "10.00"))]
    )
    with engine.begin() as conn:
        due = [("C-1", timedelta(minutes=-1)), ("C-2", timedelta(minutes=-6)), ("C-3", timedelta(minutes=5))]
        conn.execute(
            insert(timers),
            [
                {"tenant": "acme-fr", "customer_id": c, "due_at": NOW + at, "version": 1, "updated_at": NOW}
                for c, at in due
            ],
        )
        conn.execute(insert(cursors).values(name="escalation", tx_id=-1, position=2, updated_at=NOW))
    metrics = EscalationMetrics()
    refresh = escalation_gauges(engine, metrics, "escalation", clock=lambda: NOW)
    # When refreshed with no checkpoint yet, then with one written an hour ago
    refresh()
    assert (metrics.timers_due._value.get(), metrics.timers_overdue._value.get()) == (2, 1)
    assert metrics.consumer_lag._value.get() == 2
    assert math.isnan(metrics.checkpoint_age._value.get())
    with engine.begin() as conn:
        conn.execute(
            insert(checkpoints).values(
                number=1,
                created_at=NOW - timedelta(hours=1),
                digest="d" * 64,
                streams=2,
                events=4,
                merkle_root="m" * 64,
                key_id="k",
                document={},
            )
        )
    refresh()
    assert metrics.checkpoint_age._value.get() == 3600


def test_a_failing_gauge_query_leaves_the_others_refreshed() -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("database away")

    def fine() -> None:
        calls.append("fine")

    stop = threading.Event()
    refresher = Refresher([broken, fine], stop, interval=0.01).start()
    try:
        deadline = threading.Event()
        while len(calls) < 3 and not deadline.wait(0.01):
            pass
    finally:
        stop.set()
        refresher.join()
    assert len(calls) >= 3
