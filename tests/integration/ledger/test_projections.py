"""The projections a batch writes for many customers at once are those a rebuild from the log gives."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Table, func, select

from shared.ledger import projections
from shared.ledger.db import make_engine
from shared.ledger.schema import credits, customer_balances, customer_state, invoice_balances
from shared.ledger.store import Ledger
from tests.factories import TENANT, credit_note, customer, incoming, invoice, payment

CUSTOMERS = 60


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    engine = make_engine(ledger_url)
    yield Ledger(engine)
    engine.dispose()


def _count(ledger: Ledger, table: Table) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_batches_inserting_and_updating_every_projection_of_many_customers_leave_what_a_rebuild_gives(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a snapshot every few events, so that one batch writes snapshots for some streams and heads for others
    monkeypatch.setattr(projections, "SNAPSHOT_EVERY", 3)
    ids = [f"C-{n:03d}" for n in range(CUSTOMERS)]
    # When a first batch opens every stream (heads, snapshots, invoices and balances in two currencies, inserted)
    first = [
        incoming(ev, customer_id=c)
        for c in ids
        for ev in (
            customer(f"Client {c}"),
            invoice(f"{c}-1", "100.00"),
            invoice(f"{c}-2", "250.00", currency="USD"),
        )
    ]
    outcomes = ledger.record(first)
    assert all(o.status == "applied" for o in outcomes), {o.reason for o in outcomes}
    # And a second batch pays, credits and invoices every customer, some more than others (updates and inserts of
    # every projection, in the order the customers' events arrive, interleaved)
    second = []
    for step in range(3):
        for n, c in enumerate(ids):
            if step == 0:
                second.append(incoming(payment(f"{c}-P", "60.00"), customer_id=c))
            elif step == 1 and n % 2:
                second.append(incoming(credit_note(f"{c}-N", "40.00", currency="USD"), customer_id=c))
            elif step == 2 and n % 3:
                second.append(incoming(invoice(f"{c}-3", "75.50"), customer_id=c))
    assert all(o.status == "applied" for o in ledger.record(second))

    # Then every projection has its rows, and they are what a fold of each stream from the log gives
    assert _count(ledger, customer_state) == CUSTOMERS
    assert _count(ledger, invoice_balances) == CUSTOMERS * 2 + len([n for n in range(CUSTOMERS) if n % 3])
    assert _count(ledger, credits) == CUSTOMERS + CUSTOMERS // 2
    assert _count(ledger, customer_balances) == CUSTOMERS * 2
    report = ledger.verify()
    assert report.ok and report.streams == CUSTOMERS, report.problems[:5]
    with ledger.engine.connect() as conn:
        stored = conn.execute(
            select(customer_balances.c.currency, customer_balances.c.balance, customer_balances.c.version).where(
                customer_balances.c.tenant == TENANT, customer_balances.c.customer_id == ids[1]
            )
        ).all()
    assert sorted((c, Decimal(b), v) for c, b, v in stored) == [
        ("EUR", Decimal("115.50"), 6),
        ("USD", Decimal("210.00"), 6),
    ]
