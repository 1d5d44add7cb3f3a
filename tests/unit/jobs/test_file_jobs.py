"""The jobs that make files, run as jobs on the ledger's database: the day's print batch, an audit bundle, the
credit committee's pack. Each writes into RELANCE_JOBS_OUTPUT_DIR/<job id>/ and names its file in its result; run
twice (the same request), it is one job and one effect (SQLite here, PostgreSQL too under integration)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader

from services.jobs.broker import JobsRuntime, open_jobs
from services.jobs.store import Job
from shared.config import load_settings
from shared.ledger import letters
from shared.ledger.store import Ledger
from tests.factories import TENANT
from tests.unit.cli.test_letters import CUSTOMERS, POSTED_ON, desk  # noqa: F401 - the fixture
from tests.unit.notifier.test_service import Desk


@pytest.fixture
def jobs(desk: Desk, ledger_url: str, tmp_path: Path) -> Iterator[JobsRuntime]:  # noqa: F811 - the fixture above
    settings = load_settings(database_url=ledger_url, jobs_broker="inprocess", jobs_output_dir=tmp_path / "out")
    runtime = open_jobs(settings, desk.engine)
    runtime.start_worker(1)
    yield runtime
    runtime.close()


def finished(runtime: JobsRuntime, job_id: str, timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runtime.jobs.get(job_id)
        assert job is not None
        if job.finished:
            runtime.broker.join(runtime.queue)
            return runtime.jobs.get(job_id) or job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {runtime.jobs.get(job_id)}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_print_batch_job_writes_the_batch_then_marks_its_letters_once(desk: Desk, jobs: JobsRuntime) -> None:  # noqa: F811
    # When the day's batch is asked for twice
    first = jobs.jobs.enqueue(TENANT, "notifier.letters_batch", {"date": POSTED_ON}, "ann")
    again = jobs.jobs.enqueue(TENANT, "notifier.letters_batch", {"date": POSTED_ON}, "bob")
    assert again.job.id == first.job.id and not again.created
    done = finished(jobs, first.job.id)
    # Then one batch of both letters was written, in the job's own folder, and its result names it
    assert done.status == "done", done.error
    assert done.result is not None and done.result["letters"] == len(CUSTOMERS)
    out = Path(done.result["file"])
    assert out.parent.name == done.id and sha256(out) == done.result["sha256"]
    stored = letters.listed(desk.engine, TENANT)
    assert len(PdfReader(io.BytesIO(out.read_bytes())).pages) == 1 + sum(letter.pages for letter in stored)
    # And every letter is handed to print once, for that batch
    ledger = Ledger(desk.engine)
    for customer_id in CUSTOMERS:
        printed = [e for e in ledger.read_stream(TENANT, customer_id) if e.event_type == "letter.handed_to_print"]
        assert [e.data["batch_id"] for e in printed] == [done.result["batch_id"]]


def test_the_audit_bundle_job_writes_a_bundle_that_verifies_offline(
    desk: Desk,  # noqa: F811
    jobs: JobsRuntime,
    tmp_path: Path,
) -> None:
    done = finished(jobs, jobs.jobs.enqueue(TENANT, "audit.export", {"customer": CUSTOMERS[0]}, "ann").job.id)
    assert done.status == "done", done.error
    assert done.result is not None and done.result["customers"] == 1 and done.result["letters"] == 1
    bundle = Path(done.result["file"])
    assert bundle.parent.name == done.id and sha256(bundle) == done.result["sha256"]
    # The bundle is checked as an auditor would: another process, no relance settings, no database
    checked = subprocess.run(
        [sys.executable, "-m", "services.audit.offline", str(bundle)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        check=False,
    )
    assert checked.returncode == 0 and checked.stdout.startswith("VALID"), checked.stdout + checked.stderr


def test_the_committee_job_writes_the_pack_and_a_refused_argument_says_why(jobs: JobsRuntime) -> None:
    done = finished(jobs, jobs.jobs.enqueue(TENANT, "reports.committee", {"as_of": POSTED_ON}, "ann").job.id)
    assert done.status == "done", done.error
    assert done.result is not None
    files = {Path(f["file"]).name: Path(f["file"]) for f in done.result["files"]}
    assert set(files) == {"committee.html", "committee.csv", "committee.json"}
    assert json.loads(files["committee.json"].read_text())["tenant"] == TENANT
    assert "<svg" in files["committee.html"].read_text()
    # An argument the job cannot take is refused when it is asked for, with the reason
    with pytest.raises(Exception, match="months"):
        jobs.jobs.enqueue(TENANT, "reports.committee", {"months": 0}, "ann")
