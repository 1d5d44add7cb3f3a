"""``relance rates show|check``: the reference rate table in effect, and whether a semester is about to lack a rate."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from services.cli import main
from services.escalation.interest import SERIES, SHIPPED_RATES, RateTable
from shared.config import ConfigurationError


@pytest.fixture
def rates_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "rates.csv"
    monkeypatch.setenv("RELANCE_RATES_FILE", str(path))
    return path


def test_rates_show_lists_every_semester_with_the_file_its_rate_comes_from(
    rates_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a user's file adding the second half of 2026 and correcting the first half of 2023
    rates_file.write_text("semester_start,rate\n2026-07-01,2.00\n2023-01-01,2.60\n", encoding="utf-8")
    # When the table is shown
    assert main(["rates", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Then each row names its source, and an override names what it replaces
    assert f"  2023-01-01     2.60  {rates_file} (replaces 2.50 from {SHIPPED_RATES})" in lines
    assert f"  2023-07-01     4.00  {SHIPPED_RATES}" in lines
    assert f"  2026-07-01     2.00  {rates_file}" in lines
    assert str(rates_file) in lines[0]


def test_rates_check_names_the_semester_about_to_lack_a_rate_and_the_line_to_add(
    rates_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the shipped table alone (an empty user's file), which ends with the semester starting 2026-01-01
    rates_file.write_text("semester_start,rate\n", encoding="utf-8")
    # When the ECB table is checked three weeks before 1 July 2026
    code = main(["rates", "check", "--at", "2026-06-10", "--within", "45", "--table", "ecb"])
    out = capsys.readouterr().out
    # Then it fails, names the semester and the days left, and gives the exact line to add and where
    assert code == 1
    assert "no reference rate for the semester starting 2026-07-01, which begins in 21 day(s)" in out
    assert f"add to {rates_file}" in out
    assert out.splitlines()[-1] == "  2026-07-01,<rate in percent>"
    # And with a shorter horizon it is still fine
    assert main(["rates", "check", "--at", "2026-06-10", "--within", "7"]) == 0


def test_rates_check_reports_a_semester_that_has_begun_without_a_rate(
    rates_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rates_file.write_text("semester_start,rate\n", encoding="utf-8")
    # When checked on 1 December 2026, with the second half of 2026 missing and 2027 a month away
    assert main(["rates", "check", "--at", "2026-12-01"]) == 1
    out = capsys.readouterr().out
    # Then both semesters are named, the begun one first
    assert "semester starting 2026-07-01, which began 153 day(s) ago" in out
    assert "semester starting 2027-01-01, which begins in 31 day(s)" in out


def test_rates_check_passes_once_the_rates_are_added(rates_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rates_file.write_text("semester_start,rate\n2026-07-01,2.15\n2027-01-01,2.15\n", encoding="utf-8")
    assert main(["rates", "check", "--at", "2026-12-01", "--table", "ecb"]) == 0
    assert capsys.readouterr().out.startswith("ok: every semester from 2026-12-01 through the next 45 day(s)")
    # And every table is checked by default: the Bank of England's and the French legal rate's rows are still missing
    assert main(["rates", "check", "--at", "2026-12-01"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-4:] == [
        "  boe,2026-06-30,<rate in percent>",
        "  boe,2026-12-31,<rate in percent>",
        "  legal-fr,2026-07-01,<rate in percent>",
        "  legal-fr,2027-01-01,<rate in percent>",
    ]
    assert "no Bank of England Bank Rate for the semester starting 2026-07-01, which began 153 day(s) ago" in out
    # When the user adds them, each row naming its table (the Bank of England's dated by its reference day)
    rates_file.write_text(
        "2026-07-01,2.15\n2027-01-01,2.15\nboe,2026-06-30,3.50\nboe,2026-12-31,3.25\n"
        "legal-fr,2026-07-01,2.50\nlegal-fr,2027-01-01,2.40\n",
        encoding="utf-8",
    )
    # Then the check passes, and the rows are in effect
    assert main(["rates", "check", "--at", "2026-12-01"]) == 0
    assert capsys.readouterr().out.startswith("ok: every semester from 2026-12-01 through the next 45 day(s)")
    table = RateTable.default(rates_file)
    assert table.rate_for(date(2026, 7, 1), "boe") == Decimal("3.50")
    assert table.rate_for(date(2027, 6, 30), "boe") == Decimal("3.25")
    assert table.rate_for(date(2026, 12, 31), "legal-fr") == Decimal("2.50")


def test_rates_show_lists_the_bank_of_england_rows_by_their_reference_day(
    rates_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rates_file.write_text("boe,2026-06-30,3.50\n", encoding="utf-8")
    assert main(["rates", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    boe = SERIES["boe"].file
    assert f"  2025-12-31     3.75  {boe}" in lines
    assert f"  2026-06-30     3.50  {rates_file}" in lines
    assert f"  2026-01-01     2.62  {SERIES['legal-fr'].file}" in lines


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("boe,2026-07-01,3.50", "2026-07-01 is not a reference day of the Bank of England table: use YYYY-06-30"),
        ("fed,2026-07-01,3.50", "'fed' is not a rate table (ecb, boe, legal-fr)"),
        ("legal-fr,2026-06-30,2.00", "2026-06-30 is not the first day of a semester"),
    ],
)
def test_a_bad_row_of_another_table_names_the_line(rates_file: Path, row: str, expected: str) -> None:
    rates_file.write_text(f"table,date,rate\n{row}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        RateTable.default(rates_file)
    assert f"{rates_file}, line 2: " in str(caught.value) and expected in str(caught.value)


def test_rates_check_refuses_a_horizon_that_is_not_a_number_of_days(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["rates", "check", "--within", "-3"])
    assert caught.value.code == 2
    assert "not a number of days from 0 to 3660: '-3'" in capsys.readouterr().err


def test_the_compose_deployment_mounts_a_rates_file_that_loads() -> None:
    # Given the compose file's defaults shared by the workers
    root = Path(__file__).resolve().parents[3]
    compose = yaml.safe_load((root / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    defaults = compose["x-relance"]
    # Then RELANCE_RATES_FILE names the file mounted from deploy/rates.csv, and that file is a valid (empty) table
    target = defaults["environment"]["RELANCE_RATES_FILE"]
    assert f"./rates.csv:{target}:ro" in defaults["volumes"]
    assert RateTable.load(root / "deploy" / "rates.csv").rows() == []
    assert compose["services"]["escalation"]["environment"]["RELANCE_RATES_FILE"] == target
