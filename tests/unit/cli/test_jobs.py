"""``relance jobs enqueue|list|show`` on the embedded default, where the command runs the job itself: the id printed,
the same request twice one job, a refused job's reason shown, and ``relance worker jobs`` refusing SQLite."""

from __future__ import annotations

import json

import pytest

from services.cli.app import main
from services.cli.jobs import parse_args


def test_a_job_is_run_in_process_once_and_shown_with_its_result(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["jobs", "enqueue", "relay.retry_dead", "--tenant", "acme-fr", "--database-url", sqlite_url]) == 0
    out = capsys.readouterr().out
    job_id = out.split()[0]
    assert job_id.startswith("relay.retry_dead.") and "queued" in out and "status   done  attempts 1" in out
    assert '"rearmed": []' in out
    # the same request again: the same job, not run again
    assert main(["jobs", "enqueue", "relay.retry_dead", "--tenant", "acme-fr", "--database-url", sqlite_url]) == 0
    assert f"{job_id}  exists already (done)" in capsys.readouterr().out
    assert main(["jobs", "list", "--tenant", "acme-fr", "--database-url", sqlite_url]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert "done" in line and job_id in line
    assert main(["jobs", "show", job_id, "--json", "--database-url", sqlite_url]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["attempts"], shown["result"]) == ("done", 1, {"rearmed": [], "refused": []})


def test_a_job_that_fails_for_good_says_why_and_exits_1(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["jobs", "enqueue", "ledger.checkpoint", "--tenant", "acme-fr", "--database-url", sqlite_url])
    out = capsys.readouterr().out
    assert code == 1 and "status   failed  attempts 1" in out
    job_id = out.split()[0]
    assert main(["jobs", "show", job_id, "--database-url", sqlite_url]) == 0
    assert "reason   no checkpoint signing key where the jobs run: set RELANCE_CHECKPOINT_KEY_FILE" in (
        capsys.readouterr().out
    )


def test_bad_requests_are_refused_with_what_to_fix(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "enqueue", "ledger.shred", "--tenant", "acme-fr", "--database-url", sqlite_url]) == 2
    assert "no job kind 'ledger.shred': the kinds are" in capsys.readouterr().err
    args = ["jobs", "enqueue", "relay.retry_dead", "--tenant", "acme-fr", "--arg", "command_ids=7"]
    assert main([*args, "--database-url", sqlite_url]) == 2
    assert "arguments of relay.retry_dead refused: command_ids: Input should be a valid list" in capsys.readouterr().err
    assert main(["jobs", "show", "nope", "--database-url", sqlite_url]) == 1
    assert "no job 'nope'" in capsys.readouterr().err


def test_arguments_are_json_when_they_parse_and_text_otherwise() -> None:
    assert parse_args(['command_ids=["a","b"]', "settle_seconds=0", "note=hello world"]) == {
        "command_ids": ["a", "b"],
        "settle_seconds": 0,
        "note": "hello world",
    }
    with pytest.raises(ValueError, match="is not NAME=VALUE"):
        parse_args(["oops"])


def test_the_jobs_worker_refuses_a_database_where_jobs_run_in_process(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", "jobs", "--database-url", sqlite_url]) == 78
    assert "set RELANCE_JOBS_BROKER=rabbitmq to use a jobs worker" in capsys.readouterr().err
