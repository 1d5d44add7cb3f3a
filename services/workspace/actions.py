"""What people do to a customer's account, as events with an author: the workspace's application layer.

:func:`perform` takes an action's name and its payload (the JSON body of the API, a form's fields, the CLI's
options), validates it like ERP input (:data:`ACTIONS`: one pydantic model per action, ``extra="forbid"``, every
text one plain line but a call's or a note's, bounded, money a decimal string with the currency's minor units),
checks it against the customer's state as committed and the tenant's day (a promise not in the past, a snooze after
today), and records its events in **one** :meth:`~shared.ledger.store.Ledger.record` call, at the version of the
stream it read (a payment or a decision racing with it is checked again, :data:`ATTEMPTS` times, as ``relance claims
waive`` always did). Authorisation is the caller's (:func:`services.workspace.roles.allowed`).

Every event says who and where: ``author`` in its data (relance's own events) and the metadata
``{"source", "author", "request_id", "request"}`` (``request``: the fingerprint of the request, to tell a retry from a
reused id). A promise, a dispute, its resolution and a payment plan are the ERP's own event types
(:mod:`shared.contracts.erp`) with that metadata, so the engine treats them exactly as the ERP's, and the outbox
tells the ERP about them (:data:`shared.contracts.events.ACTION_COMMANDS`).

Idempotent by the client's request id: an action's event ids are ``act-`` + sha256(tenant, customer, action,
request id)[:32], then ``-1``, ``-2``… for its second, third event. The same request sent again answers the first
result with the status ``duplicate``; the same request id with another payload (or another author) is refused
(409). Refusals (:class:`ActionRefused`) say why in words: 404 for what does not exist (the customer, a task, an
invoice, a proposal), 409 for a conflict, 422 for what cannot be (a task already done, a paid invoice disputed, a plan
whose instalments do not add up to what its invoices owe).
"""

from __future__ import annotations

import hashlib
import random
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.contracts import erp, events
from shared.contracts.erp import Amount, Currency, Id, IsoDate, minor_units
from shared.contracts.events import CallOutcome, ClaimKind, RelanceEvent
from shared.ledger.claims import KINDS
from shared.ledger.dunning import DONE
from shared.ledger.receivables import Invoice
from shared.ledger.state import CustomerState
from shared.ledger.store import Incoming, Ledger

ATTEMPTS = 20  # the stream moved under the action this many times: give up and say so
AUTHOR_MAX = 120
REASON_MAX = 500  # characters: a sentence or two an auditor reads in `ledger show` (the CLI's waiver limit)
NOTE_MAX = 2000  # a single-line note beside an action
LONG_MAX = 4000  # a call's note, a note on the account (several lines)
OUTCOME_MAX = 200

__all__ = [
    "ACTIONS",
    "ActionRefused",
    "ActionRequest",
    "ActionResult",
    "Waiver",
    "action_event_ids",
    "perform",
    "waiver",
]


class ActionRefused(Exception):
    """The action cannot be recorded: ``status`` 404 (not found), 409 (conflict) or 422 (invalid), ``reason`` why;
    ``fields``: for a request the model refused, each field's problem (``promise.amount`` -> what is wrong), for a
    form to show beside its input."""

    def __init__(self, status: int, reason: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.fields: dict[str, str] = dict(fields or {})

    @property
    def kind(self) -> str:
        """``not_found``, ``conflict`` or ``invalid``."""
        return {404: "not_found", 409: "conflict"}.get(self.status, "invalid")


def _not_found(reason: str) -> ActionRefused:
    return ActionRefused(404, reason)


def _invalid(reason: str) -> ActionRefused:
    return ActionRefused(422, reason)


@dataclass(frozen=True)
class ActionResult:
    action: str
    status: Literal["applied", "duplicate"]
    event_ids: list[str]
    summary: str  # one line a person reads ("promise of 1,200.00 EUR by 2026-12-15 recorded")


# ------------------------------------------------------------------------------------------------------ text
def _refused_character(text: str, *, lines: bool) -> str | None:
    for position, char in enumerate(text):
        if lines and char == "\n":
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return f"U+{ord(char):04X} at position {position}"
    return None


def _plain(text: str) -> str:
    """One plain line: no control character, no line break, no invisible formatting (bidi overrides, zero-width)."""
    found = _refused_character(text, lines=False)
    if found:
        raise ValueError(f"must be one plain line: no control character, line break or invisible formatting ({found})")
    text = text.strip()
    if not text:
        raise ValueError("must not be blank")
    return text


def _lines(text: str) -> str:
    """Plain lines: line breaks kept (as ``\\n``), nothing else invisible."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    found = _refused_character(text, lines=True)
    if found:
        raise ValueError(f"must be plain text: no control character or invisible formatting ({found})")
    text = text.strip()
    if not text:
        raise ValueError("must not be blank")
    return text


Login = Annotated[str, Field(min_length=1, max_length=AUTHOR_MAX), AfterValidator(_plain)]
Outcome = Annotated[str, Field(min_length=1, max_length=OUTCOME_MAX), AfterValidator(_plain)]
Reason = Annotated[str, Field(min_length=1, max_length=REASON_MAX), AfterValidator(_plain)]
Note = Annotated[str, Field(min_length=1, max_length=NOTE_MAX), AfterValidator(_plain)]
LongNote = Annotated[str, Field(min_length=1, max_length=LONG_MAX), AfterValidator(_lines)]
Contact = Annotated[str, Field(min_length=1, max_length=OUTCOME_MAX), AfterValidator(_plain)]
InvoiceIds = Annotated[list[Id], Field(max_length=1000)]


def _precision(amount: Decimal, currency: str, what: str) -> None:
    places = minor_units(currency)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise ValueError(f"{what} {amount} has more decimals than {currency} has ({places})")


def _unique(ids: Sequence[str]) -> None:
    if len(set(ids)) != len(ids):
        raise ValueError("an invoice appears twice in invoice_ids")


# ------------------------------------------------------------------------------------------------------ requests
class ActionRequest(BaseModel):
    """What every action's request carries: the client's id of the request (a retry sends the same)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Id


class CompleteTask(ActionRequest):
    task_id: Id
    outcome: Outcome
    note: Note | None = None


class SnoozeTask(ActionRequest):
    task_id: Id
    until: IsoDate = Field(description="A day after today (the tenant's): the task comes back then.")
    note: Note | None = None


class AssignTask(ActionRequest):
    task_id: Id
    assignee: Login


class PromiseTerms(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    promised_date: IsoDate
    amount: Amount
    currency: Currency
    invoice_ids: InvoiceIds = []

    @model_validator(mode="after")
    def _rules(self) -> PromiseTerms:
        _precision(self.amount, self.currency, "amount")
        _unique(self.invoice_ids)
        return self


class DisputeTerms(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    invoice_id: Id
    reason: Reason


class LogCall(ActionRequest):
    outcome: CallOutcome
    note: LongNote
    contact: Contact | None = None
    next_action_on: IsoDate | None = None
    task_id: Id | None = Field(default=None, description="The task the call answers: it is completed too.")
    promise: PromiseTerms | None = Field(default=None, description="Only with the outcome promised.")
    dispute: DisputeTerms | None = Field(default=None, description="Only with the outcome disputed.")

    @model_validator(mode="after")
    def _rules(self) -> LogCall:
        if self.promise is not None and self.outcome != "promised":
            raise ValueError("a promise goes with the outcome promised")
        if self.dispute is not None and self.outcome != "disputed":
            raise ValueError("a dispute goes with the outcome disputed")
        return self


class AddNote(ActionRequest):
    text: LongNote


class RecordPromise(ActionRequest):
    promised_date: IsoDate
    amount: Amount
    currency: Currency
    invoice_ids: InvoiceIds = []
    note: Note | None = None

    @model_validator(mode="after")
    def _rules(self) -> RecordPromise:
        _precision(self.amount, self.currency, "amount")
        _unique(self.invoice_ids)
        return self


class OpenDispute(ActionRequest):
    invoice_id: Id
    reason: Reason


class ResolveDispute(ActionRequest):
    invoice_id: Id
    resolution: Reason | None = None


class Instalment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    due_date: IsoDate
    amount: Amount


class AgreePlan(ActionRequest):
    currency: Currency
    invoice_ids: Annotated[list[Id], Field(min_length=1, max_length=1000)]
    instalments: Annotated[list[Instalment], Field(min_length=1, max_length=120)]
    send_confirmation: bool = True

    @model_validator(mode="after")
    def _rules(self) -> AgreePlan:
        _unique(self.invoice_ids)
        for instalment in self.instalments:
            _precision(instalment.amount, self.currency, "instalment amount")
        dates = [i.due_date for i in self.instalments]
        if dates != sorted(dates) or len(set(dates)) != len(dates):
            raise ValueError("instalment due dates must be strictly increasing")
        return self


class WaiveClaim(ActionRequest):
    invoice_id: Id
    kind: ClaimKind
    reason: Reason
    amount: Amount | None = Field(default=None, description="Part of what is owed (default: all of it).")


class Pause(ActionRequest):
    reason: Reason
    until: IsoDate = Field(description="The last day of the pause, after today (the tenant's).")


class Resume(ActionRequest):
    reason: Reason | None = None


class ProposeCreditLimit(ActionRequest):
    currency: Currency
    amount: Amount
    reason: Reason

    @model_validator(mode="after")
    def _rules(self) -> ProposeCreditLimit:
        _precision(self.amount, self.currency, "amount")
        return self


class DecideCreditLimit(ActionRequest):
    proposal_id: Id
    decision: Literal["approve", "reject"]
    note: Note | None = None


class LetterPosted(ActionRequest):
    letter_id: Id
    posted_on: IsoDate = Field(description="The day it was posted: today or before, not before it was rendered.")
    tracking_number: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_plain)] | None = Field(
        default=None, description="The carrier's number of a registered letter (the posting receipt's)."
    )
    carrier: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_plain)] | None = None


class LetterDelivered(ActionRequest):
    letter_id: Id
    delivered_on: IsoDate = Field(description="The day of the acknowledgement of receipt: not before its posting.")
    note: Note | None = None


class LetterReturned(ActionRequest):
    letter_id: Id
    returned_on: IsoDate = Field(description="The day it came back: not before its posting.")
    reason: Reason


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
    "letter_posted": LetterPosted,
    "letter_delivered": LetterDelivered,
    "letter_returned": LetterReturned,
}
"""Action name -> its request model (the JSON body of ``POST .../actions/{action}``)."""


# ------------------------------------------------------------------------------------------------------ perform
def action_event_ids(tenant: str, customer_id: str, action: str, request_id: str, count: int) -> list[str]:
    """The ids of an action's events: ``act-`` + sha256(tenant, customer, action, request id)[:32], ``-1``, ``-2``…"""
    key = "\x1f".join((tenant, customer_id, action, request_id))
    base = f"act-{hashlib.sha256(key.encode()).hexdigest()[:32]}"
    return [base if n == 0 else f"{base}-{n}" for n in range(count)]


@dataclass(frozen=True)
class _Planned:
    """One event an action records: its type, its data and its typed model (relance's or the ERP's)."""

    event_type: str
    model: BaseModel

    @property
    def data(self) -> dict[str, Any]:
        if isinstance(self.model, RelanceEvent):
            return self.model.data()
        return self.model.model_dump(mode="json", exclude_none=True)  # as ingest normalises the ERP's


@dataclass(frozen=True)
class _Context:
    state: CustomerState
    ids: list[str]  # the event ids this action may use, in order
    author: str
    today: date


_Handler = Callable[[Any, _Context], tuple[list[_Planned], str]]


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
    zone: tzinfo | None = None,
) -> ActionResult:
    """Validate and record one action on the customer's account; :class:`ActionRefused` saying why when it cannot.

    ``now`` is the instant of the action (timezone-aware); the tenant's day, against which dates are checked, is
    ``now`` in ``zone`` (the tenant's time zone, its policy's) or, without it, in ``now``'s own zone. The ledger's
    own errors (:class:`~shared.ledger.errors.LedgerUnavailable` during an outage...) pass through.
    """
    model = ACTIONS.get(action)
    if model is None:
        raise _not_found(f"no action {action!r}; relance knows " + ", ".join(ACTIONS))
    if source not in events.PEOPLE_SOURCES:
        raise ValueError(f"source must be one of {', '.join(events.PEOPLE_SOURCES)}, not {source!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        author = _plain(author)
    except ValueError as exc:
        raise _invalid(f"author {exc}") from None
    if len(author) > AUTHOR_MAX:
        raise _invalid(f"author is {len(author)} characters long; keep it to {AUTHOR_MAX}")
    request = _validated(model, payload)
    today = (now.astimezone(zone) if zone is not None else now).date()
    fingerprint = _fingerprint(action, request, author)
    ids = action_event_ids(tenant, customer_id, action, request.request_id, _MAX_EVENTS)
    metadata = {"source": source, "author": author, "request_id": request.request_id, "request": fingerprint}
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))  # others append to the stream: let them
        if ledger.known_event_ids(tenant, ids[:1]):
            return _duplicate(ledger, tenant, customer_id, action, request.request_id, ids, fingerprint)
        state = ledger.state(tenant, customer_id)
        if state.version == 0:
            raise _not_found(f"no events for customer {customer_id!r} of tenant {tenant!r}")
        planned, summary = _HANDLERS[action](request, _Context(state, ids, author, today))
        items = [
            Incoming(
                tenant=tenant,
                customer_id=customer_id,
                event_id=ids[n],
                event_type=event.event_type,
                data=event.data,
                occurred_at=now.astimezone(UTC),
                metadata=dict(metadata),
                expected_version=state.version + n,
                event=event.model,
            )
            for n, event in enumerate(planned)
        ]
        outcomes = ledger.record(items)
        statuses = {o.status for o in outcomes}
        if statuses == {"applied"}:
            return ActionResult(action, "applied", [item.event_id for item in items], summary)
        if "rejected" in statuses:
            reason = next(o.reason for o in outcomes if o.status == "rejected")
            raise _invalid(f"the ledger refused the {action.replace('_', ' ')}: {reason}")
        # conflict (the stream moved) or duplicate (the same request recorded meanwhile): look again
    raise ActionRefused(409, f"the account of {tenant}/{customer_id} kept changing; try again")


_MAX_EVENTS = 4  # the most events one action records (a call completing a task, with a promise and a dispute)


def _validated(model: type[ActionRequest], payload: Mapping[str, Any]) -> ActionRequest:
    try:
        return model.model_validate(dict(payload))
    except ValidationError as exc:
        fields: dict[str, str] = {}
        for error in exc.errors(include_url=False):
            where = ".".join(str(p) for p in error["loc"]) or "request"
            fields.setdefault(where, str(error["msg"]).removeprefix("Value error, "))
        raise ActionRefused(422, _described(exc), fields) from None
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise _invalid(f"{type(exc).__name__}: {exc}") from None


def _described(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "request"
        parts.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def _fingerprint(action: str, request: ActionRequest, author: str) -> str:
    content = {"action": action, "author": author, **request.model_dump(mode="json", exclude={"request_id"})}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _duplicate(
    ledger: Ledger,
    tenant: str,
    customer_id: str,
    action: str,
    request_id: str,
    ids: list[str],
    fingerprint: str,
) -> ActionResult:
    """The first result of a request sent again, or 409 when its id was used for another request."""
    wanted = set(ids)
    recorded = [e for e in ledger.read_stream(tenant, customer_id) if e.event_id in wanted]
    if not recorded:
        raise ActionRefused(
            409, f"request id {request_id!r} was already used on another customer's account: send a new request id"
        )
    if recorded[0].metadata.get("request") != fingerprint:
        raise ActionRefused(
            409,
            f"request id {request_id!r} was already used for another {action.replace('_', ' ')} (or by another "
            "person): send a new request with a new request id, and a retry unchanged",
        )
    parsed = [(e.event_type, events.parse(e.event_type, e.data)) for e in recorded]
    summary = _SUMMARIES[action](parsed, ledger.state(tenant, customer_id))
    return ActionResult(action, "duplicate", [e.event_id for e in recorded], summary)


# ------------------------------------------------------------------------------------------------------ checks
def _task(context: _Context, task_id: str, *, open_only: bool = True) -> dict[str, Any]:
    task = context.state.tasks.get(task_id)
    if task is None:
        raise _not_found(f"customer {context.state.customer_id} has no task {task_id!r}")
    if open_only and task.get("status") == DONE:
        raise _invalid(f"task {task_id} is already done ({task.get('outcome', '')}, by {task.get('done_by', '?')})")
    return dict(task)


def _invoice(context: _Context, invoice_id: str) -> Invoice:
    invoice = context.state.invoices.get(invoice_id)
    if invoice is None:
        raise _not_found(f"customer {context.state.customer_id} has no invoice {invoice_id!r}")
    return invoice


def _open_invoice(context: _Context, invoice_id: str, currency: str | None, what: str) -> Invoice:
    invoice = _invoice(context, invoice_id)
    if invoice.status != "open":
        raise _invalid(f"invoice {invoice.number} is {invoice.status}: {what}")
    if currency is not None and invoice.currency != currency:
        raise _invalid(f"invoice {invoice.number} is in {invoice.currency}, not {currency}")
    return invoice


def _not_past(day: date, today: date, what: str) -> None:
    if day < today:
        raise _invalid(f"{what} {day} is in the past (today is {today})")


def _after_today(day: date, today: date, what: str) -> None:
    if day <= today:
        raise _invalid(f"{what} {day} must be after today ({today})")


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.{minor_units(currency)}f} {currency}"


def _number(state: CustomerState | None, invoice_id: str) -> str:
    invoice = None if state is None else state.invoices.get(invoice_id)
    return invoice.number if invoice is not None else invoice_id


# ------------------------------------------------------------------------------------------------------ actions
def _complete(request: CompleteTask, context: _Context) -> tuple[list[_Planned], str]:
    _task(context, request.task_id)
    event = events.TaskCompleted(
        author=context.author, task_id=request.task_id, outcome=request.outcome, **_given(note=request.note)
    )
    planned = [_Planned(event.TYPE, event)]
    return planned, _SUMMARIES["complete_task"]([(event.TYPE, event)])


def _snooze(request: SnoozeTask, context: _Context) -> tuple[list[_Planned], str]:
    _task(context, request.task_id)
    _after_today(request.until, context.today, "a task is snoozed to a day after today:")
    event = events.TaskSnoozed(
        author=context.author, task_id=request.task_id, until=request.until, **_given(note=request.note)
    )
    return [_Planned(event.TYPE, event)], _SUMMARIES["snooze_task"]([(event.TYPE, event)])


def _assign(request: AssignTask, context: _Context) -> tuple[list[_Planned], str]:
    _task(context, request.task_id)
    event = events.TaskAssigned(author=context.author, task_id=request.task_id, assignee=request.assignee)
    return [_Planned(event.TYPE, event)], _SUMMARIES["assign_task"]([(event.TYPE, event)])


def _log_call(request: LogCall, context: _Context) -> tuple[list[_Planned], str]:
    if request.next_action_on is not None:
        _not_past(request.next_action_on, context.today, "the next action on")
    call = events.CallLogged(
        author=context.author,
        call_id=context.ids[0],
        outcome=request.outcome,
        note=request.note,
        **_given(contact=request.contact, next_action_on=request.next_action_on, task_id=request.task_id),
    )
    planned = [_Planned(call.TYPE, call)]
    if request.task_id is not None:
        _task(context, request.task_id)
        outcome = f"call: {request.outcome.replace('_', ' ')}"
        planned.append(
            _Planned(
                events.TaskCompleted.TYPE,
                events.TaskCompleted(author=context.author, task_id=request.task_id, outcome=outcome),
            )
        )
    if request.promise is not None:
        terms = request.promise
        planned.append(_promise(context, context.ids[len(planned)], terms, None))
    if request.dispute is not None:
        planned.append(_dispute(context, request.dispute.invoice_id, request.dispute.reason))
    return planned, _SUMMARIES["log_call"]([(p.event_type, p.model) for p in planned])


def _add_note(request: AddNote, context: _Context) -> tuple[list[_Planned], str]:
    event = events.NoteAdded(author=context.author, note_id=context.ids[0], text=request.text)
    return [_Planned(event.TYPE, event)], _SUMMARIES["add_note"]([(event.TYPE, event)])


def _promise(context: _Context, promise_id: str, terms: PromiseTerms | RecordPromise, note: str | None) -> _Planned:
    _not_past(terms.promised_date, context.today, "a promise is to pay by a day to come:")
    owed = Decimal(0)
    for invoice_id in terms.invoice_ids:
        owed += _open_invoice(context, invoice_id, terms.currency, "nothing to promise on it").outstanding
    if terms.invoice_ids and terms.amount > owed:
        raise _invalid(
            f"the promise of {_money(terms.amount, terms.currency)} is more than the "
            f"{_money(owed, terms.currency)} its invoices owe"
        )
    data = {
        "promise_id": promise_id,
        "promised_date": terms.promised_date.isoformat(),
        "amount": str(terms.amount),
        "currency": terms.currency,
        "invoice_ids": list(terms.invoice_ids),
        **_given(note=note),
    }
    return _Planned("promise_to_pay.recorded", _erp(erp.PromiseToPayRecorded, data))


def _record_promise(request: RecordPromise, context: _Context) -> tuple[list[_Planned], str]:
    planned = [_promise(context, context.ids[0], request, request.note)]
    return planned, _SUMMARIES["record_promise"]([(p.event_type, p.model) for p in planned])


def _dispute(context: _Context, invoice_id: str, reason: str) -> _Planned:
    invoice = _open_invoice(context, invoice_id, None, "only an open invoice is disputed")
    if invoice_id in context.state.disputes:
        raise _invalid(f"invoice {invoice.number} is already disputed ({context.state.disputes[invoice_id]})")
    data = {"invoice_id": invoice_id, "reason": reason, "opened_on": context.today.isoformat()}
    return _Planned("invoice.disputed", _erp(erp.InvoiceDisputed, data))


def _open_dispute(request: OpenDispute, context: _Context) -> tuple[list[_Planned], str]:
    planned = [_dispute(context, request.invoice_id, request.reason)]
    return planned, _summary_with(context.state, "open_dispute", planned)


def _resolve_dispute(request: ResolveDispute, context: _Context) -> tuple[list[_Planned], str]:
    invoice = _invoice(context, request.invoice_id)
    if request.invoice_id not in context.state.disputes:
        raise _invalid(f"invoice {invoice.number} has no open dispute")
    data = {"invoice_id": request.invoice_id, "resolved_on": context.today.isoformat()}
    data |= _given(resolution=request.resolution)
    planned = [_Planned("invoice.dispute_resolved", _erp(erp.InvoiceDisputeResolved, data))]
    return planned, _summary_with(context.state, "resolve_dispute", planned)


def _agree_plan(request: AgreePlan, context: _Context) -> tuple[list[_Planned], str]:
    owed = Decimal(0)
    for invoice_id in request.invoice_ids:
        invoice = _open_invoice(context, invoice_id, request.currency, "a plan covers what is still owed")
        if invoice_id in context.state.disputes:
            raise _invalid(f"invoice {invoice.number} is disputed: resolve the dispute before agreeing a plan")
        owed += invoice.outstanding
    _not_past(request.instalments[0].due_date, context.today, "the first instalment is due")
    total = sum((i.amount for i in request.instalments), Decimal(0))
    if total != owed:
        raise _invalid(
            f"the instalments add up to {_money(total, request.currency)}, the invoices owe "
            f"{_money(owed, request.currency)}: they must be equal"
        )
    plan_id = context.ids[0]
    instalments = [{"due_date": i.due_date.isoformat(), "amount": str(i.amount)} for i in request.instalments]
    data = {
        "plan_id": plan_id,
        "currency": request.currency,
        "invoice_ids": list(request.invoice_ids),
        "instalments": instalments,
    }
    planned = [_Planned("payment_plan.agreed", _erp(erp.PaymentPlanAgreed, data))]
    if request.send_confirmation:
        profile = context.state.profile or {}
        confirmation = events.PlanConfirmationRequested(
            author=context.author,
            confirmation_id=context.ids[1],
            plan_id=plan_id,
            language=str(profile.get("language") or "en"),
            currency=request.currency,
            invoice_ids=list(request.invoice_ids),
            instalments=[events.PlanInstalment(due_date=i.due_date, amount=i.amount) for i in request.instalments],
        )
        planned.append(_Planned(confirmation.TYPE, confirmation))
    return planned, _SUMMARIES["agree_plan"]([(p.event_type, p.model) for p in planned])


def _waive(request: WaiveClaim, context: _Context) -> tuple[list[_Planned], str]:
    found = waiver(context.state, request.invoice_id, request.kind, request.reason, context.author, request.amount)
    event = found.event
    summary = (
        f"waived {_money(event.amount, event.currency)} of {event.kind} on invoice "
        f"{_number(context.state, event.invoice_id)}; still owed {_money(found.owed_after, event.currency)}"
    )
    return [_Planned(event.TYPE, event)], summary


def _pause(request: Pause, context: _Context) -> tuple[list[_Planned], str]:
    _after_today(request.until, context.today, "a pause lasts until a day after today:")
    event = events.CustomerPaused(
        author=context.author, pause_id=context.ids[0], reason=request.reason, until=request.until
    )
    return [_Planned(event.TYPE, event)], _SUMMARIES["pause"]([(event.TYPE, event)])


def _resume(request: Resume, context: _Context) -> tuple[list[_Planned], str]:
    pause = context.state.pause
    if pause is None or date.fromisoformat(pause["until"]) < context.today:
        raise _invalid(f"customer {context.state.customer_id} is not paused")
    event = events.CustomerResumed(author=context.author, pause_id=pause["pause_id"], **_given(reason=request.reason))
    return [_Planned(event.TYPE, event)], _SUMMARIES["resume"]([(event.TYPE, event)])


def _propose(request: ProposeCreditLimit, context: _Context) -> tuple[list[_Planned], str]:
    event = events.CreditLimitProposed(
        author=context.author,
        proposal_id=context.ids[0],
        currency=request.currency,
        amount=request.amount,
        reason=request.reason,
    )
    return [_Planned(event.TYPE, event)], _SUMMARIES["propose_credit_limit"]([(event.TYPE, event)])


def _decide(request: DecideCreditLimit, context: _Context) -> tuple[list[_Planned], str]:
    proposal = context.state.limit_proposals.get(request.proposal_id)
    if proposal is None:
        raise _not_found(f"customer {context.state.customer_id} has no credit-limit proposal {request.proposal_id!r}")
    if proposal["status"] != "proposed":
        raise _invalid(f"proposal {request.proposal_id} was already {proposal['status']} by {proposal['decided_by']}")
    event: events.CreditLimitApproved | events.CreditLimitRejected
    if request.decision == "approve":
        event = events.CreditLimitApproved(
            author=context.author,
            proposal_id=request.proposal_id,
            currency=proposal["currency"],
            amount=Decimal(proposal["amount"]),
            **_given(note=request.note),
        )
    else:
        event = events.CreditLimitRejected(
            author=context.author, proposal_id=request.proposal_id, **_given(note=request.note)
        )
    return [_Planned(event.TYPE, event)], _SUMMARIES["decide_credit_limit"]([(event.TYPE, event)])


def _letter(context: _Context, letter_id: str) -> dict[str, Any]:
    letter = context.state.letters.get(letter_id)
    if letter is None:
        raise _not_found(f"customer {context.state.customer_id} has no letter {letter_id!r}")
    return dict(letter)


def _posted_letter(context: _Context, letter_id: str, what: str, day: date) -> dict[str, Any]:
    """The letter, checked to have been posted, not before ``day``, and neither delivered nor returned yet."""
    letter = _letter(context, letter_id)
    if not letter.get("posted_on"):
        raise _invalid(f"letter {letter_id} was not posted yet: record its posting first, then that it was {what}")
    if letter["status"] in ("delivered", "returned"):
        on = letter.get("delivered_on") or letter.get("returned_on")
        raise _invalid(f"letter {letter_id} was already recorded {letter['status']} on {on}")
    if day < date.fromisoformat(letter["posted_on"]):
        raise _invalid(f"letter {letter_id} cannot be {what} on {day}: it was posted on {letter['posted_on']}")
    _not_after_today(day, context.today, f"letter {letter_id}")
    return letter


def _not_after_today(day: date, today: date, what: str) -> None:
    if day > today:
        raise _invalid(f"{what}: {day} is after today ({today}); record what happened, once it happened")


def _letter_posted(request: LetterPosted, context: _Context) -> tuple[list[_Planned], str]:
    letter = _letter(context, request.letter_id)
    if letter.get("posted_on"):
        raise _invalid(
            f"letter {request.letter_id} was already posted on {letter['posted_on']} by {letter.get('posted_by')}: "
            "a letter is posted once (a new letter has its own id)"
        )
    rendered_on = date.fromisoformat(str(letter["rendered_at"])[:10])
    if request.posted_on < rendered_on:
        raise _invalid(
            f"letter {request.letter_id} cannot be posted on {request.posted_on}: it was rendered on {rendered_on}"
        )
    _not_after_today(request.posted_on, context.today, f"letter {request.letter_id}")
    event = events.LetterPosted(
        author=context.author,
        letter_id=request.letter_id,
        posted_on=request.posted_on,
        **_given(tracking_number=request.tracking_number, carrier=request.carrier),
    )
    return [_Planned(event.TYPE, event)], _SUMMARIES["letter_posted"]([(event.TYPE, event)])


def _letter_delivered(request: LetterDelivered, context: _Context) -> tuple[list[_Planned], str]:
    _posted_letter(context, request.letter_id, "delivered", request.delivered_on)
    event = events.LetterDelivered(
        author=context.author,
        letter_id=request.letter_id,
        delivered_on=request.delivered_on,
        **_given(note=request.note),
    )
    return [_Planned(event.TYPE, event)], _SUMMARIES["letter_delivered"]([(event.TYPE, event)])


def _letter_returned(request: LetterReturned, context: _Context) -> tuple[list[_Planned], str]:
    _posted_letter(context, request.letter_id, "returned", request.returned_on)
    event = events.LetterReturned(
        author=context.author, letter_id=request.letter_id, returned_on=request.returned_on, reason=request.reason
    )
    return [_Planned(event.TYPE, event)], _SUMMARIES["letter_returned"]([(event.TYPE, event)])


_HANDLERS: dict[str, _Handler] = {
    "complete_task": _complete,
    "snooze_task": _snooze,
    "assign_task": _assign,
    "log_call": _log_call,
    "add_note": _add_note,
    "record_promise": _record_promise,
    "open_dispute": _open_dispute,
    "resolve_dispute": _resolve_dispute,
    "agree_plan": _agree_plan,
    "waive_claim": _waive,
    "pause": _pause,
    "resume": _resume,
    "propose_credit_limit": _propose,
    "decide_credit_limit": _decide,
    "letter_posted": _letter_posted,
    "letter_delivered": _letter_delivered,
    "letter_returned": _letter_returned,
}


def _given(**fields: Any) -> dict[str, Any]:
    """The optional fields that were given (a field not given is not written)."""
    return {k: v for k, v in fields.items() if v is not None}


def _erp(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """The ERP's model of an event a person records, checked by the ERP contract's own rules."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(_described(exc)) from None


# ------------------------------------------------------------------------------------------------------ summaries
_Events = list[tuple[str, Any]]


def _summary_with(state: CustomerState, action: str, planned: list[_Planned]) -> str:
    return _SUMMARIES[action]([(p.event_type, p.model) for p in planned], state)


def _say_promise(event: Any) -> str:
    amount = Decimal(str(event.amount))
    return f"promise of {_money(amount, event.currency)} by {event.promised_date}"


def _say_call(found: _Events, state: CustomerState | None = None) -> str:
    parts = []
    for event_type, event in found:
        if event_type == events.CallLogged.TYPE:
            parts.append(f"call logged ({str(event.outcome).replace('_', ' ')})")
            if event.next_action_on is not None:
                parts.append(f"follow-up on {event.next_action_on}")
        elif event_type == events.TaskCompleted.TYPE:
            parts.append(f"task {event.task_id} done")
        elif event_type == "promise_to_pay.recorded":
            parts.append(_say_promise(event) + " recorded")
        elif event_type == "invoice.disputed":
            parts.append(f"invoice {_number(state, event.invoice_id)} disputed")
    return "; ".join(parts)


def _say_plan(found: _Events, state: CustomerState | None = None) -> str:
    plan = found[0][1]
    total = sum((Decimal(str(i.amount)) for i in plan.instalments), Decimal(0))
    text = f"payment plan of {len(plan.instalments)} instalment(s), {_money(total, plan.currency)}, agreed"
    return text + ("; written confirmation requested" if len(found) > 1 else "")


def _say_waiver(found: _Events, state: CustomerState | None = None) -> str:
    event = found[0][1]
    amount = Decimal(str(event.amount))
    return f"waived {_money(amount, event.currency)} of {event.kind} on invoice {_number(state, event.invoice_id)}"


def _say_decision(found: _Events, state: CustomerState | None = None) -> str:
    event_type, event = found[0]
    if event_type == events.CreditLimitApproved.TYPE:
        return f"credit limit of {_money(Decimal(str(event.amount)), event.currency)} approved"
    return f"credit-limit proposal {event.proposal_id} rejected"


_SUMMARIES: dict[str, Callable[..., str]] = {
    "complete_task": lambda found, state=None: f"task {found[0][1].task_id} done: {found[0][1].outcome}",
    "snooze_task": lambda found, state=None: f"task {found[0][1].task_id} snoozed until {found[0][1].until}",
    "assign_task": lambda found, state=None: f"task {found[0][1].task_id} assigned to {found[0][1].assignee}",
    "log_call": _say_call,
    "add_note": lambda found, state=None: "note added",
    "record_promise": lambda found, state=None: _say_promise(found[0][1]) + " recorded",
    "open_dispute": lambda found, state=None: f"invoice {_number(state, found[0][1].invoice_id)} disputed",
    "resolve_dispute": lambda found, state=None: (
        f"dispute of invoice {_number(state, found[0][1].invoice_id)} resolved"
    ),
    "agree_plan": _say_plan,
    "waive_claim": _say_waiver,
    "pause": lambda found, state=None: f"customer paused until {found[0][1].until}",
    "resume": lambda found, state=None: "customer resumed",
    "propose_credit_limit": lambda found, state=None: (
        f"credit limit of {_money(Decimal(str(found[0][1].amount)), found[0][1].currency)} proposed"
    ),
    "decide_credit_limit": _say_decision,
    "letter_posted": lambda found, state=None: (
        f"letter {found[0][1].letter_id} posted on {found[0][1].posted_on}"
        + (f" (tracking number {found[0][1].tracking_number})" if found[0][1].tracking_number else "")
    ),
    "letter_delivered": lambda found, state=None: (
        f"letter {found[0][1].letter_id} delivered on {found[0][1].delivered_on}"
    ),
    "letter_returned": lambda found, state=None: (
        f"letter {found[0][1].letter_id} returned on {found[0][1].returned_on}: {found[0][1].reason}"
    ),
}


# ------------------------------------------------------------------------------------------------------ waiver
@dataclass(frozen=True, slots=True)
class Waiver:
    event: events.ClaimWaived
    owed_after: Decimal


def waiver(
    state: CustomerState, invoice_id: str, kind: str, reason: str, author: str, amount: Decimal | None = None
) -> Waiver:
    """The ``claim.waived`` a waiver records on this state (all that is owed, or ``amount`` of it), or
    :class:`ActionRefused` saying why not. The reason and the author are the caller's to check (one plain line)."""
    if kind not in KINDS:
        raise _invalid(f"a claim is {' or '.join(KINDS)}, not {kind!r}")
    invoice = state.invoices.get(invoice_id)
    if invoice is None:
        raise _not_found(f"customer {state.customer_id} of {state.tenant} has no invoice {invoice_id!r}")
    claim = state.claims.get(invoice_id, kind)
    owed = Decimal(0) if claim is None else claim.owed
    if claim is None or owed <= 0:
        raise _invalid(f"nothing is owed in {kind} on invoice {invoice.number} ({invoice_id}): nothing to waive")
    waived = owed if amount is None else amount
    if waived <= 0:
        raise _invalid(f"the amount {waived} must be above zero")
    exponent = waived.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > minor_units(claim.currency):
        raise _invalid(f"{waived} has more decimals than {claim.currency} has ({minor_units(claim.currency)})")
    if waived > owed:
        raise _invalid(
            f"{waived} {claim.currency} is more than the {owed} {claim.currency} of {kind} owed on invoice "
            f"{invoice.number}: waive at most what is owed"
        )
    event = events.ClaimWaived(
        invoice_id=invoice_id,
        kind=kind,  # type: ignore[arg-type]
        currency=claim.currency,
        amount=waived,
        reason=reason.strip(),
        author=author.strip(),
    )
    return Waiver(event, owed - waived)


assert set(ACTIONS) == set(_HANDLERS) == set(_SUMMARIES)
