"""The jobs package's errors: one root, and subclasses that say whether asking again can help."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError

from shared.contracts.jobs import JobInterrupted, JobRefused
from shared.ledger.errors import LedgerUnavailable


class JobError(Exception):
    """A background job could not be enqueued or run."""


class UnknownKind(JobError):
    """No job of that kind exists; the message lists the kinds there are."""


class InvalidJob(JobError):
    """The job's tenant, arguments or id are not acceptable; the message says what to fix."""


class JobConflict(JobError):
    """The job id given already names another job (another kind, tenant or arguments)."""


class JobsUnavailable(JobError):
    """The broker did not take the job's message; the job stays queued (``--rerun`` sends it again)."""


def is_transient(exc: BaseException) -> bool:
    """Whether running the job again later may succeed: a server away, not a refusal or a bug."""
    if isinstance(exc, JobRefused):
        return False
    if isinstance(exc, (JobInterrupted, LedgerUnavailable, OperationalError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    try:
        import pika.exceptions
    except ImportError:  # pragma: no cover - pika ships with relance
        return False
    return isinstance(exc, pika.exceptions.AMQPConnectionError)


__all__ = [
    "InvalidJob",
    "JobConflict",
    "JobError",
    "JobInterrupted",
    "JobRefused",
    "JobsUnavailable",
    "UnknownKind",
    "is_transient",
]
