"""Every kind of background job: its name, its arguments, the function that does it, its limits.

A kind is named ``"<service>.<action>"`` (the Dramatiq actor's name too) and points at its function by dotted path
(``"module:function"``), imported only when a job of that kind runs, so the jobs package imports no service and
enqueueing a job loads nothing of the service that does it. The function's contract is
:mod:`shared.contracts.jobs`. Adding a kind is one :class:`Kind` in :data:`KINDS` (and, for the workspace, the roles
that may start it in ``services/workspace/roles.py``).
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.jobs.errors import InvalidJob, UnknownKind
from shared.contracts.jobs import JobFunction


class NoArgs(BaseModel):
    """A job that takes no argument (its tenant is the job's own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    settle_seconds: float = Field(
        default=10.0, ge=0, le=300, description="PostgreSQL: wait for transactions in flight, as `--wait` does"
    )


class RetryDeadArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    command_ids: list[str] | None = Field(
        default=None,
        max_length=10_000,
        description="the dead-lettered commands to make pending again; none: every one of the tenant",
    )


class AuditExportArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    customer: str | None = Field(default=None, max_length=128, description="one customer; none: the whole tenant")
    date_from: dt.date | None = Field(default=None, description="the period's first day (its evidence is bundled)")
    date_to: dt.date | None = Field(default=None, description="the period's last day, included")


class CommitteeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: dt.date | None = Field(default=None, description="the day of the pack; none: today (UTC)")
    months: int = Field(default=6, ge=1, le=36, description="month ends in the trends")
    period_months: int = Field(default=3, ge=1, le=24, description="the DSO's period at each month end, in months")


class LettersBatchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    date: dt.date = Field(description="the day the letters were rendered (UTC)")
    again: bool = Field(default=False, description="batch again the letters of the day already printed")


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of job."""

    name: str  # "<service>.<action>": the actor's name
    target: str  # "package.module:function", see shared/contracts/jobs.py
    summary: str
    args: type[BaseModel] = NoArgs
    time_limit_seconds: int = 3600  # Dramatiq's TimeLimit: a run longer than this is stopped and the job failed

    def function(self) -> JobFunction:
        module, _, name = self.target.partition(":")
        return cast(JobFunction, getattr(importlib.import_module(module), name))

    def check(self, args: Mapping[str, Any] | None) -> dict[str, Any]:
        """The arguments as the function receives them (defaults filled in), or :class:`InvalidJob` saying why."""
        try:
            model = self.args.model_validate(dict(args or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise InvalidJob(f"arguments of {self.name} refused: {problems}") from None
        return model.model_dump(mode="json")


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "ledger.checkpoint",
            "services.jobs.kinds:checkpoint",
            "sign and store a checkpoint of the whole log (RELANCE_CHECKPOINT_KEY_FILE), export it",
            CheckpointArgs,
            time_limit_seconds=1800,
        ),
        Kind(
            "relay.retry_dead",
            "services.jobs.kinds:retry_dead",
            "make the tenant's dead-lettered commands pending again (each refused if a later one went out)",
            RetryDeadArgs,
            time_limit_seconds=600,
        ),
        Kind(
            "escalation.replay",
            "services.escalation.jobs:replay_summary",
            "decide the tenant's log again at every recorded tick and compare with the recorded decisions",
            time_limit_seconds=4 * 3600,
        ),
        Kind(
            "audit.export",
            "services.audit.jobs:export",
            "an evidence bundle of the tenant or a customer (events, e-mails, letters, checkpoints, manifest)",
            AuditExportArgs,
            time_limit_seconds=4 * 3600,
        ),
        Kind(
            "reports.committee",
            "services.reports.jobs:committee",
            "the credit committee's pack (aged balance and DSO trends, accounts to discuss) as HTML, CSV and JSON",
            CommitteeArgs,
            time_limit_seconds=3600,
        ),
        Kind(
            "notifier.letters_batch",
            "services.notifier.jobs:letters_batch",
            "the day's print batch of the tenant's letters (one PDF with its index); marks them handed to print",
            LettersBatchArgs,
            time_limit_seconds=3600,
        ),
    )
}


def kind(name: str) -> Kind:
    found = KINDS.get(name)
    if found is None:
        raise UnknownKind(f"no job kind {name!r}: the kinds are {', '.join(sorted(KINDS))}")
    return found
