"""One pass over a stream gives, at each instant, the state a fold as of that instant alone gives (SQLite and
PostgreSQL), events booked late included."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.reports.walk import end_of, month_ends, months_back, states_at, tenant_states_at
from shared.ledger.asof import fold_as_of, states_as_of
from shared.ledger.db import make_engine
from shared.ledger.records import RecordedEvent
from shared.ledger.store import Ledger
from tests.factories import (
    CUSTOMER,
    TENANT,
    Ev,
    credit_note,
    customer,
    deliveries,
    dispute,
    dispute_resolved,
    histories,
    incoming,
    invoice,
    payment,
)

DAY0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    engine = make_engine(ledger_url)
    yield Ledger(engine)
    engine.dispose()


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=10, tzinfo=UTC)


def test_the_trend_s_days_are_month_ends_and_the_day_itself() -> None:
    assert month_ends(date(2026, 11, 20), 3) == [date(2026, 9, 30), date(2026, 10, 31), date(2026, 11, 20)]
    assert month_ends(date(2026, 3, 31), 2) == [date(2026, 2, 28), date(2026, 3, 31)]
    assert months_back(date(2026, 3, 31), 1) == date(2026, 2, 28)
    assert end_of(date(2026, 11, 30)) == datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)


def test_states_at_several_month_ends_equal_folds_as_of_each(ledger: Ledger) -> None:
    # Given a stream in which a payment of September is booked after events of October and November,
    # and a dispute raised and resolved in between
    history = [
        customer("Scierie Marchand").at(at("2026-08-01")),
        invoice("I-1", "1000.00", issue_date="2026-08-10").at(at("2026-08-10")),
        invoice("I-2", "500.00", issue_date="2026-10-02").at(at("2026-10-02")),
        dispute("I-2").at(at("2026-10-05")),
        invoice("I-3", "250.00", issue_date="2026-11-03").at(at("2026-11-03")),
        payment("P-1", "600.00", received_on="2026-09-15").at(at("2026-09-15")),  # booked late: occurred in September
        dispute_resolved("I-2").at(at("2026-11-10")),
        credit_note("CN-1", "100.00", issued_on="2026-11-12", invoice_id="I-3").at(at("2026-11-12")),
    ]
    outcomes = ledger.record([incoming(ev) for ev in history])
    assert {o.status for o in outcomes} == {"applied"}
    days = [date(2026, 8, 31), date(2026, 9, 30), date(2026, 10, 31), date(2026, 11, 30), date(2026, 7, 31)]
    # When the stream is walked once for all those days
    ((customer_id, walked),) = list(tenant_states_at(ledger, TENANT, days))
    # Then each state is the fold as of that day's end, in the occurred reading
    stream = ledger.read_stream(TENANT, CUSTOMER)
    assert customer_id == CUSTOMER
    for day, state in zip(days, walked, strict=True):
        alone = fold_as_of(stream, end_of(day), "occurred", tenant=TENANT, customer_id=CUSTOMER)
        assert state.to_json() == alone.to_json(), day
    # And the late payment counts in September: 1,000 - 600 owed at the end of September
    assert walked[1].balances() == {"EUR": 400}
    assert walked[4].version == 0  # nothing yet at the end of July
    assert [s.to_json() for s in states_as_of(ledger, TENANT, end_of(days[3]), "occurred")] == [walked[3].to_json()]
    # And in the known reading (everything was recorded today), nothing was known at those month ends
    known = states_at(stream, [end_of(d) for d in days], "known", tenant=TENANT, customer_id=CUSTOMER)
    assert all(s.version == 0 for s in known)


def recorded(evs: list[Ev], occurred: list[int], lag: list[int]) -> list[RecordedEvent]:
    """The events as a stream in this order: each occurred on day ``occurred[i]`` and recorded ``lag[i]`` days
    later (never before the previous one: the log's order), so late bookings and far-off ERP clocks both appear."""
    stream, last = [], datetime(2026, 1, 1, tzinfo=UTC)
    for version, (ev, day, late) in enumerate(zip(evs, occurred, lag, strict=True), start=1):
        when = DAY0 + timedelta(days=day)
        last = max(last, when + timedelta(days=late))
        stream.append(
            RecordedEvent(
                version,
                None,
                TENANT,
                CUSTOMER,
                version,
                ev.event_id,
                ev.event_type,
                ev.data,
                {},
                when,
                last,
                "",
                f"h{version}",
            )
        )
    return stream


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_one_walk_equals_a_fold_as_of_each_instant_whatever_the_order_of_occurrence(data: st.DataObject) -> None:
    evs = data.draw(deliveries(data.draw(histories(max_invoices=4))))
    occurred = data.draw(st.lists(st.integers(0, 90), min_size=len(evs), max_size=len(evs)))
    lag = data.draw(st.lists(st.sampled_from([-400, 0, 0, 1, 5, 40]), min_size=len(evs), max_size=len(evs)))
    stream = recorded(evs, occurred, lag)
    instants = [
        DAY0 + timedelta(days=d, hours=h)
        for d, h in data.draw(st.lists(st.tuples(st.integers(-5, 140), st.integers(0, 23)), min_size=1, max_size=6))
    ]
    for reading in ("occurred", "known"):
        walked = states_at(stream, instants, reading, tenant=TENANT, customer_id=CUSTOMER)
        for at_, state in zip(instants, walked, strict=True):
            alone = fold_as_of(stream, at_, reading, tenant=TENANT, customer_id=CUSTOMER)
            assert state.to_json() == alone.to_json(), (reading, at_)


def test_a_six_month_trend_reads_each_stream_once(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given three customers
    for customer_id in ("C-1", "C-2", "C-3"):
        ledger.record(
            [incoming(invoice("I-1", "10.00").with_id(customer_id).at(at("2026-09-01")), customer_id=customer_id)]
        )
    reads: list[str] = []
    read = ledger.read_stream

    def counted(tenant: str, customer_id: str, from_version: int = 1) -> list[RecordedEvent]:
        reads.append(customer_id)
        return read(tenant, customer_id, from_version)

    monkeypatch.setattr(ledger, "read_stream", counted)
    # When the committee's pack folds them at seven month ends
    from services.reports.committee import committee_pack

    report = committee_pack(ledger, TENANT, date(2026, 11, 30), months=6)
    # Then each stream was read once, and the trend has the invoices from September's end on
    assert sorted(reads) == ["C-1", "C-2", "C-3"]
    trend = report.table("aging_trend").rows
    assert [(r["month_end"], r["principal"]) for r in trend] == [
        ("2026-09-30", Decimal("30.00")),
        ("2026-10-31", Decimal("30.00")),
        ("2026-11-30", Decimal("30.00")),
    ]
