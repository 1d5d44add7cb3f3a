"""Jobs on the embedded default (SQLite, Dramatiq's stub broker and an in-process worker): enqueued once, run once,
refusals failed with their reason, transient failures retried, a dead worker's job taken over."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from services.jobs import registry, store
from services.jobs.broker import JobsRuntime, open_jobs
from services.jobs.errors import InvalidJob, JobConflict, UnknownKind
from services.jobs.store import Job
from shared.config import load_settings
from shared.ledger.db import make_engine
from tests.unit.jobs import kinds

TENANT = "acme-fr"


@pytest.fixture
def runtime(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobsRuntime]:
    for kind in kinds.KINDS:
        monkeypatch.setitem(registry.KINDS, kind.name, kind)
    settings = load_settings(database_url=sqlite_url, jobs_lease_seconds=2, jobs_max_attempts=3)
    engine = make_engine(sqlite_url)
    jobs = open_jobs(settings, engine)
    jobs.start_worker(2)
    yield jobs
    jobs.close()
    engine.dispose()


def finished(runtime: JobsRuntime, job_id: str, timeout: float = 30) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runtime.jobs.get(job_id)
        assert job is not None
        if job.finished:
            runtime.broker.join(runtime.queue)  # and the broker has nothing left for it (a duplicate, a retry)
            return runtime.jobs.get(job_id) or job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {runtime.jobs.get(job_id)}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_the_embedded_default_runs_jobs_in_process_on_the_stub_broker(runtime: JobsRuntime) -> None:
    assert runtime.in_process and isinstance(runtime.broker, StubBroker)
    assert set(runtime.actors) >= {"ledger.checkpoint", "relay.retry_dead", "escalation.replay"}
    assert {a.queue_name for a in runtime.actors.values()} == {"relance.jobs"}


def test_the_same_request_twice_is_one_job_whose_effect_runs_once(runtime: JobsRuntime, tmp_path: Path) -> None:
    effect = tmp_path / "effect.txt"
    first = runtime.jobs.enqueue(TENANT, "test.effect", {"path": str(effect)}, "ann")
    again = runtime.jobs.enqueue(TENANT, "test.effect", {"path": str(effect)}, "bob")
    assert first.created and first.sent
    assert again.job.id == first.job.id and not again.created and not again.sent
    done = finished(runtime, first.job.id)
    assert done.status == "done" and done.attempts == 1 and done.requested_by == "ann"
    assert done.result == {"path": str(effect), "lines": 1}
    assert (done.progress_done, done.progress_total, done.progress_note) == (2, 3, "writing the effect")
    assert lines(effect) == [first.job.id]


def test_a_duplicated_message_of_a_done_job_does_nothing(runtime: JobsRuntime, tmp_path: Path) -> None:
    effect = tmp_path / "effect.txt"
    job = runtime.jobs.enqueue(TENANT, "test.effect", {"path": str(effect)}, "ann").job
    finished(runtime, job.id)
    # When the broker delivers the same message again (a retry's copy, a redelivery)
    runtime.actors["test.effect"].send(job.id)
    runtime.actors["test.effect"].send(job.id)
    # Then the effect ran once, the job is still done once
    assert finished(runtime, job.id).attempts == 1
    assert lines(effect) == [job.id]


def test_ids_are_per_tenant_kind_arguments_and_day_or_given(runtime: JobsRuntime, tmp_path: Path) -> None:
    path = str(tmp_path / "e.txt")
    one = runtime.jobs.enqueue(TENANT, "test.effect", {"path": path}, "ann").job
    other_tenant = runtime.jobs.enqueue("globex-de", "test.effect", {"path": path}, "ann").job
    given = runtime.jobs.enqueue(TENANT, "test.effect", {"path": path}, "ann", job_id="month-end-2026-11").job
    assert len({one.id, other_tenant.id, given.id}) == 3 and given.id == "month-end-2026-11"
    assert one.id.startswith("test.effect.")
    with pytest.raises(JobConflict, match="already names another job"):
        runtime.jobs.enqueue(TENANT, "test.effect", {"path": path + "x"}, "ann", job_id="month-end-2026-11")


def test_a_refused_job_fails_with_its_reason_and_is_never_retried(runtime: JobsRuntime, tmp_path: Path) -> None:
    effect = tmp_path / "effect.txt"
    args = {"path": str(effect), "refuse": "customer C-1 is not in tenant acme-fr"}
    job = runtime.jobs.enqueue(TENANT, "test.effect", args, "ann").job
    failed = finished(runtime, job.id)
    assert failed.status == "failed" and failed.error == "customer C-1 is not in tenant acme-fr"
    assert failed.attempts == 1 and lines(effect.with_suffix(".runs")) == [job.id]
    assert isinstance(runtime.broker, StubBroker) and not runtime.broker.dead_letters  # failed by the service


def test_a_failed_job_runs_again_only_on_request(runtime: JobsRuntime, tmp_path: Path) -> None:
    effect = tmp_path / "effect.txt"
    args = {"path": str(effect), "transient": 4}  # runs 1-3 fail, and the first run asked for again
    job = runtime.jobs.enqueue(TENANT, "test.effect", args, "ann").job
    failed = finished(runtime, job.id)
    assert failed.status == "failed" and failed.attempts == 3  # RELANCE_JOBS_MAX_ATTEMPTS
    assert failed.error is not None and failed.error.startswith("gave up after 3 attempts; the last one: ")
    assert "connection refused" in failed.error
    assert not runtime.jobs.enqueue(TENANT, "test.effect", args, "ann").sent
    rerun = runtime.jobs.enqueue(TENANT, "test.effect", args, "bob", rerun=True)
    assert rerun.sent and rerun.job.status in ("queued", "running", "done", "failed")
    done = finished(runtime, job.id)
    assert done.status == "done" and done.attempts == 2 and done.error is None  # one more outage, then it went
    assert lines(effect) == [job.id]


def test_a_transient_failure_is_retried_and_then_succeeds(runtime: JobsRuntime, tmp_path: Path) -> None:
    effect = tmp_path / "effect.txt"
    job = runtime.jobs.enqueue(TENANT, "test.effect", {"path": str(effect), "transient": 1}, "ann").job
    done = finished(runtime, job.id)
    assert done.status == "done" and done.attempts == 2 and done.error is None
    assert lines(effect.with_suffix(".runs")) == [job.id, job.id] and lines(effect) == [job.id]


def test_arguments_kinds_and_tenants_are_checked_when_enqueued(runtime: JobsRuntime) -> None:
    with pytest.raises(UnknownKind, match=r"the kinds are .*ledger\.checkpoint"):
        runtime.jobs.enqueue(TENANT, "ledger.shred", {}, "ann")
    with pytest.raises(InvalidJob, match=r"arguments of test\.effect refused: path: Field required"):
        runtime.jobs.enqueue(TENANT, "test.effect", {}, "ann")
    with pytest.raises(InvalidJob, match="unexpected: Extra inputs are not permitted"):
        runtime.jobs.enqueue(TENANT, "relay.retry_dead", {"unexpected": 1}, "ann")
    with pytest.raises(InvalidJob, match="is not a tenant"):
        runtime.jobs.enqueue("ACME FR", "escalation.replay", {}, "ann")
    assert runtime.jobs.recent(None) == []


def test_a_result_json_cannot_hold_and_an_overlong_run_fail_with_a_reason(runtime: JobsRuntime) -> None:
    not_json = runtime.jobs.enqueue(TENANT, "test.not_json", {}, "ann").job
    sleeper = runtime.jobs.enqueue(TENANT, "test.sleeper", {}, "ann").job
    assert "cannot be kept as JSON" in str(finished(runtime, not_json.id).error)
    slow = finished(runtime, sleeper.id)
    assert slow.status == "failed" and slow.error == "stopped: it ran longer than its time limit of 1 s"


def test_the_recent_jobs_are_read_per_tenant(runtime: JobsRuntime, tmp_path: Path) -> None:
    ours = runtime.jobs.enqueue(TENANT, "test.effect", {"path": str(tmp_path / "a")}, "ann").job
    theirs = runtime.jobs.enqueue("globex-de", "test.effect", {"path": str(tmp_path / "b")}, "ann").job
    assert [j.id for j in runtime.jobs.recent([TENANT])] == [ours.id]
    assert {j.id for j in runtime.jobs.recent(None)} == {ours.id, theirs.id}


def test_a_running_job_is_claimed_again_only_once_its_heartbeat_is_older_than_the_lease(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    lease = timedelta(seconds=30)
    assert store.insert(engine, "j-1", TENANT, "escalation.replay", {}, "ann", at)
    assert not store.insert(engine, "j-1", TENANT, "escalation.replay", {}, "bob", at)
    with engine.begin() as conn:
        assert store.claim(conn, "j-1", at, lease) == 1
        assert store.claim(conn, "j-1", at + timedelta(seconds=29), lease) is None  # its worker is alive
        assert store.heartbeat(conn, "j-1", 1, at + timedelta(seconds=20))
        assert store.claim(conn, "j-1", at + timedelta(seconds=49), lease) is None
        assert store.claim(conn, "j-1", at + timedelta(seconds=51), lease) == 2  # its worker died: taken over
        # the first worker, late, changes nothing any more
        assert not store.heartbeat(conn, "j-1", 1, at + timedelta(seconds=52))
        assert not store.finish(conn, "j-1", 1, at + timedelta(seconds=53), result={"late": True})
        assert store.finish(conn, "j-1", 2, at + timedelta(seconds=54), result={"n": 1})
        assert store.claim(conn, "j-1", at + timedelta(hours=1), lease) is None  # done is done
    with engine.connect() as conn:
        job = store.get(conn, "j-1")
    assert job is not None and (job.status, job.attempts, job.result) == ("done", 2, {"n": 1})
    engine.dispose()


def test_a_job_of_a_dead_worker_is_taken_over_by_the_next_delivery(runtime: JobsRuntime, tmp_path: Path) -> None:
    # Given a job a worker claimed and then died running (its heartbeat stops)
    effect = tmp_path / "effect.txt"
    at = datetime.now(UTC)
    args: dict[str, Any] = registry.kind("test.effect").check({"path": str(effect)})
    assert store.insert(runtime.jobs.engine, "orphan", TENANT, "test.effect", args, "ann", at)
    with runtime.jobs.engine.begin() as conn:
        assert store.claim(conn, "orphan", at, runtime.jobs.lease) == 1
    # When its message is delivered again (RabbitMQ redelivers what the dead worker had not acknowledged)
    runtime.actors["test.effect"].send("orphan")
    # Then it waits for the lease, takes the job over and runs it once
    done = finished(runtime, "orphan")
    assert done.status == "done" and done.attempts == 2 and lines(effect) == ["orphan"]
    assert done.finished_at is not None and done.finished_at - at >= runtime.jobs.lease
