"""A global reader (projections, relay, replay) never skips an event that commits late.

On PostgreSQL a bigserial is taken at INSERT but becomes visible at COMMIT: a transaction that inserted position 5
and commits after position 6 did is invisible to a reader passing 6, and a reader that then asks for "position > 6"
never sees 5. The ledger's reader orders by the appending transaction's id and stops below the oldest transaction
still running, so it waits instead of skipping. The test holds such a transaction open to show both behaviours.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from shared.ledger.db import make_engine
from shared.ledger.schema import events
from shared.ledger.store import Cursor, Ledger, RecordedEvent
from tests.factories import incoming, invoice

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_ledger(pg_url: str) -> Iterator[Ledger]:
    engine = make_engine(pg_url, pool_size=10)
    yield Ledger(engine)
    engine.dispose()


def naive_read(ledger: Ledger, after_position: int) -> list[int]:
    """What a reader using the bigserial alone as its cursor would see."""
    with ledger.engine.connect() as conn:
        return list(conn.execute(select(events.c.position).where(events.c.position > after_position)).scalars())


def eventually(read: Callable[[], list[RecordedEvent]], count: int, seconds: float = 30) -> list[RecordedEvent]:
    """Read until ``count`` events came back. Other sessions on the same server may briefly hold the horizon."""
    deadline = time.monotonic() + seconds
    got: list[RecordedEvent] = []
    while time.monotonic() < deadline:
        got += read()
        if len(got) >= count:
            return got
        time.sleep(0.05)
    return got


def test_the_reader_waits_for_an_open_transaction_instead_of_skipping_its_event(pg_ledger: Ledger) -> None:
    ledger = pg_ledger
    # Given one committed event, read by both readers
    ledger.record([incoming(invoice("INV-0", "10.00"), customer_id="C-0")])
    cursor = Cursor()

    def read_more() -> list[RecordedEvent]:
        nonlocal cursor
        batch, cursor = ledger.read_all(cursor)
        return batch

    assert [e.event_id for e in eventually(read_more, 1)] == ["inv-INV-0"]
    naive_cursor = max(naive_read(ledger, 0))

    # Given a transaction that appended an event and has not committed yet
    slow = ledger.engine.connect()
    slow_tx = slow.begin()
    try:
        ledger.record([incoming(invoice("INV-SLOW", "20.00"), customer_id="C-SLOW")], conn=slow)
        # When later events commit in other transactions, for other customers
        ledger.record([incoming(invoice("INV-FAST-1", "30.00"), customer_id="C-FAST")])
        ledger.record([incoming(invoice("INV-FAST-2", "40.00"), customer_id="C-FAST")])

        # Then a naive reader already sees the later events, past the position the open transaction holds
        seen_by_naive = naive_read(ledger, naive_cursor)
        assert len(seen_by_naive) == 2
        naive_cursor = max(seen_by_naive)
        # And the ledger's reader returns nothing past the open transaction, and keeps its cursor
        before = cursor
        assert read_more() == []
        assert cursor == before

        # When the slow transaction commits
        slow_tx.commit()
    finally:
        slow.close()

    # Then the ledger's reader returns the late event first, then the others: nothing skipped, nothing twice
    late = eventually(read_more, 3)
    assert [e.event_id for e in late] == ["inv-INV-SLOW", "inv-INV-FAST-1", "inv-INV-FAST-2"]
    # And the late event really has the smaller position: a naive reader, continuing from its cursor, missed it
    slow_position = late[0].position
    assert slow_position < naive_cursor
    assert slow_position not in naive_read(ledger, naive_cursor)
    # And a full scan from the start agrees with what the reader collected
    assert [e.event_id for e in ledger.iter_all()] == ["inv-INV-0"] + [e.event_id for e in late]


def test_a_reader_following_concurrent_writers_collects_every_event_once(pg_ledger: Ledger) -> None:
    ledger = pg_ledger
    stop = threading.Event()
    collected: list[str] = []
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        rng = random.Random(worker)
        try:
            for n in range(25):
                items = [
                    incoming(invoice(f"W{worker}-{n}-{k}", "1.00"), customer_id=f"C-{worker}-{k % 2}")
                    for k in range(rng.randint(1, 4))
                ]
                ledger.record(items)
                time.sleep(rng.uniform(0, 0.01))
        except BaseException as exc:
            errors.append(exc)

    def follow() -> None:
        cursor = Cursor()
        try:
            while True:
                finished = stop.is_set()
                batch, cursor = ledger.read_all(cursor, limit=7)
                collected.extend(e.event_id for e in batch)
                if finished and not batch:
                    return
                if not batch:
                    time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    # Given a reader following the log while four writers append with overlapping transactions
    reader = threading.Thread(target=follow)
    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    # When the writers are done (the reader drains what is left; give other sessions time to finish)
    time.sleep(0.2)
    stop.set()
    reader.join(timeout=60)
    assert not errors, errors
    # Then the reader collected every event of the log exactly once
    in_log = sorted(e.event_id for e in ledger.iter_all())
    assert len(collected) == len(set(collected))
    assert sorted(collected) == in_log
    with ledger.engine.connect() as conn:
        assert len(in_log) == len(list(conn.execute(select(events.c.event_id)).scalars()))


def test_sqlite_reader_returns_events_in_commit_order_page_by_page(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        ledger = Ledger(engine)
        # Given events of several customers recorded in several transactions
        for batch in range(5):
            ledger.record([incoming(invoice(f"INV-{batch}-{k}", "1.00"), customer_id=f"C-{k % 3}") for k in range(4)])
        # When a reader walks the log three events at a time
        cursor, pages = Cursor(), []
        while True:
            page, cursor = ledger.read_all(cursor, limit=3)
            if not page:
                break
            pages.append(page)
        walked = [e for page in pages for e in page]
        # Then it sees every event once, transaction after transaction, in position (= commit) order
        per_transaction = [{e.event_id for e in walked[4 * b : 4 * b + 4]} for b in range(5)]
        assert per_transaction == [{f"inv-INV-{b}-{k}" for k in range(4)} for b in range(5)]
        positions = [e.position for e in walked]
        assert positions == sorted(positions) and len(set(positions)) == 20
        assert all(len(page) <= 3 for page in pages)
        assert cursor.position == positions[-1]
        # And a later append is picked up from the cursor without re-reading the rest
        ledger.record([incoming(invoice("INV-LATE", "1.00"))])
        page, _ = ledger.read_all(cursor)
        assert [e.event_id for e in page] == ["inv-INV-LATE"]
    finally:
        engine.dispose()
