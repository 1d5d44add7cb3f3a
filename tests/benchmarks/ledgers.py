"""Ledgers to measure the audit paths on: customers' receivables as the ERP sends them, in time order.

Each customer gets its profile, then invoices spread over four months (due 30 days after issue), most paid by a
payment naming them, some by a payment naming none (allocated to the oldest open invoices), a few credit notes on an
invoice, a few disputes. :func:`fill` records them through the ledger's own write path in batches of 1,000, as the
ingest worker does, up to an instant, so that escalation ticks can be run between the phases.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from shared.contracts.events import parse
from shared.ledger.state import CustomerState
from shared.ledger.store import Incoming, Ledger

TENANT = "bench"
FIRST_DAY = date(2026, 1, 5)
DAYS = 120


@dataclass(frozen=True, slots=True)
class Fact:
    """One ERP event of the workload, and the day it happened."""

    day: date
    item: Incoming


def receivables(customers: int, invoices: int, *, seed: int = 7) -> list[Fact]:
    """The workload's ERP events, sorted by day (then by customer, then in each customer's own order)."""
    rng = random.Random(seed)
    facts: list[Fact] = []
    for c in range(customers):
        customer_id = f"C-{c:05d}"
        facts.extend(_customer(rng, customer_id, invoices // customers + (c < invoices % customers)))
    facts.sort(key=lambda fact: fact.day)  # stable: each customer's events keep their order within a day
    return facts


def _customer(rng: random.Random, customer_id: str, invoices: int) -> Iterator[Fact]:
    def fact(day: date, n: int, event_type: str, data: dict[str, Any]) -> Fact:
        at = datetime.combine(day, time(9), tzinfo=UTC) + timedelta(seconds=n)
        return Fact(day, Incoming(TENANT, customer_id, f"{customer_id}/{n}", event_type, data, at))

    n = 0
    profile = {"name": f"Client {customer_id}", "emails": [f"ap@{customer_id.lower()}.example"], "language": "fr"}
    yield fact(FIRST_DAY, n, "customer.upserted", profile)
    for i in range(invoices):
        issued = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        due = issued + timedelta(days=30)
        invoice_id = f"{customer_id}-I{i}"
        amount = rng.randrange(50, 5000)
        n += 1
        data: dict[str, Any] = {"invoice_id": invoice_id, "number": f"F-{invoice_id}", "issue_date": issued.isoformat(),
                "due_date": due.isoformat(), "currency": "EUR", "amount": f"{amount}.00"}  # fmt: skip
        yield fact(issued, n, "invoice.issued", data)
        roll = rng.random()
        paid_on = due + timedelta(days=rng.randrange(-20, 40))
        n += 1
        if roll < 0.65:
            allocations = [{"invoice_id": invoice_id, "amount": f"{amount}.00"}]
            data = {"payment_id": f"P-{invoice_id}", "amount": f"{amount}.00", "currency": "EUR",
                    "received_on": paid_on.isoformat(), "allocations": allocations}  # fmt: skip
            yield fact(max(paid_on, issued), n, "payment.received", data)
        elif roll < 0.80:
            data = {"payment_id": f"P-{invoice_id}", "amount": f"{amount // 2}.00", "currency": "EUR",
                    "received_on": paid_on.isoformat()}  # fmt: skip
            yield fact(max(paid_on, issued), n, "payment.received", data)
        elif roll < 0.85:
            data = {"credit_note_id": f"CN-{invoice_id}", "amount": f"{amount}.00", "currency": "EUR",
                    "issued_on": (issued + timedelta(days=5)).isoformat(), "invoice_id": invoice_id}  # fmt: skip
            yield fact(issued + timedelta(days=5), n, "credit_note.issued", data)
        elif roll < 0.88:
            data = {"invoice_id": invoice_id, "reason": "goods damaged"}
            yield fact(due + timedelta(days=3), n, "invoice.disputed", data)


def fill(ledger: Ledger, facts: list[Fact], *, until: date | None = None, start: int = 0) -> int:
    """Record the facts from ``start`` whose day is before ``until`` (all if None); returns where it stopped."""
    batch: list[Incoming] = []
    end = start
    while end < len(facts) and (until is None or facts[end].day < until):
        batch.append(facts[end].item)
        end += 1
        if len(batch) == 1000:
            ledger.record(batch)
            batch = []
    if batch:
        ledger.record(batch)
    return end


def fold_seconds(items: list[Incoming], clock: Any) -> tuple[float, CustomerState]:
    """Seconds to fold the items into a fresh state (parsed beforehand, so this is the fold alone)."""
    first = items[0]
    state = CustomerState(tenant=first.tenant, customer_id=first.customer_id)
    typed = [parse(i.event_type, i.data) for i in items]
    began = clock()
    for item, event in zip(items, typed, strict=True):
        if state.check(event).verdict == "new":
            state.apply(event, item.occurred_at, item.event_id, recorded_at=item.occurred_at)
            state.version += 1
    return clock() - began, state
