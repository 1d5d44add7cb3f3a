"""``relance jobs enqueue|list|show``: start a background job, follow it, read what came of it.

``enqueue`` writes the job's row and hands it to ``relance worker jobs`` through RabbitMQ; on the embedded default
(SQLite, see ``RELANCE_JOBS_BROKER``) this command runs the job itself and waits for it. The same request twice the
same day is one job (its id is printed); ``--rerun`` runs a failed job again.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from services.cli.options import Commands, json_default, runs
from shared.config import Settings
from shared.runtime import migrated_engine

if TYPE_CHECKING:
    from services.jobs.store import Job

POLL_SECONDS = 0.5


def add_jobs(commands: Commands) -> None:
    from services.jobs.registry import KINDS

    jobs = commands.add_parser("jobs", help="background jobs: checkpoints, replays, re-sends of dead letters…")
    actions = jobs.add_subparsers(title="jobs commands", metavar="ACTION")
    enqueue = actions.add_parser(
        "enqueue",
        help="start a job (once per id: the same request the same day is the same job) and print its id",
        description="Kinds: " + "; ".join(f"{k.name}: {k.summary}" for k in KINDS.values()),
    )
    enqueue.add_argument("kind", metavar="KIND", help=f"one of {', '.join(KINDS)}")
    enqueue.add_argument("--tenant", required=True)
    enqueue.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help='an argument of the job; VALUE is read as JSON when it is (2, true, ["a"]), else as text',
    )
    enqueue.add_argument("--id", dest="job_id", help="the job's id (default: one per kind, tenant, arguments and day)")
    enqueue.add_argument("--rerun", action="store_true", help="run a failed job again (or resend a queued one)")
    enqueue.add_argument("--wait", action="store_true", help="follow the job's progress until it is done or failed")
    enqueue.add_argument("--by", help="who asks (default: the system user)")
    runs(enqueue, jobs_enqueue, database_url=True)
    listing = actions.add_parser("list", help="the newest jobs, with their status and progress")
    listing.add_argument("--tenant", help="only this tenant's jobs")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    runs(listing, jobs_list, database_url=True)
    show = actions.add_parser("show", help="a job: its arguments, progress, result or the reason it failed")
    show.add_argument("job_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    runs(show, jobs_show, database_url=True)


def parse_args(pairs: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--arg {pair!r} is not NAME=VALUE")
        try:
            args[name.strip()] = json.loads(value)
        except ValueError:
            args[name.strip()] = value
    return args


def jobs_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from services.jobs.broker import open_jobs
    from services.jobs.errors import JobError, JobsUnavailable

    try:
        job_args = parse_args(args.arg)
    except ValueError as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return 2
    engine = migrated_engine(settings)
    runtime = open_jobs(settings, engine)
    try:
        if runtime.in_process:
            runtime.start_worker(settings.jobs_threads)
        try:
            enqueued = runtime.jobs.enqueue(
                args.tenant,
                args.kind,
                job_args,
                args.by or f"cli:{getpass.getuser()}",
                job_id=args.job_id,
                rerun=args.rerun,
            )
        except JobsUnavailable as exc:
            print(f"relance: {exc}", file=sys.stderr)
            return 69
        except JobError as exc:
            print(f"relance: {exc}", file=sys.stderr)
            return 2
        job = enqueued.job
        what = "queued" if enqueued.created else ("sent again" if enqueued.sent else f"exists already ({job.status})")
        print(f"{job.id}  {what}")
        if runtime.in_process and not job.finished:
            print("running it here (in-process jobs: RELANCE_JOBS_BROKER)", file=sys.stderr)
        elif not args.wait:
            return 0
        final = follow(runtime.jobs.get, job.id)
    finally:
        runtime.close()
        engine.dispose()
    print(describe(final))
    return 0 if final.status == "done" else 1


def follow(get: Any, job_id: str) -> Job:
    """Poll the job until it is finished, printing its progress on stderr whenever it changes."""
    shown = ""
    while True:
        job: Job | None = get(job_id)
        assert job is not None
        line = f"{job.status}  {progress_text(job)}"
        if line != shown:
            print(line, file=sys.stderr)
            shown = line
        if job.finished:
            return job
        time.sleep(POLL_SECONDS)


def progress_text(job: Job) -> str:
    count = f"{job.progress_done:,}" + (f"/{job.progress_total:,}" if job.progress_total is not None else "")
    return f"{count} {job.progress_note}".strip()


def describe(job: Job) -> str:
    lines = [
        f"job      {job.id}",
        f"kind     {job.kind} (tenant {job.tenant}, asked by {job.requested_by})",
        f"args     {json.dumps(job.args, ensure_ascii=False, sort_keys=True)}",
        f"status   {job.status}  attempts {job.attempts}",
        f"progress {progress_text(job)}",
        f"created  {job.created_at:%Y-%m-%d %H:%M:%S}Z"
        + (f"  started {job.started_at:%H:%M:%S}Z" if job.started_at else "")
        + (f"  finished {job.finished_at:%H:%M:%S}Z" if job.finished_at else ""),
    ]
    if job.error:
        lines.append(f"{'reason' if job.status == 'failed' else 'last error'}   {job.error}")
    if job.result is not None:
        lines.append("result   " + json.dumps(job.result, ensure_ascii=False, sort_keys=True, default=json_default))
    return "\n".join(lines)


def jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    from services.jobs import store

    engine = migrated_engine(settings)
    try:
        with engine.connect() as conn:
            found = store.recent(conn, None if args.tenant is None else [args.tenant], max(1, args.limit))
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([j.as_json() for j in found], indent=2, ensure_ascii=False))
        return 0
    if not found:
        print("no job yet: `relance jobs enqueue KIND --tenant T` starts one")
        return 0
    for job in found:
        print(
            f"{job.created_at:%Y-%m-%d %H:%M}  {job.status:<8} {job.kind:<20} {job.tenant:<16} {job.id}  "
            f"{progress_text(job)}" + (f"  ({job.error})" if job.status == "failed" and job.error else "")
        )
    return 0


def jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    from services.jobs import store

    engine = migrated_engine(settings)
    try:
        with engine.connect() as conn:
            job = store.get(conn, args.job_id)
    finally:
        engine.dispose()
    if job is None:
        print(f"relance: no job {args.job_id!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(job.as_json(), indent=2, ensure_ascii=False))
    else:
        print(describe(job))
    return 0


class JobsForWorkspace:
    """The workspace's :class:`~services.workspace.ports.JobsPort` on :mod:`services.jobs` (the composer's adapter)."""

    def __init__(self, settings: Settings, engine: Any) -> None:
        from services.jobs.broker import open_jobs

        self.runtime = open_jobs(settings, engine)
        if self.runtime.in_process:  # the embedded default: the workspace's process runs the jobs it starts
            self.runtime.start_worker(settings.jobs_threads)

    def kinds(self) -> list[tuple[str, str]]:
        from services.jobs.registry import KINDS

        return [(kind.name, kind.summary) for kind in KINDS.values()]

    def enqueue(
        self, tenant: str, kind: str, args: dict[str, Any], requested_by: str, rerun: bool = False
    ) -> tuple[Job, bool]:
        from services.jobs.errors import JobConflict, JobError, JobsUnavailable
        from services.workspace.ports import JobRequestRefused

        try:
            enqueued = self.runtime.jobs.enqueue(tenant, kind, args, requested_by, rerun=rerun)
        except JobsUnavailable as exc:
            raise JobRequestRefused(503, str(exc)) from None
        except JobConflict as exc:
            raise JobRequestRefused(409, str(exc)) from None
        except JobError as exc:
            raise JobRequestRefused(422, str(exc)) from None
        return enqueued.job, enqueued.created

    def get(self, job_id: str) -> Job | None:
        return self.runtime.jobs.get(job_id)

    def recent(self, tenants: Any, limit: int) -> list[Job]:
        return self.runtime.jobs.recent(list(tenants), limit)
