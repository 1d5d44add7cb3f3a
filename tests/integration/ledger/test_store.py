"""The event store's contract, run on PostgreSQL and SQLite alike.

Appends read back as written, versions are gapless, a known event_id is a no-op reported as a duplicate, an
expected version that does not match is a conflict, every stream is hash-chained so an altered, removed or
reordered event is detected, the database itself refuses to change the log, and the projections kept beside it are
exactly what a replay of the log computes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DBAPIError

from shared.ledger.db import make_engine
from shared.ledger.hashing import GENESIS
from shared.ledger.schema import events, invoice_balances
from shared.ledger.store import Incoming, Ledger, LedgerRefused
from tests.factories import (
    CUSTOMER,
    T0,
    TENANT,
    Ev,
    assert_consistent,
    cancellation,
    credit_note,
    customer,
    deliveries,
    dispute,
    dispute_resolved,
    expected_balances,
    histories,
    incoming,
    invoice,
    payment,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    engine = make_engine(ledger_url)
    yield Ledger(engine)
    engine.dispose()


def record(ledger: Ledger, *evs: Ev, **kwargs: Any) -> list[str]:
    return [o.status for o in ledger.record([incoming(ev, **kwargs) for ev in evs])]


def history() -> list[Ev]:
    """A small realistic stream, out of order: the payment and a credit note arrive before their invoices."""
    return [
        customer("Boulangeries Martin SAS"),
        payment("P1", "150.00"),
        credit_note("CN1", "20.00", invoice_id="INV-2"),
        invoice("INV-1", "100.00", issue_date="2026-09-01"),
        invoice("INV-2", "200.00", issue_date="2026-10-01"),
        dispute("INV-2"),
        invoice("INV-3", "80.00", issue_date="2026-10-15"),
        payment("P2", "30.00", allocations={"INV-3": "30.00"}),
        cancellation("INV-1"),
    ]


def at_minutes(evs: list[Ev]) -> list[Ev]:
    return [ev.at(T0 + timedelta(minutes=n)) for n, ev in enumerate(evs)]


# ---------------------------------------------------------------------------------------------------- appending
def test_appended_events_read_back_as_written_with_gapless_versions(ledger: Ledger) -> None:
    # Given a stream written in three transactions
    written = at_minutes(history())
    outcomes = ledger.record([incoming(ev) for ev in written[:4]])
    outcomes += ledger.record([incoming(ev) for ev in written[4:5]])
    outcomes += ledger.record([incoming(ev) for ev in written[5:]])
    # Then every event was applied with the next version
    assert [(o.status, o.version) for o in outcomes] == [("applied", n) for n in range(1, len(written) + 1)]
    # And reading the stream returns them in order, as written
    stream = ledger.read_stream(TENANT, CUSTOMER)
    assert [e.version for e in stream] == list(range(1, len(written) + 1))
    assert [(e.event_id, e.event_type, e.data, e.occurred_at) for e in stream] == [
        (ev.event_id, ev.event_type, ev.data, ev.occurred_at) for ev in written
    ]
    assert all(e.tenant == TENANT and e.customer_id == CUSTOMER for e in stream)
    positions = [e.position for e in stream]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    # And reading from a version returns the tail only
    assert [e.version for e in ledger.read_stream(TENANT, CUSTOMER, from_version=8)] == [8, 9]


def test_metadata_is_kept_with_the_event(ledger: Ledger) -> None:
    meta = {"correlation_id": "corr-1", "source_message_id": "amqp-77", "received_at": "2026-11-02T09:15:01Z"}
    ev = Ev("invoice.issued", invoice("INV-1", "10.00").data, "e-1", T0, meta)
    assert record(ledger, ev) == ["applied"]
    (stored,) = ledger.read_stream(TENANT, CUSTOMER)
    assert stored.metadata == meta
    assert stored.recorded_at.utcoffset() == timedelta(0)


def test_one_batch_for_many_customers_gives_each_its_own_gapless_stream(ledger: Ledger) -> None:
    # Given one transaction with interleaved events of three customers
    items = [
        incoming(invoice(f"INV-{c}-{n}", "10.00").with_id(f"e-{c}-{n}"), customer_id=f"C-{c}")
        for n in range(4)
        for c in "ABC"
    ]
    outcomes = ledger.record(items)
    # Then outcomes come back in the items' order and each customer counts from 1
    assert [o.version for o in outcomes] == [n for n in range(1, 5) for _ in "ABC"]
    for c in "ABC":
        assert [e.version for e in ledger.read_stream(TENANT, f"C-{c}")] == [1, 2, 3, 4]
        assert ledger.state(TENANT, f"C-{c}").version == 4


def test_an_event_id_already_in_the_log_is_a_no_op_reported_as_duplicate(ledger: Ledger) -> None:
    inv = invoice("INV-1", "100.00")
    # Given the event recorded once
    assert record(ledger, inv) == ["applied"]
    # When it is delivered again, alone and then inside a batch with a new event
    again = ledger.record([incoming(inv)])
    mixed = record(ledger, payment("P1", "10.00"), inv)
    # Then the redeliveries are duplicates with a reason, and the log holds each event once
    assert again[0].status == "duplicate" and inv.event_id in again[0].reason
    assert mixed == ["applied", "duplicate"]
    assert [e.event_id for e in ledger.read_stream(TENANT, CUSTOMER)] == [inv.event_id, "pay-P1"]
    assert ledger.state(TENANT, CUSTOMER).balances() == {"EUR": Decimal("90.00")}


def test_the_same_event_twice_in_one_batch_is_applied_once(ledger: Ledger) -> None:
    inv = invoice("INV-1", "100.00")
    pay = payment("P1", "40.00")
    assert record(ledger, inv, pay, inv, pay, pay) == ["applied", "applied", "duplicate", "duplicate", "duplicate"]
    assert len(ledger.read_stream(TENANT, CUSTOMER)) == 2
    assert ledger.state(TENANT, CUSTOMER).balances() == {"EUR": Decimal("60.00")}


def test_a_redelivered_event_id_is_a_duplicate_even_for_another_customer_of_the_tenant(ledger: Ledger) -> None:
    # event_id is unique per tenant: a buggy ERP reusing an id for another customer must not double-apply it
    ev = invoice("INV-1", "100.00")
    assert record(ledger, ev) == ["applied"]
    assert record(ledger, ev, customer_id="C-OTHER") == ["duplicate"]
    assert ledger.read_stream(TENANT, "C-OTHER") == []


def test_event_ids_are_scoped_by_tenant(ledger: Ledger) -> None:
    ev = invoice("INV-1", "100.00")
    assert record(ledger, ev, tenant="acme-fr") == ["applied"]
    assert record(ledger, ev, tenant="acme-de") == ["applied"]


def test_same_invoice_under_another_event_id_is_duplicate_or_rejected_by_content(ledger: Ledger) -> None:
    original = invoice("INV-1", "100.00")
    assert record(ledger, original) == ["applied"]
    # The ERP resends the same invoice under a new message id: a duplicate
    resent = ledger.record([incoming(original.with_id("erp-resend"))])
    assert resent[0].status == "duplicate"
    # The ERP reuses the invoice id with another amount: rejected with a reason, nothing appended
    changed = ledger.record([incoming(invoice("INV-1", "120.00").with_id("erp-changed"))])
    assert changed[0].status == "rejected"
    assert "INV-1" in changed[0].reason and "different content" in changed[0].reason
    assert [e.event_id for e in ledger.read_stream(TENANT, CUSTOMER)] == [original.event_id]


# ---------------------------------------------------------------------------------------------------- reused ids
def erp(ev: Ev, **kwargs: Any) -> Incoming:
    """As ingest records an ERP event: an event_id already used is a duplicate only if the content is the same."""
    return incoming(ev, dedupe="content", **kwargs)


def test_an_erp_event_id_reused_for_another_event_is_rejected_naming_the_id_and_what_differs(ledger: Ledger) -> None:
    # Given an invoice recorded under an ERP event_id
    first = invoice("INV-1", "100.00").with_id("E-1")
    assert [o.status for o in ledger.record([erp(first)])] == ["applied"]
    # When the same event_id comes again: the same event redelivered (other transport metadata), then another invoice
    redelivered = Ev(first.event_type, first.data, "E-1", metadata={"message_id": "m-2", "received_at": "later"})
    other = invoice("INV-2", "250.00").with_id("E-1")
    outcomes = ledger.record([erp(redelivered), erp(other)])
    # Then the redelivery is a harmless duplicate and the other event is rejected with a reason naming the id
    assert [o.status for o in outcomes] == ["duplicate", "rejected"]
    assert "event_id E-1" in outcomes[1].reason
    assert "data.amount" in outcomes[1].reason and "data.invoice_id" in outcomes[1].reason
    assert "250.00" not in outcomes[1].reason  # names fields, never echoes values
    # and nothing was appended
    assert [e.event_id for e in ledger.read_stream(TENANT, CUSTOMER)] == ["E-1"]


def test_an_erp_event_id_reused_for_another_customer_or_instant_is_rejected(ledger: Ledger) -> None:
    first = invoice("INV-1", "100.00").with_id("E-1")
    ledger.record([erp(first)])
    other_customer = ledger.record([erp(first, customer_id="C-OTHER")])[0]
    later = ledger.record([erp(first.at(T0 + timedelta(hours=1)))])[0]
    assert other_customer.status == "rejected" and "customer_id" in other_customer.reason
    assert later.status == "rejected" and "occurred_at" in later.reason
    assert ledger.read_stream(TENANT, "C-OTHER") == []


def test_an_event_id_reused_within_one_batch_keeps_the_first_message_whatever_the_customers(ledger: Ledger) -> None:
    # Given one batch where an event_id comes three times: for C-9, again for C-9 with another amount, for C-1
    first = invoice("INV-1", "100.00").with_id("E-1")
    changed = invoice("INV-1", "120.00").with_id("E-1")
    outcomes = ledger.record([erp(first, customer_id="C-9"), erp(changed, customer_id="C-9"), erp(first)])
    # Then the first message is the event (although C-0042 sorts before C-9), the others are refused
    assert [o.status for o in outcomes] == ["applied", "rejected", "rejected"]
    assert all("event_id E-1" in o.reason for o in outcomes[1:])
    assert "data.amount" in outcomes[1].reason and "customer_id" in outcomes[2].reason
    assert [e.event_id for e in ledger.read_stream(TENANT, "C-9")] == ["E-1"]
    assert ledger.read_stream(TENANT, CUSTOMER) == []


def test_relance_s_own_deterministic_ids_stay_duplicates_whatever_the_content(ledger: Ledger) -> None:
    # A decision recomputed under its deterministic id (another trigger, another instant) is not an ERP's mistake
    tick = Ev("escalation.clock_ticked", {"as_of": "2026-11-02T09:00:00+00:00", "trigger": "timer"}, "tick-1")
    ledger.record([incoming(tick)])
    again = Ev(tick.event_type, {**tick.data, "trigger": "ledger"}, "tick-1")
    assert [o.status for o in ledger.record([incoming(again)])] == ["duplicate"]


def test_events_recorded_before_fingerprints_existed_get_theirs_from_the_log(ledger_url: str, ledger: Ledger) -> None:
    from alembic import command

    from shared.ledger.migrate import alembic_config, upgrade

    # Given events recorded, then the database taken back to the revision before fingerprints (no table at all)
    first = invoice("INV-1", "100.00").with_id("E-1")
    ledger.record([erp(first), erp(payment("P1", "10.00").at(T0 + timedelta(days=1, microseconds=7)))])
    ledger.record([incoming(customer("Dupont SA"), customer_id="C-2")])
    ledger.engine.dispose()
    command.downgrade(alembic_config(ledger_url), "0004")
    # When the database is upgraded again
    upgrade(ledger_url)
    # Then every event has its fingerprint back, computed from what the log stores
    with ledger.engine.connect() as conn:
        stored: dict[str, str] = dict(conn.execute(text("SELECT event_id, fingerprint FROM event_fingerprints")).all())
    assert stored == {
        e.event_id: incoming(
            Ev(e.event_type, e.data, e.event_id, e.occurred_at), customer_id=e.customer_id
        ).fingerprint()
        for c in (CUSTOMER, "C-2")
        for e in ledger.read_stream(TENANT, c)
    }
    # and an ERP event_id reused for another event is caught for those old events too
    assert ledger.record([erp(invoice("INV-9", "1.00").with_id("E-1"))])[0].status == "rejected"
    assert ledger.record([erp(first)])[0].status == "duplicate"


def test_expected_version_guards_against_a_concurrent_writer(ledger: Ledger) -> None:
    # Given a stream at version 2
    record(ledger, invoice("INV-1", "10.00"), invoice("INV-2", "20.00"))
    # When a writer that read version 1 appends with expected_version=1
    stale = ledger.record([incoming(payment("P1", "5.00"), expected_version=1)])
    # Then it gets a conflict that says where the stream is, and nothing is appended
    assert stale[0].status == "conflict"
    assert "2" in stale[0].reason and "1" in stale[0].reason
    assert ledger.state(TENANT, CUSTOMER).version == 2
    # And a writer with the right expected version appends
    fresh = ledger.record([incoming(payment("P1", "5.00"), expected_version=2)])
    assert (fresh[0].status, fresh[0].version) == ("applied", 3)
    # And a new stream expects version 0
    assert record(ledger, invoice("INV-9", "1.00"), customer_id="C-NEW", expected_version=0) == ["applied"]
    assert record(ledger, invoice("INV-8", "1.00"), customer_id="C-NEW2", expected_version=1) == ["conflict"]


# ---------------------------------------------------------------------------------------------------- hash chain
def test_every_stream_is_hash_chained_and_verifies(ledger: Ledger) -> None:
    ledger.record([incoming(ev) for ev in at_minutes(history())])
    record(ledger, invoice("INV-X", "1.00"), customer_id="C-OTHER")
    stream = ledger.read_stream(TENANT, CUSTOMER)
    assert stream[0].prev_hash == GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(stream))
    assert len({e.hash for e in stream}) == len(stream)
    report = ledger.verify()
    assert report.ok, report.problems
    assert (report.streams, report.events) == (2, len(stream) + 1)


@contextmanager
def attacker(engine: Engine) -> Iterator[Connection]:
    """A connection that bypasses the append-only triggers, as someone with direct access to the database could."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))  # user triggers do not fire
        else:
            conn.execute(text("DROP TRIGGER events_append_only_update"))
            conn.execute(text("DROP TRIGGER events_append_only_delete"))
        yield conn


def five_events(ledger: Ledger) -> None:
    ledger.record([incoming(ev) for ev in at_minutes(history()[:5])])
    record(ledger, invoice("INV-X", "1.00"), customer_id="C-UNTOUCHED")
    assert ledger.verify().ok


def at_version(version: int) -> Any:
    return (events.c.tenant == TENANT) & (events.c.customer_id == CUSTOMER) & (events.c.version == version)


def test_verify_detects_an_altered_event(ledger: Ledger) -> None:
    # Given a verified stream
    five_events(ledger)
    # When someone rewrites the amount of version 4 behind the ledger's back
    forged = {**ledger.read_stream(TENANT, CUSTOMER)[3].data, "amount": "1.00"}
    with attacker(ledger.engine) as conn:
        conn.execute(events.update().where(at_version(4)).values(data=forged))
    # Then verify names the stream and the version, and only that stream; the projections written from the
    # original event now differ from the rebuild, and say what the amount was
    problems = ledger.verify().problems
    assert problems and all(f"{TENANT}/{CUSTOMER}" in p for p in problems), problems
    assert f"events {TENANT}/{CUSTOMER} v4: content altered (hash does not match)" in problems
    assert any("amount stored '100.00', rebuilt from the log '1.00'" in p for p in problems), problems


def test_verify_detects_an_altered_envelope_field(ledger: Ledger) -> None:
    five_events(ledger)
    with attacker(ledger.engine) as conn:
        conn.execute(events.update().where(at_version(2)).values(occurred_at=T0 - timedelta(days=30)))
    assert any("v2" in p and "altered" in p for p in ledger.verify().problems)


def test_verify_detects_a_removed_event(ledger: Ledger) -> None:
    five_events(ledger)
    with attacker(ledger.engine) as conn:
        conn.execute(events.delete().where(at_version(3)))
    problems = ledger.verify().problems
    assert any("version 3 missing" in p for p in problems), problems
    assert any("chain broken" in p for p in problems), problems


def test_verify_detects_a_removed_last_event(ledger: Ledger) -> None:
    # The chain of what remains is intact; the projection's head says one event is gone
    five_events(ledger)
    with attacker(ledger.engine) as conn:
        conn.execute(events.delete().where(at_version(5)))
    problems = ledger.verify().problems
    assert problems and all(f"{TENANT}/{CUSTOMER}" in p for p in problems), problems


def test_verify_detects_reordered_events(ledger: Ledger) -> None:
    five_events(ledger)
    # When versions 2 and 3 swap places
    with attacker(ledger.engine) as conn:
        conn.execute(events.update().where(at_version(2)).values(version=-2))
        conn.execute(events.update().where(at_version(3)).values(version=2))
        conn.execute(events.update().where(at_version(-2)).values(version=3))
    problems = ledger.verify().problems
    assert any("v2" in p and "chain broken" in p for p in problems), problems
    assert any("v3" in p for p in problems), problems


def test_verify_of_a_customer_with_no_events_finds_nothing_wrong(ledger: Ledger) -> None:
    five_events(ledger)
    report = ledger.verify(TENANT, "C-NEVER-SEEN")
    assert report.ok and report.events == 0


def test_verify_of_one_stream_ignores_the_others(ledger: Ledger) -> None:
    five_events(ledger)
    with attacker(ledger.engine) as conn:
        conn.execute(events.delete().where(at_version(3)))
    assert ledger.verify(TENANT, "C-UNTOUCHED").ok
    assert not ledger.verify(TENANT, CUSTOMER).ok


# ---------------------------------------------------------------------------------------------------- append-only
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = data WHERE version = 1",
        "UPDATE events SET event_type = 'invoice.cancelled'",
        "DELETE FROM events WHERE version = 1",
        "DELETE FROM events",
    ],
)
def test_the_database_refuses_to_change_the_log(ledger: Ledger, statement: str) -> None:
    # Given a recorded stream
    five_events(ledger)
    before = ledger.read_stream(TENANT, CUSTOMER)
    # When any connection, not only relance's code, tries to change or remove events
    with pytest.raises(DBAPIError, match="append-only"), ledger.engine.begin() as conn:
        conn.execute(text(statement))
    # Then the database refused and the log is untouched
    assert ledger.read_stream(TENANT, CUSTOMER) == before
    assert ledger.verify().ok


def test_postgresql_refuses_truncate_of_the_log(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        ledger = Ledger(engine)
        five_events(ledger)
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text("TRUNCATE events"))
        assert len(ledger.read_stream(TENANT, CUSTOMER)) == 5
    finally:
        engine.dispose()


def test_postgresql_refusing_a_nul_character_is_a_refusal_of_the_data_naming_sqlstate_and_column(pg_url: str) -> None:
    # Given a customer whose e-mail carries a NUL character, which PostgreSQL's JSON cannot hold
    engine = make_engine(pg_url)
    try:
        ledger = Ledger(engine)
        with_nul = customer("Dupont SA", emails=["ap\x00@dupont.example"])
        # When it is recorded with a valid event of another customer
        with pytest.raises(LedgerRefused) as refused:
            ledger.record([incoming(invoice("INV-1", "10.00"), customer_id="C-OTHER"), incoming(with_nul)])
        # Then the refusal says it is the data, where and which SQLSTATE, and nothing of the batch was written
        assert refused.value.refusal.cause == "data"
        assert "SQLSTATE 22P05" in str(refused.value) and "events.data" in str(refused.value)
        assert ledger.read_stream(TENANT, "C-OTHER") == []
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------------- projections
def invoice_rows(ledger: Ledger, customer_id: str = CUSTOMER) -> dict[str, tuple[Any, ...]]:
    columns = invoice_balances.c
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(
                columns.invoice_id,
                columns.currency,
                columns.amount,
                columns.outstanding,
                columns.due_date,
                columns.status,
                columns.disputed,
            ).where(columns.tenant == TENANT, columns.customer_id == customer_id)
        )
        return {r[0]: tuple(r[1:]) for r in rows}


def assert_projection_matches_replay(ledger: Ledger, customer_id: str = CUSTOMER) -> None:
    """The snapshot and the invoice rows written with the appends equal a fold of the log alone."""
    replayed = ledger.fold(TENANT, customer_id)
    assert ledger.state(TENANT, customer_id).to_json() == replayed.to_json()
    expected_rows = {
        i.invoice_id: (i.currency, i.amount, i.outstanding, i.due_date, i.status, i.invoice_id in replayed.disputes)
        for i in replayed.invoices.values()
    }
    assert invoice_rows(ledger, customer_id) == expected_rows


def test_projections_equal_the_replay_of_the_log(ledger: Ledger) -> None:
    # Given an out-of-order history recorded in several transactions, with duplicates and a rejection
    evs = at_minutes(history())
    for start in range(0, len(evs), 2):
        ledger.record([incoming(ev) for ev in evs[start : start + 2]])
    ledger.record([incoming(evs[3]), incoming(invoice("INV-1", "1.00").with_id("bad")), incoming(evs[0])])
    record(ledger, dispute_resolved("INV-2").at(T0 + timedelta(hours=2)))
    # Then the snapshot and the invoice rows are what a replay computes
    assert_projection_matches_replay(ledger)
    state = ledger.state(TENANT, CUSTOMER)
    assert_consistent(state)
    assert state.balances() == expected_balances(evs)
    # INV-1 cancelled; INV-2 200 - CN1 20 - P1 150 - P2's 30 surplus... computed independently:
    assert state.balances() == {"EUR": Decimal("200.00") + Decimal("80.00") - Decimal("200.00")}


def test_a_very_large_amount_keeps_every_digit_in_the_invoice_rows(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        ledger = Ledger(engine)
        record(ledger, invoice("INV-BIG", "999999999999999.99"))
        assert invoice_rows(ledger)["INV-BIG"][1] == Decimal("999999999999999.99")
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------------- property
def test_any_order_duplication_and_batching_through_the_ledger_yields_the_balances_of_the_fold(
    ledger: Ledger, request: pytest.FixtureRequest
) -> None:
    """The fold's property, through Ledger.record and a real database: two customers interleaved, random batches."""
    examples = 25 if ledger.engine.dialect.name == "sqlite" else 10
    counter = iter(range(10**6))

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        # Given two customers' histories, each delivered in any order with repeats, interleaved, cut into batches
        tenant = f"prop-{next(counter)}"  # a fresh tenant per example: same database, no shared streams
        # (event_id is unique per tenant: the customers' ids must differ)
        histories_by_customer = {
            c: [ev.with_id(f"{c}:{ev.event_id}") for ev in data.draw(histories(max_invoices=5), label=c)]
            for c in ("C-A", "C-B")
        }
        queue: list[Incoming] = []
        for c, evs in histories_by_customer.items():
            queue += [incoming(ev, tenant=tenant, customer_id=c) for ev in data.draw(deliveries(evs), label=c)]
        random.Random(data.draw(st.integers(0, 2**32), label="seed")).shuffle(queue)
        sizes = data.draw(st.lists(st.integers(1, 8), min_size=1, max_size=len(queue) + 1), label="batches")
        start = 0
        for size in sizes * (len(queue) // max(1, sum(sizes)) + 1):
            if start >= len(queue):
                break
            outcomes = ledger.record(queue[start : start + size])
            assert {o.status for o in outcomes} <= {"applied", "duplicate"}, outcomes
            start += size
        # Then each customer's projected balances equal the arithmetic on its unique events
        for c, evs in histories_by_customer.items():
            state = ledger.state(tenant, c)
            assert state.balances() == expected_balances(evs)
            assert_consistent(state)
            # And the stream is gapless, without repeated event_ids, and the projection equals the replay
            stream = ledger.read_stream(tenant, c)
            assert [e.version for e in stream] == list(range(1, len(stream) + 1))
            assert len({e.event_id for e in stream}) == len(stream)
            assert {ev.event_id for ev in evs if ev.event_type != "invoice.dispute_resolved"} <= {
                e.event_id for e in stream
            }
            assert ledger.fold(tenant, c).to_json() == state.to_json()
            if stream:
                assert ledger.verify(tenant, c).ok

    check()


def test_an_erp_clock_in_2099_pins_neither_the_projected_profile_nor_a_dispute(ledger: Ledger) -> None:
    # Given a profile and a dispute stamped 2099 by a skewed ERP clock, recorded now
    future = T0.replace(year=2099)
    record(ledger, invoice("INV-1", "100.00"), customer("Skewed SAS").at(future), dispute("INV-1").at(future))
    # When correct statements arrive afterwards, dated earlier than 2099 but after their reception
    later = customer("Martin SAS").with_id("cust-corrected")
    record(ledger, later.at(datetime.now(UTC)), dispute_resolved("INV-1").at(datetime.now(UTC)))
    # Then the projected state has the later profile and no open dispute, and a rebuild from the log agrees
    state = ledger.state(TENANT, CUSTOMER)
    assert state.profile is not None and state.profile["name"] == "Martin SAS"
    assert "INV-1" not in state.disputes
    assert ledger.fold(TENANT, CUSTOMER) == state
