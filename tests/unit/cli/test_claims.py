"""``relance claims list`` and ``claims waive`` on a real ledger (SQLite here, PostgreSQL too under integration)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.cli import main
from shared.ledger.db import make_engine
from shared.ledger.store import Incoming, Ledger
from tests.factories import Ev, invoice, payment
from tests.unit.ledger.test_claims import claiming, fee, fixed

TENANT, CUSTOMER = "acme-fr", "C-0042"
AT = datetime(2026, 3, 26, 8, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """Given INV-1 claimed at its formal notice, paid on 25 March, with 7.66 of interest and 40.00 still owed, and
    INV-2 late, its indemnity owed but not claimed."""
    engine = make_engine(ledger_url)
    ledger = Ledger(engine)
    history: list[Ev] = [
        invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"),
        invoice("INV-2", "500.00", issue_date="2026-02-10", due_date="2026-03-12"),
        fee("INV-1"),
        fee("INV-2"),
        claiming("INV-1"),
        payment("P1", "1000.00", received_on="2026-03-25", allocations={"INV-1": "1000.00"}),
        fixed("INV-1", "7.66", "2026-03-25"),
    ]
    outcomes = ledger.record([Incoming(TENANT, CUSTOMER, e.event_id, e.event_type, e.data, AT) for e in history])
    assert [o.status for o in outcomes] == ["applied"] * len(history)
    yield ledger
    engine.dispose()


def run(ledger_url: str, *args: str) -> int:
    return main([*args, "--database-url", ledger_url])


def test_claims_list_shows_what_is_owed_apart_from_principal(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(ledger_url, "claims", "list", "--tenant", TENANT, "--json") == 0
    rows = json.loads(capsys.readouterr().out)["claims"]
    assert [(r["number"], r["kind"], r["owed"], r["claimed"], r["principal"]) for r in rows] == [
        ("F-INV-1", "interest", "7.66", True, "settled"),
        ("F-INV-1", "indemnity", "40.00", True, "settled"),
        ("F-INV-2", "indemnity", "40.00", False, "open"),
    ]
    assert run(ledger_url, "claims", "list", "--tenant", TENANT, "--customer", CUSTOMER) == 0
    text = capsys.readouterr().out
    assert "not yet" in text and text.rstrip().endswith("claims owed: 87.66 EUR")


def test_claims_waive_records_the_waiver_with_its_reason_and_author(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a collector waives 2.66 of INV-1's interest, then the whole indemnity
    common = ["--tenant", TENANT, "--customer", CUSTOMER, "--invoice", "INV-1", "--author", "M. Durand"]
    assert (
        run(
            ledger_url,
            "claims",
            "waive",
            *common,
            "--kind",
            "interest",
            "--reason",
            "late delivery",
            "--amount",
            "2.66",
        )
        == 0
    )
    assert "still owed 5.00 EUR" in capsys.readouterr().out
    assert run(ledger_url, "claims", "waive", *common, "--kind", "indemnity", "--reason", "long-standing customer") == 0
    capsys.readouterr()
    # Then the stream holds both waivers, with who and why, and the state owes 5.00 on INV-1
    waivers = [e.data for e in ledger.read_stream(TENANT, CUSTOMER) if e.event_type == "claim.waived"]
    assert waivers == [
        {
            "invoice_id": "INV-1",
            "kind": "interest",
            "currency": "EUR",
            "amount": "2.66",
            "reason": "late delivery",
            "author": "M. Durand",
        },
        {
            "invoice_id": "INV-1",
            "kind": "indemnity",
            "currency": "EUR",
            "amount": "40.00",
            "reason": "long-standing customer",
            "author": "M. Durand",
        },
    ]
    assert ledger.state(TENANT, CUSTOMER).claims_owed() == {"EUR": Decimal("45.00")}  # 5.00 + INV-2's 40.00
    # And ledger show lists them under the claim
    assert run(ledger_url, "ledger", "show", "--tenant", TENANT, "--customer", CUSTOMER) == 0
    shown = capsys.readouterr().out
    assert "waived 40.00 by M. Durand: long-standing customer" in shown
    assert "claims owed besides: 45.00 EUR" in shown


@pytest.mark.parametrize(
    ("invoice_id", "kind", "amount", "message"),
    [
        ("INV-9", "interest", None, "has no invoice 'INV-9'"),
        ("INV-2", "interest", None, "nothing is owed in interest on invoice F-INV-2 (INV-2): nothing to waive"),
        ("INV-1", "interest", "7.67", "7.67 EUR is more than the 7.66 EUR of interest owed on invoice F-INV-1"),
        ("INV-1", "interest", "1.005", "has more decimals than EUR has (2)"),
        ("INV-1", "interest", "-1", "must be above zero"),
    ],
)
def test_claims_waive_refuses_with_a_clear_reason_and_records_nothing(
    ledger: Ledger,
    ledger_url: str,
    capsys: pytest.CaptureFixture[str],
    invoice_id: str,
    kind: str,
    amount: str | None,
    message: str,
) -> None:
    before = len(ledger.read_stream(TENANT, CUSTOMER))
    args = ["--tenant", TENANT, "--customer", CUSTOMER, "--invoice", invoice_id, "--kind", kind]
    args += ["--reason", "goodwill", "--author", "M. Durand", *(["--amount", amount] if amount else [])]
    assert run(ledger_url, "claims", "waive", *args) == 1
    error = capsys.readouterr().err
    assert error.startswith("relance: ") and message in error and error.count("\n") == 1
    assert len(ledger.read_stream(TENANT, CUSTOMER)) == before


@pytest.mark.parametrize(
    ("reason", "author", "message"),
    [
        ("goodwill\x1b[2J", "M. Durand", "--reason contains a control character or a line break"),
        ("goodwill\nsecond line", "M. Durand", "--reason contains a control character or a line break"),
        ("goodwill", "M.\u2028Durand", "--author contains a control character or a line break"),
        ("x" * 501, "M. Durand", "--reason is 501 characters long; keep it to 500"),
        ("goodwill", "y" * 121, "--author is 121 characters long; keep it to 120"),
    ],
)
def test_claims_waive_refuses_a_reason_or_author_that_is_not_one_plain_line(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str], reason: str, author: str, message: str
) -> None:
    before = len(ledger.read_stream(TENANT, CUSTOMER))
    args = ["--tenant", TENANT, "--customer", CUSTOMER, "--invoice", "INV-1", "--kind", "interest"]
    assert run(ledger_url, "claims", "waive", *args, "--reason", reason, "--author", author) == 1
    error = capsys.readouterr().err
    assert error.startswith("relance: ") and message in error and error.count("\n") == 1
    assert len(ledger.read_stream(TENANT, CUSTOMER)) == before


def test_claims_waive_for_an_unknown_customer_says_so(ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--tenant", TENANT, "--customer", "C-NONE", "--invoice", "INV-1", "--kind", "interest"]
    assert run(ledger_url, "claims", "waive", *args, "--reason", "x", "--author", "y") == 1
    assert "no events for customer 'C-NONE'" in capsys.readouterr().err


def test_ledger_show_json_keeps_claims_apart_from_principal_with_what_paid_them(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 47.66 paid without allocation once INV-1's principal was settled: under principal_first it pays INV-2's
    # open principal first, as the ERP allocates it, and INV-1's claims stay owed
    ledger.record([Incoming(TENANT, CUSTOMER, "erp-p2", "payment.received", payment("P2", "47.66").data, AT)])
    assert run(ledger_url, "ledger", "show", "--tenant", TENANT, "--customer", CUSTOMER, "--json") == 0
    state = json.loads(capsys.readouterr().out)["state"]
    assert state["balances"] == {"EUR": "452.34"}
    assert state["claims_owed"] == {"EUR": "87.66"}
    interest = next(c for c in state["claims"] if c["invoice_id"] == "INV-1" and c["kind"] == "interest")
    assert (interest["charged"], interest["paid"], interest["owed"], interest["fixed"]) == ("7.66", "0", "7.66", True)
    # When 500.00 more comes unallocated: 452.34 settles INV-2, the 47.66 left settles INV-1's claimed claims
    ledger.record([Incoming(TENANT, CUSTOMER, "erp-p3", "payment.received", payment("P3", "500.00").data, AT)])
    assert run(ledger_url, "ledger", "show", "--tenant", TENANT, "--customer", CUSTOMER, "--json") == 0
    state = json.loads(capsys.readouterr().out)["state"]
    interest = next(c for c in state["claims"] if c["invoice_id"] == "INV-1" and c["kind"] == "interest")
    assert interest["settled"] == {"payment:P3": "7.66"} and interest["owed"] == "0.00"
    assert state["claims_owed"] == {"EUR": "40.00"}  # INV-2's indemnity, never claimed, takes no money


def test_claims_waive_run_again_with_its_request_id_records_nothing_more(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--tenant", TENANT, "--customer", CUSTOMER, "--invoice", "INV-1", "--kind", "interest", "--amount", "1.00"]
    args += ["--reason", "late delivery", "--author", "M. Durand", "--request-id", "ticket-4711"]
    assert run(ledger_url, "claims", "waive", *args) == 0
    assert "still owed 6.66 EUR" in capsys.readouterr().out
    assert run(ledger_url, "claims", "waive", *args) == 0
    assert "already recorded under this request id" in capsys.readouterr().out
    waivers = [e for e in ledger.read_stream(TENANT, CUSTOMER) if e.event_type == "claim.waived"]
    assert len(waivers) == 1 and waivers[0].metadata["source"] == "cli" and waivers[0].event_id.startswith("act-")
