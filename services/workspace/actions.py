"""People's actions on a customer's account (temporary stand-in with the names of the action layer; replaced by
the real module). Only ``add_note`` is recorded here; every other action is refused as not available."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.ledger.store import Incoming, Ledger

Id = str


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: Id = Field(min_length=1, max_length=128)


class CompleteTask(ActionRequest):
    task_id: str
    outcome: str = Field(max_length=200)
    note: str | None = None


class SnoozeTask(ActionRequest):
    task_id: str
    until: date
    note: str | None = None


class AssignTask(ActionRequest):
    task_id: str
    assignee: str


class Promise(BaseModel):
    promised_date: date
    amount: Decimal
    currency: str
    invoice_ids: list[str] = []


class Dispute(BaseModel):
    invoice_id: str
    reason: str


class LogCall(ActionRequest):
    outcome: Literal["reached", "no_answer", "wrong_contact", "promised", "disputed", "in_difficulty"]
    note: str = Field(min_length=1, max_length=4000)
    contact: str | None = None
    next_action_on: date | None = None
    task_id: str | None = None
    promise: Promise | None = None
    dispute: Dispute | None = None


class AddNote(ActionRequest):
    text: str = Field(min_length=1, max_length=4000)


class RecordPromise(ActionRequest):
    promised_date: date
    amount: Decimal
    currency: str
    invoice_ids: list[str] = []
    note: str | None = None


class OpenDispute(ActionRequest):
    invoice_id: str
    reason: str


class ResolveDispute(ActionRequest):
    invoice_id: str
    resolution: str | None = None


class Instalment(BaseModel):
    due_date: date
    amount: Decimal


class AgreePlan(ActionRequest):
    currency: str
    invoice_ids: list[str]
    instalments: list[Instalment]
    send_confirmation: bool = True


class WaiveClaim(ActionRequest):
    invoice_id: str
    kind: str
    reason: str
    amount: Decimal | None = None


class Pause(ActionRequest):
    reason: str
    until: date


class Resume(ActionRequest):
    reason: str | None = None


class ProposeCreditLimit(ActionRequest):
    currency: str
    amount: Decimal
    reason: str


class DecideCreditLimit(ActionRequest):
    proposal_id: str
    decision: Literal["approve", "reject"]
    note: str | None = None


ACTIONS: dict[str, type[ActionRequest]] = {
    "complete_task": CompleteTask,
    "snooze_task": SnoozeTask,
    "assign_task": AssignTask,
    "log_call": LogCall,
    "add_note": AddNote,
    "record_promise": RecordPromise,
    "open_dispute": OpenDispute,
    "resolve_dispute": ResolveDispute,
    "agree_plan": AgreePlan,
    "waive_claim": WaiveClaim,
    "pause": Pause,
    "resume": Resume,
    "propose_credit_limit": ProposeCreditLimit,
    "decide_credit_limit": DecideCreditLimit,
}


class ActionRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ActionResult:
    action: str
    status: Literal["applied", "duplicate"]
    event_ids: list[str]
    summary: str


def perform(
    ledger: Ledger,
    tenant: str,
    customer_id: str,
    action: str,
    payload: Mapping[str, Any],
    *,
    author: str,
    source: str,
    now: datetime,
) -> ActionResult:
    model = ACTIONS.get(action)
    if model is None:
        raise ActionRefused(404, f"no action {action!r}")
    try:
        request = model.model_validate(dict(payload))
    except ValidationError as exc:
        raise ActionRefused(422, str(exc)) from None
    if not ledger.state(tenant, customer_id).version:
        raise ActionRefused(404, f"no customer {customer_id!r}")
    if not isinstance(request, AddNote):
        raise ActionRefused(422, f"{action} is not available yet")
    key = "\x1f".join((tenant, customer_id, action, request.request_id))
    event_id = "act-" + hashlib.sha256(key.encode()).hexdigest()[:32]
    data = {"note_id": event_id, "text": request.text, "author": author}
    meta = {"source": source, "author": author, "request_id": request.request_id}
    [outcome] = ledger.record([Incoming(tenant, customer_id, event_id, "note.added", data, now, meta)])
    if outcome.status == "rejected":
        raise ActionRefused(409, "this request id was used for another action")
    status: Literal["applied", "duplicate"] = "duplicate" if outcome.status == "duplicate" else "applied"
    return ActionResult(action, status, [event_id], "note added")
