"""What a background job's function is given and may raise: the contract between ``services/jobs`` and a service.

A service offers a job as a function ``(args, context) -> result`` (``services/jobs/registry.py`` names it by its
dotted path, so the jobs package imports no service): ``args`` are the job's arguments, already checked against the
kind's model; ``context`` gives the settings, the ledger's engine, the job's id and tenant, and a way to report
progress; the result is a JSON object (paths, counts, verdict) kept in the job's row.

A job function must be safe to run again: a worker can die after the function's effect committed and before the job
was recorded done, and the next delivery then runs it again. Make the effect idempotent (keyed by the job id, or
a no-op when already done), or harmless twice (a second signed checkpoint, a report written again).

Errors: :class:`JobRefused` says the job cannot be done as asked (bad arguments, a missing key, a refusal of the
service): the job fails with that reason and is never retried. :class:`JobInterrupted` says "not now" (a server
away): the job is run again, with backoff. Database outages (SQLAlchemy's ``OperationalError``) count as the latter
without being wrapped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import Engine

from shared.config import Settings


class JobRefused(Exception):
    """The job cannot be done as asked; the message says why and what to change. Never retried."""


class JobInterrupted(Exception):
    """The job could not finish for a reason that may pass (a server away); it is run again with backoff."""


class JobContext(Protocol):
    """What a running job is given."""

    @property
    def job_id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> Engine: ...

    def progress(self, done: int, total: int | None = None, note: str = "") -> None:
        """Record how far the job is (shown by the workspace, the API and ``relance jobs show``)."""
        ...


JobFunction = Callable[[Mapping[str, Any], JobContext], dict[str, Any]]
