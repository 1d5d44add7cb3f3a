"""Jobs on the real RabbitMQ and PostgreSQL: publisher confirms on the test's own queue, one effect per job however
often it is asked for or delivered, a transient failure retried through Dramatiq's delay queue, and a worker killed
in the middle of a job leaving it to another one, which finishes it once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import func, select

from services.cli.app import main
from services.jobs import registry
from services.jobs.broker import JobsRuntime, open_jobs
from services.jobs.store import Job
from shared.config import Settings, load_settings
from shared.ledger import checkpoints as cp
from shared.ledger.db import make_engine
from shared.ledger.schema import checkpoints
from tests.servers import AmqpNames
from tests.unit.jobs import kinds

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TENANT = "acme-fr"


@pytest.fixture
def settings(pg_url: str, amqp_url: str, amqp_names: AmqpNames, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for kind in kinds.KINDS:
        monkeypatch.setitem(registry.KINDS, kind.name, kind)
    return load_settings(
        database_url=pg_url, amqp_url=amqp_url, jobs_lease_seconds=3, jobs_metrics_port=0, **amqp_names.settings()
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[JobsRuntime]:
    engine = make_engine(settings.require_database_url())
    jobs = open_jobs(settings, engine)
    yield jobs
    jobs.close()
    engine.dispose()


def waiting(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def until(runtime: JobsRuntime, job_id: str, check: Any, timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runtime.jobs.get(job_id)
        assert job is not None
        if check(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never got there: {runtime.jobs.get(job_id)}")


def test_jobs_are_published_with_confirms_on_the_test_runs_own_queue(
    runtime: JobsRuntime, settings: Settings, amqp_names: AmqpNames, tmp_path: Path
) -> None:
    assert isinstance(runtime.broker, RabbitmqBroker) and not runtime.in_process
    assert runtime.broker.confirm_delivery is True
    assert {actor.queue_name for actor in runtime.actors.values()} == {amqp_names.jobs_queue}
    assert {actor.actor_name for actor in runtime.actors.values()} >= {"ledger.checkpoint", "relay.retry_dead"}
    # When a job is enqueued, its message waits on that queue until a worker takes it
    job = runtime.jobs.enqueue(TENANT, "test.effect", {"path": str(tmp_path / "e")}, "ann").job
    assert waiting(settings.amqp_url, amqp_names.jobs_queue) == 1
    runtime.start_worker(2)
    assert until(runtime, job.id, lambda j: j.finished).status == "done"


def test_a_checkpoint_asked_for_twice_and_delivered_twice_is_signed_once(
    runtime: JobsRuntime, settings: Settings, tmp_path: Path
) -> None:
    private, _ = cp.generate_keys(tmp_path)
    runtime.jobs.settings = settings.model_copy(update={"checkpoint_key_file": private})
    first = runtime.jobs.enqueue(TENANT, "ledger.checkpoint", {"settle_seconds": 0}, "ann")
    second = runtime.jobs.enqueue(TENANT, "ledger.checkpoint", {"settle_seconds": 0}, "bob")
    assert second.job.id == first.job.id and not second.sent
    runtime.actors["ledger.checkpoint"].send(first.job.id)  # a duplicated message, as a Dramatiq retry can make
    runtime.start_worker(2)
    done = until(runtime, first.job.id, lambda j: j.finished)
    runtime.broker.join(runtime.queue, timeout=30_000)
    assert done.status == "done" and done.attempts == 1 and done.result is not None
    assert done.result["checkpoint"] == 1
    with runtime.jobs.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(checkpoints)).scalar_one() == 1


def test_a_transient_failure_is_retried_through_the_delay_queue_and_then_succeeds(
    runtime: JobsRuntime, tmp_path: Path
) -> None:
    effect = tmp_path / "effect.txt"
    job = runtime.jobs.enqueue(TENANT, "test.effect", {"path": str(effect), "transient": 1}, "ann").job
    runtime.start_worker(2)
    done = until(runtime, job.id, lambda j: j.finished)
    assert done.status == "done" and done.attempts == 2 and effect.read_text().splitlines() == [job.id]


def test_a_refused_job_shows_its_reason_and_is_not_retried(runtime: JobsRuntime, tmp_path: Path) -> None:
    job = runtime.jobs.enqueue(TENANT, "ledger.checkpoint", {}, "ann").job  # no signing key where the jobs run
    runtime.start_worker(2)
    failed = until(runtime, job.id, lambda j: j.finished)
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.error is not None and "set RELANCE_CHECKPOINT_KEY_FILE for `relance worker jobs`" in failed.error


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WorkerProcess:
    """``relance worker jobs`` (with the tests' kinds) in a process of its own, logging to a file."""

    def __init__(self, settings: Settings, log: Path, metrics_port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RELANCE_")}
        env.update(
            RELANCE_DATABASE_URL=settings.require_database_url(),
            RELANCE_AMQP_URL=settings.amqp_url,
            RELANCE_JOBS_QUEUE=settings.jobs_queue,
            RELANCE_JOBS_LEASE_SECONDS=str(settings.jobs_lease_seconds),
            RELANCE_JOBS_METRICS_PORT=str(metrics_port),
            RELANCE_LOG_FORMAT="json",
        )
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.jobs.worker_process"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def test_a_worker_killed_mid_job_leaves_the_job_to_another_worker_which_finishes_it_once(
    runtime: JobsRuntime, settings: Settings, tmp_path: Path
) -> None:
    effect, hold = tmp_path / "effect.txt", tmp_path / "go-on"
    first = WorkerProcess(settings, tmp_path / "first.log", 0)
    second: WorkerProcess | None = None
    try:
        # Given a job that a first worker is running
        job = runtime.jobs.enqueue(TENANT, "test.effect", {"path": str(effect), "hold": str(hold)}, "ann").job
        running = until(runtime, job.id, lambda j: j.progress_note == "holding")
        assert (running.status, running.attempts, running.progress_done, running.progress_total) == (
            "running",
            1,
            1,
            3,
        )
        # When that worker is killed outright, and another one runs
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        port = _free_port()
        second = WorkerProcess(settings, tmp_path / "second.log", port)
        taken = until(runtime, job.id, lambda j: j.attempts == 2 and j.status == "running")
        assert taken.heartbeat_at is not None and running.heartbeat_at is not None
        hold.touch()
        # Then the second one took the job over once the first one's lease was over, and finished it once
        done = until(runtime, job.id, lambda j: j.finished)
        assert done.status == "done" and done.attempts == 2 and done.error is None
        assert effect.read_text().splitlines() == [job.id]
        assert effect.with_suffix(".runs").read_text().splitlines() == [job.id, job.id]
        # and its Dramatiq metrics say so on the port of the settings
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'dramatiq_messages_total{actor_name="test.effect"' in metrics
        second.stop()
        assert second.process.returncode == 0  # SIGTERM: a graceful stop
    finally:
        hold.touch()
        first.stop()
        if second is not None:
            second.stop()


def test_the_cli_hands_the_job_to_the_workers_and_follows_it(
    runtime: JobsRuntime, settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime.start_worker(2)  # the jobs worker, here in the test's process
    for name, value in {"RELANCE_AMQP_URL": settings.amqp_url, "RELANCE_JOBS_QUEUE": settings.jobs_queue}.items():
        monkeypatch.setenv(name, value)
    url = settings.require_database_url()
    args = ["jobs", "enqueue", "escalation.replay", "--tenant", TENANT, "--by", "ops", "--database-url", url]
    assert main([*args, "--wait"]) == 0
    captured = capsys.readouterr()
    job_id = captured.out.split()[0]
    assert "status   done  attempts 1" in captured.out and "asked by ops" in captured.out
    assert "queued" in captured.err and "done" in captured.err  # the progress it followed
    job = runtime.jobs.get(job_id)
    assert job is not None and job.status == "done" and job.result is not None and job.result["ok"] is True


def test_a_broker_that_does_not_answer_leaves_the_job_queued_and_says_to_ask_again(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELANCE_AMQP_URL", f"amqp://guest:guest@127.0.0.1:{_free_port()}/%2F")
    url = settings.require_database_url()
    assert main(["jobs", "enqueue", "escalation.replay", "--tenant", TENANT, "--database-url", url]) == 69
    assert "did not take job escalation.replay." in capsys.readouterr().err
    assert main(["jobs", "list", "--database-url", url]) == 0
    assert " queued " in capsys.readouterr().out
