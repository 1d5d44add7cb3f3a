"""``relance clock tick`` as an operator runs it, a separate process on PostgreSQL, over ledgers built directly.

The ledgers hold what older versions or plain SQL may have left: due dates at the edges of the calendar, an invoice
older than the rate table, a snapshot that no longer loads. The tick must evaluate every customer it can, name the
ones it cannot, and say so in its exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from tests.factories import TENANT, Ev, customer, incoming, invoice

pytestmark = pytest.mark.integration

AT = "2026-03-10T08:00:00Z"  # a Tuesday; the shipped rate table covers the first half of 2026
LATE = {"issue_date": "2026-01-02", "due_date": "2026-02-02"}  # 36 days late: past the formal notice (30 days)


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def given(ledger: Ledger, customer_id: str, *invoices: Ev) -> None:
    profile = customer(f"{customer_id} SARL", emails=[f"{customer_id.lower()}@example.com"])
    evs = [profile.with_id(f"cust-{customer_id}"), *(i.with_id(f"{customer_id}-{i.event_id}") for i in invoices)]
    outcomes = ledger.record([incoming(ev, customer_id=customer_id) for ev in evs])
    assert [o.status for o in outcomes] == ["applied"] * len(evs)


def tick(pg_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")}
    env |= {"RELANCE_DATABASE_URL": pg_url, "RELANCE_LOG_FORMAT": "json"}
    argv = [sys.executable, "-m", "services.cli", "clock", "tick", "--at", AT, "--tenant", TENANT]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def decisions(ledger: Ledger, customer_id: str, event_type: str) -> list[dict[str, Any]]:
    return [e.data for e in ledger.read_stream(TENANT, customer_id) if e.event_type == event_type]


def test_clock_tick_evaluates_every_customer_it_can_and_names_the_one_it_cannot(pg_url: str, engine: Engine) -> None:
    ledger = Ledger(engine)
    # Given customers whose ledgers hold a genuinely late invoice beside one the engine cannot evaluate
    given(
        ledger,
        "C-1",
        invoice("MAX", "500.00", issue_date="2026-01-01", due_date="9999-12-31"),
        invoice("A", "100.00", **LATE),
    )
    given(
        ledger,
        "C-2",
        invoice("MIN", "500.00", issue_date="0001-01-01", due_date="0001-01-01"),
        invoice("B", "200.00", **LATE),
    )
    given(ledger, "C-3", invoice("OLD", "700.00", issue_date="2019-05-01", due_date="2019-06-01", number="F-123"))
    given(ledger, "C-4", invoice("D", "400.00", **LATE))
    given(ledger, "C-5", invoice("E", "300.00", **LATE))
    # And a customer whose snapshot was damaged by hand, so that its state no longer loads
    with engine.begin() as conn:
        conn.execute(text("UPDATE customer_state SET state = CAST('{\"x\": 1}' AS json) WHERE customer_id = 'C-4'"))
    # When the clock is ticked in another process
    run = tick(pg_url)
    # Then it says which customer failed and why, exits 1, and logs the failure with the customer
    assert run.returncode == 1, run.stderr
    assert "4 customer(s) evaluated" in run.stdout
    assert "1 customer(s) could not be evaluated" in run.stdout and "acme-fr/C-4: KeyError" in run.stdout
    failures = [json.loads(line) for line in run.stderr.splitlines() if "escalation.evaluation_failed" in line]
    assert [(f["customer"], f["error"].split(":")[0]) for f in failures] == [("C-4", "KeyError")]
    assert "OverflowError" not in run.stderr
    # And every other customer's late invoices were reminded, without the invoice that could not be evaluated
    for customer_id, late in (("C-1", "A"), ("C-2", "B"), ("C-5", "E")):
        (reminder,) = decisions(ledger, customer_id, "reminder.requested")
        assert reminder["invoice_ids"] == [late] and reminder["level"] == "formal_notice"
    # And each invoice that could not be evaluated is one task with its reason
    tasks = {
        c: [(t["kind"], t["invoice_ids"]) for t in decisions(ledger, c, "task.created")] for c in ("C-1", "C-2", "C-3")
    }
    assert ("invoice_dates_invalid", ["MAX"]) in tasks["C-1"] and ("invoice_dates_invalid", ["MIN"]) in tasks["C-2"]
    assert tasks["C-3"] == [("interest_unavailable", ["OLD"])]
    (old,) = decisions(ledger, "C-3", "task.created")
    assert old["note"].startswith(
        "interest cannot be computed for invoice F-123: no reference rate for the semester starting 2019-01-01"
    )
    # When the same tick runs again
    again = tick(pg_url)
    # Then nothing is decided twice: no new task every tick
    assert again.returncode == 1 and "0 decision(s) recorded" in again.stdout
    assert len(decisions(ledger, "C-3", "task.created")) == 1
