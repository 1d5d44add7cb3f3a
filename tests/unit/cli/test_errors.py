"""How the command line reports a database that goes away in the middle of a command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.cli import escalation, main
from shared.config import Settings
from shared.ledger.store import LedgerNeedsAttention, LedgerUnavailable


@pytest.mark.parametrize(
    "failure",
    [
        LedgerUnavailable("connection to server at 127.0.0.1 port 5432 lost"),
        LedgerNeedsAttention('relation "customer_balances" does not exist (SQLSTATE 42P01, UndefinedTable)'),
    ],
)
def test_a_database_lost_during_clock_tick_is_one_line_and_exit_69(
    failure: LedgerUnavailable, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a clock tick whose database fails half-way through the customers
    def lost(args: argparse.Namespace, settings: Settings) -> int:
        raise failure

    monkeypatch.setattr(escalation, "clock_tick", lost)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    # When it runs
    code = main(["clock", "tick", "--at", "2026-12-01T08:00:00Z", "--database-url", url])
    # Then it says why in one line, that the committed work stays, and exits 69 (unavailable), with no traceback
    error = capsys.readouterr().err
    assert code == 69
    assert error.count("\n") == 1 and "Traceback" not in error
    assert error.startswith("relance: the database could not finish the command: ") and str(failure) in error
    assert "what was already committed stays" in error
