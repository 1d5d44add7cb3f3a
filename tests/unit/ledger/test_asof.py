"""A customer's account as of an instant, in the two readings, on both engines (the PostgreSQL side: integration).

The ledger stamps ``recorded_at`` with the wall clock, so a stream with a late record is written as an ERP writes
one: events that occurred weeks ago appended now, an instant ``T`` taken between two appends, then a payment that
occurred before ``T`` appended after it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from services.cli import main
from shared.ledger.asof import account_as_of, fold_as_of, late_records, parse_instant
from shared.ledger.db import make_engine
from shared.ledger.show import late_line
from shared.ledger.store import Ledger, RecordedEvent
from tests.factories import CUSTOMER, TENANT, Ev, customer, dispute, incoming, invoice, payment

SEPT = datetime(2026, 9, 1, 9, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    engine = make_engine(ledger_url)
    yield Ledger(engine)
    engine.dispose()


@dataclass
class Written:
    ledger: Ledger
    between: datetime  # after the first appends, before the late payment's


def record(ledger: Ledger, *evs: Ev) -> None:
    assert all(o.status == "applied" for o in ledger.record([incoming(ev) for ev in evs]))


def _pause() -> datetime:
    time.sleep(0.01)
    at = datetime.now(UTC)
    time.sleep(0.01)
    return at


@pytest.fixture
def written(ledger: Ledger) -> Written:
    """Given a customer and two invoices of September, recorded; T; then a payment of the 29th, recorded after T."""
    record(
        ledger,
        customer().at(SEPT),
        invoice("INV-1", "100.00", issue_date="2026-09-01", due_date="2026-09-15").at(SEPT),
        invoice("INV-2", "300.00", issue_date="2026-09-10", due_date="2026-09-25").at(SEPT + timedelta(days=9)),
        dispute("INV-2").at(SEPT + timedelta(days=20)),
    )
    between = _pause()
    late = payment("PAY-1", "120.00", received_on="2026-09-29", allocations={"INV-1": "100.00"})
    record(ledger, late.at(datetime(2026, 9, 29, 10, tzinfo=UTC)))
    return Written(ledger, between)


def stream(written: Written) -> list[RecordedEvent]:
    return written.ledger.read_stream(TENANT, CUSTOMER)


def test_the_two_readings_differ_exactly_by_the_payment_recorded_after_the_instant(written: Written) -> None:
    events = stream(written)
    # When the account is read as of T in both readings
    account = account_as_of(events, written.between, tenant=TENANT, customer_id=CUSTOMER)
    known, occurred = account.states["known"], account.states["occurred"]
    # Then what relance knew did not have the payment; the business view has it
    assert known.version == 4 and occurred.version == 5
    assert known.invoices["INV-1"].outstanding == Decimal("100.00")
    assert occurred.invoices["INV-1"].outstanding == Decimal(0)
    assert known.balances() == {"EUR": Decimal("400.00")}
    assert occurred.balances() == {"EUR": Decimal("280.00")}
    # And the late records are that payment alone, said in one line
    assert [e.event_id for e in account.late] == ["pay-PAY-1"]
    assert late_line(account.late[0]).startswith("payment PAY-1 of 120.00 EUR occurred on 2026-09-29, recorded ")
    # And apart from it, the two states are the same fold
    without = [e for e in events if e.event_id != "pay-PAY-1"]
    assert fold_as_of(without, datetime.now(UTC), "occurred", tenant=TENANT, customer_id=CUSTOMER).to_json() == (
        known.to_json()
    )


def test_an_instant_before_every_event_holds_nothing_in_either_reading(written: Written) -> None:
    account = account_as_of(stream(written), SEPT - timedelta(seconds=1), tenant=TENANT, customer_id=CUSTOMER)
    assert account.empty and not account.late


def test_a_date_in_the_past_shows_what_had_occurred_though_relance_knew_nothing_yet(written: Written) -> None:
    # As of the end of 2026-09-20: relance had recorded nothing yet (all was recorded today), two invoices had occurred
    account = account_as_of(stream(written), parse_instant("2026-09-20"), tenant=TENANT, customer_id=CUSTOMER)
    assert account.states["known"].version == 0
    assert sorted(account.states["occurred"].invoices) == ["INV-1", "INV-2"]
    assert "INV-2" not in account.states["occurred"].disputes  # disputed on the 21st
    assert [e.version for e in account.late] == [1, 2, 3]


def test_now_in_either_reading_is_the_current_state(written: Written) -> None:
    now = datetime.now(UTC)
    current = written.ledger.state(TENANT, CUSTOMER).to_json()
    for reading in ("known", "occurred"):
        assert fold_as_of(stream(written), now, reading, tenant=TENANT, customer_id=CUSTOMER).to_json() == current
    assert late_records(stream(written), now) == []


def test_a_date_means_the_end_of_that_day_in_utc_and_an_instant_needs_its_offset() -> None:
    assert parse_instant("2026-09-30") == datetime(2026, 9, 30, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_instant("2026-09-30T18:00:00+02:00") == datetime(2026, 9, 30, 16, tzinfo=UTC)
    assert parse_instant("2026-09-30T18:00:00Z").date() == date(2026, 9, 30)
    with pytest.raises(ValueError, match="no time zone"):
        parse_instant("2026-09-30T18:00:00")
    with pytest.raises(ValueError, match="not an ISO 8601 instant or date"):
        parse_instant("30/09/2026")


# ---------------------------------------------------------------------------------------------------- the command
def show(url: str, *args: str) -> int:
    return main(["ledger", "show", "--tenant", TENANT, "--customer", CUSTOMER, *args, "--database-url", url])


def test_ledger_show_as_of_prints_both_readings_and_their_differences(
    written: Written, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = show(ledger_url, "--as-of", written.between.isoformat())
    out = capsys.readouterr().out
    assert code == 0, out
    known, rest = out.split("reading 'occurred'")
    assert "reading 'known': what relance knew at that instant" in known
    assert "balance: 400.00 EUR" in known and "balance: 280.00 EUR" in rest
    occurred, differences = rest.split("differences between the two readings")
    assert "the business view at that instant, with everything known today" in occurred
    assert "disputes\n  F-INV-2: quantity delivered differs" in occurred
    assert "payment PAY-1 of 120.00 EUR occurred on 2026-09-29" in differences
    # And each open invoice with its days late at the instant
    days = (written.between.date() - date(2026, 9, 25)).days
    assert any(line.split()[:1] == ["F-INV-2"] and str(days) in line.split() for line in known.splitlines())


def test_ledger_show_as_of_one_reading_in_json(
    written: Written, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert show(ledger_url, "--as-of", written.between.isoformat(), "--reading", "known", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert list(document["readings"]) == ["known"]
    assert document["readings"]["known"]["balances"] == {"EUR": "400.00"}
    assert [r["event_id"] for r in document["late_records"]] == ["pay-PAY-1"]
    # And both readings by default
    assert show(ledger_url, "--as-of", written.between.isoformat(), "--json") == 0
    both = json.loads(capsys.readouterr().out)
    assert set(both) == {"as_of", "readings", "late_records"}
    assert both["readings"]["occurred"]["balances"] == {"EUR": "280.00"}
    invoices = {i["invoice_id"]: i for i in both["readings"]["occurred"]["open_invoices"]}
    assert list(invoices) == ["INV-2"] and invoices["INV-2"]["disputed"] is True


def test_ledger_show_as_of_before_the_first_event_says_so_and_exits_1(
    written: Written, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert show(ledger_url, "--as-of", "2026-08-31") == 1
    err = capsys.readouterr().err
    assert "nothing known for customer 'C-0042'" in err and "first event is of 2026-09-01T09:00:00+00:00" in err


def test_ledger_show_refuses_a_bad_instant_as_a_usage_error(
    written: Written, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        show(ledger_url, "--as-of", "yesterday")
    assert exited.value.code == 2
    assert "not an ISO 8601 instant or date: 'yesterday'" in capsys.readouterr().err


def test_a_reading_without_an_instant_is_a_usage_error(
    written: Written, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert show(ledger_url, "--reading", "known") == 2
    assert "--reading needs --as-of" in capsys.readouterr().err


def test_ledger_show_without_as_of_prints_the_stream_and_the_state_as_before(
    written: Written, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert show(ledger_url) == 0
    out = capsys.readouterr().out
    assert out.startswith("customer C-0042 of acme-fr — Boulangeries Martin SAS\nstream version 5")
    assert "reading" not in out


def test_the_occurred_reading_at_a_past_date_has_the_levels_claims_and_tasks_decided_by_then(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.escalation.worker import policy_books, real_rules, tick
    from shared.config import load_settings

    # Given an invoice of August due on 1 September, and the escalation's ticks of September and October replayed
    # today (a backfill: decided at past instants, all recorded now)
    record(
        ledger,
        customer().at(datetime(2026, 8, 1, tzinfo=UTC)),
        invoice("INV-1", "1000.00", issue_date="2026-08-01", due_date="2026-09-01").at(
            datetime(2026, 8, 1, tzinfo=UTC)
        ),
    )
    settings = load_settings(database_url=ledger_url)
    for day in (2, 9, 16, 23, 30):
        tick(ledger, policy_books(settings), real_rules(settings), datetime(2026, 9, day, 8, tzinfo=UTC))
    decided = [e for e in ledger.read_stream(TENANT, CUSTOMER) if "policy_version" in e.metadata]
    first = min(e.occurred_at for e in decided)
    capsys.readouterr()  # the ticks' log lines
    # When the account is read as of the end of the day of the first decision, in the business view
    assert show(ledger_url, "--as-of", first.date().isoformat(), "--reading", "occurred", "--json") == 0
    document = json.loads(capsys.readouterr().out)["readings"]["occurred"]
    # Then it has what was decided by then, and nothing decided later
    by_then = {e.event_type for e in decided if e.occurred_at.date() <= first.date()}
    later = [e for e in decided if e.occurred_at.date() > first.date()]
    assert later, "the policy decides again after its first step"
    assert document["version"] == max(e.version for e in decided if e.occurred_at.date() <= first.date())
    [open_invoice] = document["open_invoices"]
    assert open_invoice["days_late"] == (first.date() - date(2026, 9, 1)).days
    assert {"escalation.level_reached", "fee.charged"} <= by_then  # the shipped policy's first step
    assert open_invoice["level"] is not None and open_invoice["level_reached_on"] <= first.date().isoformat()
    assert [(c["kind"], c["owed"]) for c in document["claims"]] == [("indemnity", "40.00")]
    levels = [e.data["level"] for e in decided if e.event_type == "escalation.level_reached"]
    assert open_invoice["level"] == levels[0] != levels[-1]
    # And what relance knew that day was nothing: it was all recorded today
    assert show(ledger_url, "--as-of", first.date().isoformat(), "--reading", "known") == 1
    assert "nothing recorded for customer 'C-0042'" in capsys.readouterr().err
