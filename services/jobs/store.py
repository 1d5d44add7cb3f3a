"""Every statement on the ``jobs`` table: a job's row from enqueueing to its outcome.

- :func:`insert` adds a job once: a second insert of the same id finds the first row (``None`` is returned).
- :func:`claim` is one conditional UPDATE: ``queued`` → ``running``, or a ``running`` job whose heartbeat is older
  than the lease (its worker died) → ``running`` by us; it counts the attempt. Two deliveries of one message can
  never both claim it within a lease.
- :func:`heartbeat`, :func:`report`, :func:`finish` and :func:`release` name the attempt they belong to: a worker
  whose job was taken over changes nothing any more (``False``), and the outcome is recorded by one statement.

Times are UTC-aware; every reader of a list is scoped to the tenants it is given.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, or_, select, update
from sqlalchemy.exc import IntegrityError

from shared.ledger.hashing import utc
from shared.ledger.schema import jobs

STATUSES = ("queued", "running", "done", "failed")
NOTE_CHARS = 500


@dataclass(frozen=True, slots=True)
class Job:
    """A job's row, as the CLI, the workspace and the API show it."""

    id: str
    tenant: str
    kind: str
    args: dict[str, Any]
    status: str
    progress_done: int
    progress_total: int | None
    progress_note: str
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def stale(self, now: datetime, lease: timedelta) -> bool:
        """A running job whose worker has not touched it for a lease (it died, or lost the database)."""
        beat = self.heartbeat_at or self.started_at
        return self.status == "running" and (beat is None or beat < now - lease)

    def as_json(self) -> dict[str, Any]:
        def moment(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat().replace("+00:00", "Z")

        return {
            "id": self.id,
            "tenant": self.tenant,
            "kind": self.kind,
            "args": self.args,
            "status": self.status,
            "progress": {"done": self.progress_done, "total": self.progress_total, "note": self.progress_note},
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "requested_by": self.requested_by,
            "created_at": moment(self.created_at),
            "started_at": moment(self.started_at),
            "finished_at": moment(self.finished_at),
            "heartbeat_at": moment(self.heartbeat_at),
        }


def _job(row: RowMapping) -> Job:
    def moment(name: str) -> datetime | None:
        return None if row[name] is None else utc(row[name])

    return Job(
        id=row["id"],
        tenant=row["tenant"],
        kind=row["kind"],
        args=dict(row["args"] or {}),
        status=row["status"],
        progress_done=int(row["progress_done"] or 0),
        progress_total=None if row["progress_total"] is None else int(row["progress_total"]),
        progress_note=row["progress_note"] or "",
        result=None if row["result"] is None else dict(row["result"]),
        error=row["error"],
        attempts=int(row["attempts"]),
        requested_by=row["requested_by"],
        created_at=utc(row["created_at"]),
        started_at=moment("started_at"),
        finished_at=moment("finished_at"),
        heartbeat_at=moment("heartbeat_at"),
    )


def get(conn: Connection, job_id: str) -> Job | None:
    row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
    return None if row is None else _job(row)


def recent(conn: Connection, tenants: Collection[str] | None, limit: int = 50) -> list[Job]:
    """The newest jobs first, of ``tenants`` only (``None``: every tenant, for the operator's CLI)."""
    query = select(jobs)
    if tenants is not None:
        query = query.where(jobs.c.tenant.in_(sorted(tenants)))
    query = query.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
    return [_job(row) for row in conn.execute(query).mappings()]


def insert(
    engine: Engine, job_id: str, tenant: str, kind: str, args: dict[str, Any], requested_by: str, now: datetime
) -> bool:
    """Add a queued job, in a transaction of its own; False (and nothing changed) if the id exists."""
    try:
        with engine.begin() as conn:
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    tenant=tenant,
                    kind=kind,
                    args=args,
                    status="queued",
                    progress_done=0,
                    progress_note="",
                    attempts=0,
                    requested_by=requested_by,
                    created_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


def requeue_failed(conn: Connection, job_id: str, requested_by: str) -> bool:
    """A failed job queued again to be re-run on request: its outcome cleared, its attempts counted afresh (the note
    says how many the failed run took)."""
    failed = conn.execute(select(jobs.c.attempts).where(jobs.c.id == job_id, jobs.c.status == "failed")).scalar()
    if failed is None:
        return False
    done = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == "failed", jobs.c.attempts == failed)
        .values(
            status="queued",
            attempts=0,
            error=None,
            result=None,
            finished_at=None,
            heartbeat_at=None,
            progress_done=0,
            progress_total=None,
            progress_note=f"run again on request of {requested_by}, after {failed} failed attempt(s)"[:NOTE_CHARS],
        )
    )
    return done.rowcount == 1


def claim(conn: Connection, job_id: str, now: datetime, lease: timedelta) -> int | None:
    """Take the job to run it: the number of this attempt, or None if it is not ours to run (done, failed, or
    running under a worker whose heartbeat is younger than the lease)."""
    done = conn.execute(
        update(jobs)
        .where(
            jobs.c.id == job_id,
            or_(
                jobs.c.status == "queued",
                (jobs.c.status == "running") & (jobs.c.heartbeat_at < now - lease),
            ),
        )
        .values(status="running", attempts=jobs.c.attempts + 1, started_at=now, heartbeat_at=now)
    )
    if done.rowcount != 1:
        return None
    return int(conn.execute(select(jobs.c.attempts).where(jobs.c.id == job_id)).scalar_one())


def _ours(job_id: str, attempt: int) -> Any:
    return (jobs.c.id == job_id) & (jobs.c.status == "running") & (jobs.c.attempts == attempt)


def heartbeat(conn: Connection, job_id: str, attempt: int, now: datetime) -> bool:
    """Touch a running job's heartbeat; False if the job is no longer this attempt's."""
    return conn.execute(update(jobs).where(_ours(job_id, attempt)).values(heartbeat_at=now)).rowcount == 1


def report(conn: Connection, job_id: str, attempt: int, done: int, total: int | None, note: str, now: datetime) -> bool:
    values: dict[str, Any] = {"progress_done": done, "progress_note": note[:NOTE_CHARS], "heartbeat_at": now}
    if total is not None:
        values["progress_total"] = total
    return conn.execute(update(jobs).where(_ours(job_id, attempt)).values(**values)).rowcount == 1


def finish(
    conn: Connection,
    job_id: str,
    attempt: int,
    now: datetime,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome in one statement: ``done`` with its result, or ``failed`` with the reason (``error``)."""
    values: dict[str, Any] = {"finished_at": now, "heartbeat_at": now}
    if error is None:
        values.update(status="done", result=result or {}, error=None)
    else:
        values.update(status="failed", error=error)
    return conn.execute(update(jobs).where(_ours(job_id, attempt)).values(**values)).rowcount == 1


def release(conn: Connection, job_id: str, attempt: int, reason: str, now: datetime) -> bool:
    """A run that failed for a transient reason goes back to ``queued``, for its retry to claim; the reason kept."""
    note = ("retrying: " + reason)[:NOTE_CHARS]
    values = {"status": "queued", "error": reason, "heartbeat_at": None, "progress_note": note}
    return conn.execute(update(jobs).where(_ours(job_id, attempt)).values(**values)).rowcount == 1
