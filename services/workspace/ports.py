"""What the workspace is given to work with: the settings, the ledger, and the functions of other services.

A service never imports another one: :mod:`services.cli.workspace` (the composer) builds :class:`Ports` from the
escalation's agenda, the notifier's evidence store and the ingest service, and hands it to
:func:`services.workspace.app.create_app`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from sqlalchemy import Engine

from shared.config import Settings
from shared.ledger.state import CustomerState
from shared.ledger.store import Ledger


class AgendaLine(Protocol):
    """What the workspace reads of an agenda item (``services.escalation.agenda.AgendaItem``)."""

    @property
    def kind(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def customer_name(self) -> str: ...
    @property
    def due_on(self) -> date: ...
    @property
    def currency(self) -> str: ...
    @property
    def at_risk(self) -> Any: ...
    @property
    def invoices(self) -> tuple[str, ...]: ...
    @property
    def note(self) -> str: ...
    @property
    def numbers(self) -> tuple[str, ...]: ...
    @property
    def task_ids(self) -> tuple[str, ...]: ...
    @property
    def assignee(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Evidence:
    """A sent e-mail as kept, and the check of its bytes against the SHA-256 the customer's stream recorded."""

    tenant: str
    customer_id: str
    command_id: str
    message_id: str
    mime: bytes
    kept_at: datetime
    recorded_sha256: str  # "" when the stream recorded no hash for it (yet)
    recomputed_sha256: str
    outcome: str  # the command's last fact: reminder.sent, reminder.failed, ... ("" if none)

    @property
    def verified(self) -> bool:
        return bool(self.recorded_sha256) and self.recorded_sha256 == self.recomputed_sha256


class JobLine(Protocol):
    """What the workspace reads of a background job (``services.jobs.store.Job``)."""

    @property
    def id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def progress_done(self) -> int: ...
    @property
    def progress_total(self) -> int | None: ...
    @property
    def progress_note(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def finished(self) -> bool: ...

    def as_json(self) -> dict[str, Any]: ...


class JobRequestRefused(Exception):
    """A job the jobs service would not enqueue: ``status`` is the HTTP answer (409, 422, 503), the message why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class JobsPort(Protocol):
    """The background jobs, as :mod:`services.cli.workspace` hands them over from ``services.jobs``."""

    def kinds(self) -> Sequence[tuple[str, str]]:
        """(kind, summary) of every kind of job."""
        ...

    def enqueue(
        self, tenant: str, kind: str, args: dict[str, Any], requested_by: str, rerun: bool = False
    ) -> tuple[JobLine, bool]:
        """The job and whether it is new (``rerun``: a failed one run again); raises :class:`JobRequestRefused`."""
        ...

    def get(self, job_id: str) -> JobLine | None: ...

    def recent(self, tenants: Sequence[str], limit: int) -> Sequence[JobLine]: ...


AgendaPort = Callable[[Sequence[CustomerState], date], Sequence[AgendaLine]]
EvidencePort = Callable[[Ledger, str, str], Evidence | None]  # (ledger, tenant, command_id)
IngestPort = Callable[[Ledger, Sequence[bytes], datetime], Any]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _no_evidence(ledger: Ledger, tenant: str, command_id: str) -> Evidence | None:
    return None


@dataclass(frozen=True)
class Ports:
    settings: Settings
    engine: Engine
    ledger: Callable[[], Ledger]  # one Ledger per thread
    agenda: AgendaPort
    ingest: IngestPort | None = None
    now: Callable[[], datetime] = _utc_now
    evidence: EvidencePort = _no_evidence
    jobs: JobsPort | None = None  # None: background jobs are not offered (the API answers 503)
