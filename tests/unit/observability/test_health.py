"""Liveness follows the worker's loop, readiness what the worker needs, and an idle worker still says it is there."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from shared.ledger.db import make_engine
from shared.observability.health import HEARTBEAT_LOG_SECONDS, DatabaseCheck, Health
from shared.observability.metrics import EscalationMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_holds_while_the_loop_beats_and_fails_once_it_stopped_for_longer_than_the_limit() -> None:
    clock = Clock()
    health = Health("escalation", EscalationMetrics(), live_seconds=30, clock=clock, wall=lambda: 5000.0 + clock.now)
    clock.now += 29
    assert health.live()[0]
    clock.now += 2
    alive, body = health.live()
    assert not alive and body == {"live": False, "service": "escalation", "seconds_since_beat": 31.0}
    health.beat()
    assert health.live()[0]


def test_the_heartbeat_gauge_reads_the_wall_time_of_the_last_beat() -> None:
    clock = Clock()
    metrics = EscalationMetrics()
    health = Health("escalation", metrics, clock=clock, wall=lambda: 5000.0 + clock.now)
    clock.now += 10
    health.beat()
    clock.now += 7  # scraped 7 s after the beat
    assert metrics.registry.get_sample_value("relance_heartbeat_timestamp_seconds", {"service": "escalation"}) == 6010


def test_an_idle_worker_logs_a_heartbeat_with_its_totals_once_a_minute() -> None:
    clock = Clock()
    health = Health("relay", clock=clock)
    health.totals = lambda: {"published": 3}
    with capture_logs() as logs:
        for _ in range(3 * 60):  # three minutes of rounds, one a second
            clock.now += 1
            health.beat()
    beats = [line for line in logs if line["event"] == "worker.heartbeat"]
    assert len(beats) == 3 == 3 * 60 / HEARTBEAT_LOG_SECONDS
    assert beats[0]["published"] == 3


def test_readiness_names_each_check_that_fails() -> None:
    problem: list[str | None] = [None]
    health = Health("notifier", database=lambda: problem[0], broker=True)
    ready, body = health.ready()
    assert not ready and body["checks"] == {"database": "ok", "broker": "not connected yet"}
    health.broker_connected()
    assert health.ready() == (
        True,
        {"ready": True, "service": "notifier", "checks": {"database": "ok", "broker": "ok"}, "not_ready": []},
    )
    problem[0] = "unreachable: connection refused"
    health.broker_lost("ConnectionResetError")
    ready, body = health.ready()
    assert not ready and body["not_ready"] == ["broker", "database"]
    assert body["checks"]["database"] == "unreachable: connection refused"


def test_the_database_check_wants_the_latest_schema(tmp_path: Path, sqlite_url: str) -> None:
    # Given a migrated database and an empty one
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    migrated = DatabaseCheck(make_engine(sqlite_url), sqlite_url)
    bare = DatabaseCheck(make_engine(empty), empty)
    # Then only the migrated one is ready, and the other says what to run
    assert migrated() is None
    assert bare() == "no schema yet: run `relance db upgrade`"
    migrated.engine.dispose()
    bare.engine.dispose()
