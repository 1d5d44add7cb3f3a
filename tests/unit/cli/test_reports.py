"""``relance report``: aged balance, DSO and the committee pack from the command line (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.cli.app import main
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from tests.factories import credit_note, customer, incoming, invoice, payment

WHEN = datetime(2026, 11, 10, 9, tzinfo=UTC)


def on(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    engine = make_engine(ledger_url)
    ledger = Ledger(engine)
    history = [
        customer("Menuiserie Roux", segment="sme").at(on("2026-09-01")),
        invoice("I-1", "1000.00", issue_date="2026-09-10", due_date="2026-10-10").at(on("2026-09-10")),
        invoice("I-2", "2000.00", issue_date="2026-10-05", due_date="2026-11-04").at(on("2026-10-05")),
        invoice("I-3", "3000.00", issue_date="2026-11-01", due_date="2026-12-01").at(on("2026-11-01")),
        payment("P-1", "1000.00", received_on="2026-10-09", allocations={"I-1": "1000.00"}).at(on("2026-10-09")),
        credit_note("CN-1", "500.00", issued_on="2026-11-02", invoice_id="I-3").at(on("2026-11-02")),
    ]
    ledger.record([incoming(ev) for ev in history])
    yield ledger
    engine.dispose()


def run(ledger_url: str, *args: str) -> int:
    return main(["report", *args, "--database-url", ledger_url])


def test_aged_balance_as_csv_with_the_only_tenant_taken_as_the_one(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(ledger_url, "aged-balance", "--as-of", "2026-11-30", "--format", "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    # I-2 is 26 days late (30 Nov - 4 Nov), I-3 due tomorrow: 2,500 not yet due after the credit note
    (mine, total) = rows
    assert (mine["customer"], mine["1-30 days"], mine["not yet due"], mine["net"]) == (
        "C-0042",
        "2000.00",
        "2500.00",
        "4500.00",
    )
    assert total["customer"] == "total" and total["net"] == "4500.00"


def test_dso_by_customer_in_json(ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        ledger_url,
        "dso",
        "--tenant",
        "acme-fr",
        "--as-of",
        "2026-11-30",
        "--period",
        "3m",
        "--by",
        "customer",
        "--format",
        "json",
    )
    assert code == 0
    table = json.loads(capsys.readouterr().out)["tables"]["dso"]
    (row,) = table["rows"]
    # 4,500 owed; sales 1,000 + 2,000 + 3,000 - 500 = 5,500 over 91 days: 4,500 / 5,500 x 91 = 74.45... -> 74.5
    assert (row["receivables"], row["sales"], row["days"], row["dso"]) == ("4500.00", "5500.00", 91, "74.5")
    assert run(ledger_url, "dso", "--as-of", "2026-11-30", "--method", "countback", "--format", "json") == 0
    (row,) = json.loads(capsys.readouterr().out)["tables"]["dso"]["rows"]
    # November's 2,500 do not cover 4,500: 30 days, 2,000 left; October's 2,000 cover them whole: 31 days -> 61.0
    assert row["dso"] == "61.0"


def test_committee_writes_its_three_files(
    ledger: Ledger, ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(ledger_url, "committee", "--as-of", "2026-11-30", "--months", "3", "--out-dir", str(tmp_path / "pack")) == 0
    )
    written = capsys.readouterr().out.split()
    assert [Path(p).name for p in written] == ["committee.html", "committee.csv", "committee.json"]
    document = json.loads((tmp_path / "pack" / "committee.json").read_text(encoding="utf-8"))
    trend = document["tables"]["aging_trend"]["rows"]
    assert [(r["month_end"], r["net"]) for r in trend] == [
        ("2026-09-30", "1000.00"),  # I-1 issued on 10 September, paid on 9 October
        ("2026-10-31", "2000.00"),
        ("2026-11-30", "4500.00"),
    ]
    assert "<svg" in (tmp_path / "pack" / "committee.html").read_text(encoding="utf-8")
    assert (
        run(ledger_url, "committee", "--as-of", "2026-11-30", "--out-dir", str(tmp_path / "one"), "--format", "csv")
        == 0
    )
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["committee.csv"]


def test_an_unknown_tenant_or_a_bad_period_is_refused_saying_what_to_give(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(ledger_url, "aged-balance", "--tenant", "nobody") == 1
    assert "tenant 'nobody' has no events in this ledger (tenants: acme-fr)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(ledger_url, "dso", "--period", "3w")
    assert "write a number of months or days, such as 3m" in capsys.readouterr().err


def test_several_tenants_need_one_named(ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ledger.record([incoming(invoice("X-1", "5.00").at(WHEN), tenant="acme-uk")])
    assert run(ledger_url, "aged-balance") == 1
    assert "give --tenant: the ledger holds 2 tenants (acme-fr, acme-uk)" in capsys.readouterr().err


def test_aged_balance_as_a_table_on_screen_and_as_a_page_in_a_file(
    ledger: Ledger, ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(ledger_url, "aged-balance", "--as-of", "2026-11-30", "--by", "segment") == 0
    screen = capsys.readouterr().out
    assert "Aged balance — acme-fr, as of 2026-11-30" in screen
    # segment, currency, not yet due, 1-30 days
    assert re.search(r"^  sme +EUR +2,500\.00 +2,000\.00 ", screen, re.MULTILINE), screen
    page = tmp_path / "aged.html"
    assert run(ledger_url, "aged-balance", "--as-of", "2026-11-30", "--format", "html", "--out", str(page)) == 0
    assert "-> " + str(page) in capsys.readouterr().err
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "Menuiserie Roux" in html and "4,500.00" in html
