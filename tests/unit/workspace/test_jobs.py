"""Background jobs in the API and the workspace, on a SQLite ledger where they run in-process: who may start which
kind, other tenants' jobs answered 404, progress and the reason a job failed shown, the page polling while one runs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.cli.jobs import JobsForWorkspace
from services.jobs import registry
from tests.unit.jobs import kinds
from tests.unit.workspace.web import OTHER, TENANT, Web, json_of, principal, web

API = "/api/v1"
MANAGER = principal("cat", acme_fr="credit_manager", globex_de="collector")


@pytest.fixture
def app(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    for kind in kinds.KINDS:
        monkeypatch.setitem(registry.KINDS, kind.name, kind)
    for holder in web(sqlite_url):
        ports = holder.client.app.state.ports  # type: ignore[attr-defined]
        port = JobsForWorkspace(ports.settings, ports.engine)
        holder.client.app.state.ports = dataclasses.replace(ports, jobs=port)  # type: ignore[attr-defined]
        holder.sign_in(MANAGER)
        yield holder
        port.runtime.close()


def finished(app: Web, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = json_of(app.client.get(f"{API}/jobs/{job_id}"))
        if job["status"] in ("done", "failed"):
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_credit_manager_starts_a_replay_and_follows_it_to_its_result(app: Web) -> None:
    response = app.client.post(f"{API}/jobs", json={"tenant": TENANT, "kind": "escalation.replay"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["tenant"], job["kind"], job["requested_by"], job["args"]) == (TENANT, "escalation.replay", "cat", {})
    done = finished(app, job["id"])
    assert done["status"] == "done" and done["error"] is None
    assert done["result"]["streams"] == 1 and done["result"]["verdict"]
    # asking again the same day is the same job
    again = app.client.post(f"{API}/jobs", json={"tenant": TENANT, "kind": "escalation.replay"})
    assert again.status_code == 202 and again.json()["id"] == job["id"] and again.json()["status"] == "done"


@pytest.mark.parametrize(
    ("role", "kind", "status"),
    [
        ("collector", "escalation.replay", 403),
        ("auditor", "escalation.replay", 202),
        ("auditor", "ledger.checkpoint", 403),
        ("auditor", "relay.retry_dead", 403),
        ("credit_manager", "relay.retry_dead", 202),
        ("administrator", "relay.retry_dead", 403),
    ],
)
def test_roles_say_who_may_start_which_kind(app: Web, role: str, kind: str, status: int) -> None:
    app.sign_in(principal("dan", acme_fr=role))
    response = app.client.post(f"{API}/jobs", json={"tenant": TENANT, "kind": kind})
    assert response.status_code == status, response.text


def test_another_tenants_jobs_are_not_found(app: Web) -> None:
    theirs = json_of(app.client.post(f"{API}/jobs", json={"tenant": TENANT, "kind": "escalation.replay"}))
    app.sign_in(principal("eve", globex_de="credit_manager"))
    assert app.client.get(f"{API}/jobs/{theirs['id']}").status_code == 404
    assert json_of(app.client.get(f"{API}/jobs"))["jobs"] == []
    assert app.client.get(f"{API}/jobs", params={"tenant": TENANT}).status_code == 404
    assert app.client.post(f"{API}/jobs", json={"tenant": TENANT, "kind": "escalation.replay"}).status_code == 404
    app.sign_in(MANAGER)
    assert [j["id"] for j in json_of(app.client.get(f"{API}/jobs"))["jobs"]] == [theirs["id"]]
    assert json_of(app.client.get(f"{API}/jobs", params={"tenant": OTHER}))["jobs"] == []


def test_unknown_kinds_and_refused_arguments_answer_422_with_the_reason(app: Web) -> None:
    unknown = app.client.post(f"{API}/jobs", json={"tenant": TENANT, "kind": "ledger.shred"})
    assert unknown.status_code == 422 and "no job kind" in unknown.json()["detail"]
    bad = app.client.post(f"{API}/jobs", json={"tenant": TENANT, "kind": "relay.retry_dead", "args": {"all": True}})
    assert bad.status_code == 422 and "all: Extra inputs are not permitted" in bad.json()["detail"]


def test_a_job_that_failed_for_good_shows_why(app: Web) -> None:
    job = json_of(app.client.post(f"{API}/jobs", json={"tenant": TENANT, "kind": "ledger.checkpoint"}))
    failed = finished(app, job["id"])
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert "RELANCE_CHECKPOINT_KEY_FILE" in failed["error"]
    page = app.client.get(f"/t/{TENANT}/jobs")
    assert page.status_code == 200 and "RELANCE_CHECKPOINT_KEY_FILE" in page.text
    # asked for again: the same failed job, until a rerun is asked for
    again = json_of(app.client.post(f"{API}/jobs", json={"tenant": TENANT, "kind": "ledger.checkpoint"}))
    assert (again["id"], again["status"]) == (job["id"], "failed")
    rerun = app.client.post(f"{API}/jobs", json={"tenant": TENANT, "kind": "ledger.checkpoint", "rerun": True})
    assert rerun.status_code == 202 and rerun.json()["id"] == job["id"]
    assert finished(app, job["id"])["attempts"] == 1  # counted afresh: it failed again, once


def test_the_jobs_page_shows_progress_and_polls_while_a_job_runs(app: Web, tmp_path: Path) -> None:
    hold = tmp_path / "go-on"
    port = app.client.app.state.ports.jobs  # type: ignore[attr-defined]
    job, _ = port.enqueue(TENANT, "test.effect", {"path": str(tmp_path / "e"), "hold": str(hold)}, "cat")
    deadline = time.monotonic() + 30
    while port.get(job.id).progress_note != "holding" and time.monotonic() < deadline:
        time.sleep(0.05)
    page = app.client.get(f"/t/{TENANT}/jobs")
    assert 'hx-trigger="every 3s"' in page.text and f'data-job="{job.id}" data-status="running"' in page.text
    assert 'max="3" value="1"' in page.text and "holding" in page.text
    fragment = app.client.get(f"/t/{TENANT}/jobs", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<section class="card" id="jobs"') and "<html" not in fragment.text
    hold.touch()
    finished(app, job.id)
    page = app.client.get(f"/t/{TENANT}/jobs")
    assert "hx-trigger" not in page.text and 'data-status="done"' in page.text


def test_the_page_offers_only_the_kinds_the_user_may_start_and_starts_them(app: Web) -> None:
    app.sign_in(principal("dan", acme_fr="auditor"))
    page = app.client.get(f"/t/{TENANT}/jobs").text
    assert '<option value="escalation.replay">' in page and 'value="ledger.checkpoint"' not in page
    started = app.client.post(f"/t/{TENANT}/jobs", data={"kind": "escalation.replay"})
    assert started.status_code == 303 and started.headers["location"] == f"/t/{TENANT}/jobs"
    assert app.client.post(f"/t/{TENANT}/jobs", data={"kind": "ledger.checkpoint"}).status_code == 403
    app.sign_in(principal("ann", acme_fr="collector"))
    assert 'data-testid="start-job"' not in app.client.get(f"/t/{TENANT}/jobs").text
