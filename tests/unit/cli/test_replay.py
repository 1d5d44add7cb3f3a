"""``relance replay`` on both engines (the PostgreSQL side: integration): a tenant's log written by the escalation's
own ticks is replayed as recorded, a decision rewritten in the database is named by version and field, one stream
alone, and the replayed log written into a scratch database (given, or a new SQLite file)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from services.cli import main
from services.cli.replay import TerminalRate
from services.escalation.replay import signature
from services.escalation.worker import policy_books, real_rules, tick
from shared.config import load_settings
from shared.ledger.db import make_engine
from shared.ledger.schema import events
from shared.ledger.store import Ledger
from tests.factories import TENANT, customer, incoming, invoice
from tests.integration.ledger.tamper import attacker, rechain, recompute_projections

CUSTOMERS = ("C-1", "C-2")
FIRST_TICK = datetime(2026, 9, 2, 8, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    """Given two customers with overdue invoices, and the escalation ticking once a week for eleven weeks."""
    monkeypatch.setenv("RELANCE_LOG_LEVEL", "warning")
    engine = make_engine(ledger_url)
    ledger = Ledger(engine)
    for customer_id in CUSTOMERS:
        history = [
            customer(f"Client {customer_id}"),
            invoice("INV-1", "1000.00", issue_date="2026-08-01", due_date="2026-09-01"),
            invoice("INV-2", "250.00", issue_date="2026-09-01", due_date="2026-10-01"),
        ]
        ledger.record([incoming(e.with_id(f"{customer_id}/{e.event_id}"), customer_id=customer_id) for e in history])
    settings = load_settings(database_url=ledger_url)
    books, rules = policy_books(settings), real_rules(settings)
    for week in range(11):
        tick(ledger, books, rules, FIRST_TICK + timedelta(days=7 * week))
    yield ledger
    engine.dispose()


class Lines(list[dict[str, Any]]):
    """A logger that keeps its lines: ``{"event": name, **values}``."""

    def info(self, event: str, **values: Any) -> None:
        self.append({"event": event, **values})

    warning = info


def replay(url: str, *args: str) -> int:
    return main(["replay", "--tenant", TENANT, *args, "--database-url", url])


def decided(ledger: Ledger, customer_id: str) -> int:
    return sum(e.event_type != "escalation.clock_ticked" and "policy_version" in e.metadata
               for e in ledger.read_stream(TENANT, customer_id))  # fmt: skip


def test_a_log_replays_as_recorded_and_the_summary_says_what_was_replayed(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert decided(ledger, "C-1") > 5
    code = replay(ledger_url)
    out = capsys.readouterr().out
    assert code == 0, out
    last = out.splitlines()[-1]
    assert last.startswith("2 stream(s), 6 ERP event(s), ") and last.endswith("events/s): as recorded")
    assert f"{decided(ledger, 'C-1') + decided(ledger, 'C-2')} decision(s) replayed in " in last
    # And the same summary as JSON
    assert replay(ledger_url, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["verdict"] == "as recorded" and summary["divergences"] == []
    assert (summary["streams"], summary["erp_events"], summary["into"]) == (2, 6, None)
    assert summary["events"] == sum(len(ledger.read_stream(TENANT, c)) for c in CUSTOMERS)
    assert summary["elapsed_seconds"] > 0 and summary["events_per_second"] > 0


def test_a_decision_rewritten_in_the_database_is_named_by_its_version_and_field(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a recorded level rewritten in place, its chain and projections recomputed (verify alone cannot see it)
    forged = next(e for e in ledger.read_stream(TENANT, "C-2") if e.event_type == "escalation.level_reached")
    with attacker(ledger.engine) as conn:
        rechain(conn, TENANT, "C-2", {forged.version: {"data": {**forged.data, "level": "forged"}}})
        recompute_projections(ledger, conn, TENANT, "C-2")
    # When the tenant is replayed
    code = replay(ledger_url)
    out = capsys.readouterr().out
    # Then it exits 1 and names the stream, the first differing version and the field with both values
    assert code == 1, out
    lines = out.splitlines()
    event = f"escalation.level_reached {forged.event_id}"
    assert lines[0] == f"DIVERGES  {TENANT}/C-2 v{forged.version}: {event}, recorded and replayed differ"
    assert lines[1].split() == ["data.level", "recorded", '"forged"']
    assert lines[2].split() == ["replayed", json.dumps(forged.data["level"])]
    assert lines[-1].endswith(": 1 stream(s) diverge")
    # And the JSON summary says the same
    assert replay(ledger_url, "--json") == 1
    [divergence] = json.loads(capsys.readouterr().out)["divergences"]
    assert (divergence["customer_id"], divergence["version"]) == ("C-2", forged.version)
    assert divergence["differences"] == [
        {"field": "data.level", "recorded": '"forged"', "replayed": json.dumps(forged.data["level"])}
    ]
    # And the other customer alone replays as recorded
    assert replay(ledger_url, "--customer", "C-1") == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("1 stream(s), 3 ERP event(s), ")


def test_one_customer_alone_and_an_unknown_customer_or_tenant(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert replay(ledger_url, "--customer", "C-2", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["streams"], summary["customer"]) == (1, "C-2")
    assert summary["events"] == len(ledger.read_stream(TENANT, "C-2"))
    assert replay(ledger_url, "--customer", "C-404") == 2
    assert "no stream for customer 'C-404' of tenant 'acme-fr'" in capsys.readouterr().err
    assert main(["replay", "--tenant", "acme-rf", "--database-url", ledger_url]) == 2
    assert "the log holds no stream of tenant 'acme-rf'" in capsys.readouterr().err


def test_the_tenant_is_required(ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["replay", "--database-url", ledger_url])
    assert exited.value.code == 2 and "--tenant" in capsys.readouterr().err


def test_into_a_database_given_by_its_url_writes_the_replayed_log_there(
    ledger: Ledger, ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target_url = f"sqlite:///{tmp_path / 'scratch.db'}"  # not yet migrated: the replay migrates it first
    assert replay(ledger_url, "--into", target_url) == 0
    out = capsys.readouterr().out
    assert f"replayed log written to {tmp_path / 'scratch.db'}" in out and out.endswith(": as recorded\n")
    target = Ledger(make_engine(target_url))
    try:
        for customer_id in CUSTOMERS:
            replayed = [signature(e) for e in target.read_stream(TENANT, customer_id)]
            assert replayed == [signature(e) for e in ledger.read_stream(TENANT, customer_id)]
        assert target.verify().ok
    finally:
        target.engine.dispose()
    # And a target that already holds events is refused, untouched
    assert replay(ledger_url, "--into", target_url) == 2
    assert "already holds" in capsys.readouterr().err
    assert replay(ledger_url, "--into", ledger_url) == 2


def test_into_alone_writes_a_new_sqlite_file_in_the_current_directory_and_prints_its_path(
    ledger: Ledger, ledger_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert replay(ledger_url, "--customer", "C-1", "--into") == 0
    [made] = list(tmp_path.glob(f"relance-replay-{TENANT}-*.db"))
    assert f"replayed log written to {made}" in capsys.readouterr().out
    engine = make_engine(f"sqlite:///{made}")
    try:
        with engine.connect() as conn:
            held = conn.execute(select(func.count()).select_from(events)).scalar_one()
    finally:
        engine.dispose()
    assert held == len(ledger.read_stream(TENANT, "C-1"))


def test_without_a_terminal_the_progress_is_logged_and_on_one_it_is_shown_with_the_rate(
    ledger: Ledger,
    ledger_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.escalation import replay as module
    from shared.ledger.migrate import upgrade

    settings = load_settings(database_url=ledger_url)
    total = sum(len(ledger.read_stream(TENANT, c)) for c in CUSTOMERS)
    monkeypatch.setattr(module, "PROGRESS_SECONDS", 0.0)  # a line after every stream, rather than every 10 s
    logs = Lines()
    monkeypatch.setattr(module, "log", logs)  # the module's logger (cached once the CLI configured logging)
    upgrade(f"sqlite:///{tmp_path / 'target.db'}")
    target_engine = make_engine(f"sqlite:///{tmp_path / 'target.db'}")
    for target in (None, Ledger(target_engine)):
        logs.clear()
        module.replay(ledger, target, policy_books(settings), real_rules(settings), tenant=TENANT)
        lines = [line for line in logs if line["event"] == "replay.progress"]
        assert [(line["streams"], line["of"]) for line in lines] == [(1, total), (2, total)]
        assert lines[-1]["events"] == total and "events_per_second" in lines[-1]
    # And with a callback (the terminal's), the callback is told instead of the log
    seen: list[tuple[int, int]] = []
    logs.clear()
    module.replay(ledger, None, policy_books(settings), real_rules(settings), tenant=TENANT,
                  progress=lambda *n: seen.append(n))  # fmt: skip
    target_engine.dispose()
    assert seen[-1] == (total, total) and not [line for line in logs if line["event"] == "replay.progress"]
    shown = TerminalRate("replay")
    shown(total, total)
    shown.clear()
    err = capsys.readouterr().err
    assert f"replay: {total:,} of {total:,} events (100%), " in err and " events/s" in err
