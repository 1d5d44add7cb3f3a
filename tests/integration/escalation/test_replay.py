"""Replay: a fresh ledger fed the log's ERP events, the clock driven by its recorded ticks, decides exactly the same.

The source log is written the way production writes it (ingest, the escalation worker firing timers and following
the log day after day, a backfill tick at odd instants, a worker down for three days), for the customers of the
scenario tests, all in one tenant. The replay never looks at the wall clock nor at the recorded decisions: it only
knows the ERP's events and the instants of the ``escalation.clock_ticked`` events.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from services.escalation.interest import RateTable
from services.escalation.replay import replay
from services.escalation.service import CLOCK_TICKED
from services.escalation.worker import policy_books, real_rules, tick
from shared.config import Settings, load_settings
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger, RecordedEvent
from tests.factories import TENANT, Ev
from tests.integration.escalation.test_scenarios import ERP_EVENTS, SCENARIOS, Desk, write_policies
from tests.integration.ledger.tamper import attacker, rechain, recompute_projections

pytestmark = pytest.mark.integration

FIRST, LAST = date(2026, 2, 1), date(2026, 4, 30)
DOWN = {date(2026, 3, 5), date(2026, 3, 6), date(2026, 3, 7)}  # the worker is down for everyone
# An operator's backfills, at instants no timer uses: before the worker's round of the day (they take its decisions)
# and after it (they find nothing new)
BACKFILLS = [
    datetime(2026, 3, 14, 0, 30, tzinfo=UTC),
    datetime(2026, 3, 22, 6, 15, 30, tzinfo=UTC),
    datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC),
]


@pytest.fixture
def settings(pg_url: str, tmp_path: Path) -> Settings:
    return load_settings(database_url=pg_url, policy_dir=write_policies(tmp_path / "policies"))


@pytest.fixture
def source(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.require_database_url(), pool_size=5)
    yield engine
    engine.dispose()


@pytest.fixture
def fresh(make_pg_database: Callable[[], str]) -> Iterator[Callable[[], Ledger]]:
    """Factory: an empty, migrated PostgreSQL ledger (a new database each call)."""
    engines: list[Engine] = []

    def factory() -> Ledger:
        engines.append(make_engine(make_pg_database()))
        return Ledger(engines[-1])

    yield factory
    for engine in engines:
        engine.dispose()


def record_history(settings: Settings, engine: Engine) -> Ledger:
    """Every scenario's customer in one tenant, the days passing from February to April, as production would."""
    desk = Desk(settings, engine)
    erp: dict[date, list[tuple[str, Ev]]] = {}
    for name, scenario in SCENARIOS.items():
        for when, events in scenario.erp.items():
            erp.setdefault(date.fromisoformat(when), []).extend(
                (f"C-{name}", ev.with_id(f"{name}/{ev.event_id}")) for ev in events
            )
    backfills = list(BACKFILLS)
    day = FIRST
    while day <= LAST:
        for customer_id, ev in erp.get(day, []):
            desk.erp(day, ev, customer_id=customer_id)
        while backfills and backfills[0] < datetime.combine(day, time(9), tzinfo=UTC):
            tick(desk.ledger, desk.books, desk.rules, backfills.pop(0))
        if day in DOWN:
            desk.worker.stop.set()
        else:
            if desk.worker.stop.is_set():
                desk.worker = desk.start_worker()
            desk.at(day)
        while backfills and backfills[0].date() == day:
            tick(desk.ledger, desk.books, desk.rules, backfills.pop(0))
        day += timedelta(days=1)
    return desk.ledger


def decisions(events: list[RecordedEvent]) -> list[tuple[object, ...]]:
    return [
        (e.version, e.event_id, e.event_type, e.data, e.metadata, e.occurred_at)
        for e in events
        if e.event_type not in ERP_EVENTS
    ]


def test_a_replay_into_a_fresh_database_takes_exactly_the_recorded_decisions(
    settings: Settings, source: Engine, fresh: Callable[[], Ledger]
) -> None:
    # Given a log written by timers, ERP triggers and backfills over three months, for several customers
    original = record_history(settings, source)
    streams = original.streams(TENANT)
    assert len(streams) == len(SCENARIOS)
    recorded = {key: original.read_stream(*key) for key in streams}
    ticks = [e for events in recorded.values() for e in events if e.event_type == CLOCK_TICKED]
    assert {t.data["trigger"] for t in ticks} == {"timer", "ledger", "manual"}
    assert len({t.data["as_of"] for t in ticks}) > 20
    decided = sum(
        len(decisions(events)) - sum(e.event_type == CLOCK_TICKED for e in events) for events in recorded.values()
    )
    # When the log is replayed into a fresh database (ERP events re-applied, the clock only from the recorded ticks)
    target = fresh()
    report = replay(original, target, policy_books(settings), real_rules(settings))
    # Then every stream is the same, event for event: ids, types, data, metadata, instants and versions
    assert report.ok, [str(d) for d in report.divergences]
    assert (report.streams, report.ticks, report.decisions) == (len(streams), len(ticks), decided)
    for key, events in recorded.items():
        replayed = target.read_stream(*key)
        assert decisions(replayed) == decisions(events)
        assert [e.event_id for e in replayed] == [e.event_id for e in events]
    assert target.verify().ok
    # And a second replay of the replayed log gives the same again
    assert replay(target, fresh(), policy_books(settings), real_rules(settings)).ok
    # And the replay in memory, which writes nothing, counts and finds the same
    seen: list[tuple[int, int]] = []
    in_memory = replay(original, None, policy_books(settings), real_rules(settings), progress=lambda *n: seen.append(n))
    assert in_memory == report
    assert seen[-1] == (sum(len(events) for events in recorded.values()),) * 2


def test_a_replay_under_other_rules_shows_where_the_decisions_part(
    settings: Settings, source: Engine, fresh: Callable[[], Ledger], tmp_path: Path
) -> None:
    original = record_history(settings, source)
    # When the log is replayed with a reference rate other than the one in force when it was written
    corrected = tmp_path / "rates.csv"
    corrected.write_text("semester_start,rate\n2026-01-01,3.15\n")
    rules = replace(real_rules(settings), rates=RateTable.default(corrected))
    report = replay(original, fresh(), policy_books(settings), rules)
    # Then the replay says which streams differ, from the first interest computed (or fixed) on, in memory alike
    assert not report.ok
    assert replay(original, None, policy_books(settings), rules).divergences == report.divergences
    first = report.divergences[0]
    assert "interest.computed" in first.recorded or "claim.fixed" in first.recorded
    assert first.differences and all(d.field.startswith("data.") for d in first.differences)
    interest_customers = {
        key
        for key in original.streams(TENANT)
        if any(e.event_type in ("interest.computed", "claim.fixed") for e in original.read_stream(*key))
    }
    assert {(d.tenant, d.customer_id) for d in report.divergences} == interest_customers


def test_a_log_written_when_relance_spelt_utc_as_an_offset_replays_without_divergence_and_verifies(
    settings: Settings, source: Engine, fresh: Callable[[], Ledger]
) -> None:
    # Given a log whose clock ticks and decisions' metadata spell their instants "+00:00", as relance once wrote
    # them (the hash chain covering that spelling), while a replay today writes "Z"
    original = record_history(settings, source)

    def offset(instant: str) -> str:
        return instant.replace("Z", "+00:00")

    rewritten = original.streams(TENANT)[:2]  # two customers' streams as of old, the others as of today
    changes: dict[tuple[str, str], dict[int, dict[str, object]]] = {key: {} for key in rewritten}
    for key in rewritten:  # read before the rewrite: its transaction locks the log against other connections
        for e in original.read_stream(*key):
            change: dict[str, object] = {}
            if "as_of" in e.metadata:
                change["metadata"] = {**e.metadata, "as_of": offset(e.metadata["as_of"])}
            if e.event_type == CLOCK_TICKED:
                change["data"] = {**e.data, "as_of": offset(e.data["as_of"])}
            if change:
                changes[key][e.version] = change
    with attacker(source) as conn:
        for key in rewritten:
            rechain(conn, *key, changes[key])
            recompute_projections(original, conn, *key)
    old = [e for key in rewritten for e in original.read_stream(*key) if e.event_type == CLOCK_TICKED]
    assert old and all(e.data["as_of"].endswith("+00:00") and e.metadata["as_of"].endswith("+00:00") for e in old)
    assert original.verify().ok
    # When it is replayed with today's code
    report = replay(original, fresh(), policy_books(settings), real_rules(settings))
    # Then the instants compare as instants: no divergence, in memory alike
    assert report.ok, [str(d) for d in report.divergences]
    assert replay(original, None, policy_books(settings), real_rules(settings)).ok


def test_the_replay_command_replays_in_memory_and_names_a_forged_decision(
    settings: Settings, source: Engine, pg_url: str
) -> None:
    # Given a log written as production writes it
    original = record_history(settings, source)
    env = {
        **os.environ,
        "RELANCE_DATABASE_URL": pg_url,
        "RELANCE_POLICY_DIR": str(settings.policy_dir),
        "RELANCE_LOG_LEVEL": "warning",
    }

    def relance(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "services.cli", *argv]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    # When `relance replay` runs over it
    clean = relance("replay", "--tenant", TENANT)
    # Then it finds every decision as recorded, and writes nothing
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.splitlines()[-1].endswith("events/s): as recorded")
    assert f"{len(SCENARIOS)} stream(s)" in clean.stdout
    # And when a decision of one stream is rewritten, with a recomputed chain that verify alone cannot see
    key = original.streams(TENANT)[0]
    forged = next(e for e in original.read_stream(*key) if e.event_type == "escalation.level_reached")
    with attacker(source) as conn:
        rechain(conn, *key, {forged.version: {"data": {**forged.data, "level": "forged"}}})
        recompute_projections(original, conn, *key)
    caught = relance("replay", "--tenant", TENANT)
    # Then the replay names the stream, the version and what differs, and exits 1
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert f"DIVERGES  {key[0]}/{key[1]} v{forged.version}: escalation.level_reached {forged.event_id}" in caught.stdout
    assert '  data.level  recorded "forged"' in caught.stdout
    assert caught.stdout.splitlines()[-1].endswith("1 stream(s) diverge")
