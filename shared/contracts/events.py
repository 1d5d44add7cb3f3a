"""relance's own vocabulary: every event type relance itself appends to a customer's stream, as frozen models.

The ERP's events are typed by :mod:`shared.contracts.erp`; these are the others: the escalation engine's decisions
(:mod:`services.escalation.engine`), the clock ticks that drive them (:mod:`services.escalation.service`), the
notifier's facts about a reminder (:mod:`services.notifier`) and the webhook's dead letters
(:mod:`services.webhook.worker`). Each model names its type once (``TYPE``); :meth:`RelanceEvent.data` is the dict
written to the log, exactly as relance wrote it before there were models: the same keys (a field that was not given
is not written), money as a decimal string with its exponent, dates ISO 8601, instants RFC 3339 in UTC with ``Z``
(:func:`instant_text`). The ledger's hash chain covers that dict, so the spelling of a field must never change.

:func:`parse` turns a recorded (type, data) back into its model, the ERP's or relance's, once, where an event enters
the fold; old events keep whatever spelling of an instant they were written with, and compare as instants.

:data:`COMMANDS` is the one table of the events that cause an outbox command, and which.

The whole vocabulary is one module (under 500 lines), as the ERP's is :mod:`shared.contracts.erp`.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache, partial
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, create_model
from pydantic_core import PydanticUndefined

from shared.contracts.erp import DATA_MODELS as ERP_MODELS


def instant_text(moment: datetime) -> str:
    """How relance writes an instant: RFC 3339 in UTC, ``Z`` for the zone, microseconds only when there are some."""
    if moment.tzinfo is None:
        raise ValueError("an instant must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


Instant = Annotated[datetime, PlainSerializer(instant_text, return_type=str)]
"""An instant, read in either spelling relance ever wrote (``Z`` or ``+00:00``), written with ``Z``."""


class RelanceEvent(BaseModel):
    """The data of an event relance appends; ``TYPE`` is its event type."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    TYPE: ClassVar[str]

    def data(self) -> dict[str, Any]:
        """The event's data as the log stores it: only the fields given, in their JSON spelling."""
        return self.model_dump(mode="json", exclude_unset=True)


class _Decided(RelanceEvent):
    """A decision of the engine: it names the policy it followed and the instant it was taken for."""

    policy: str
    policy_version: str
    as_of: Instant


class LevelReached(_Decided):
    """An invoice reached a level of the ladder (``skipped``: the levels passed over on the way)."""

    TYPE: ClassVar[str] = "escalation.level_reached"
    invoice_id: str
    currency: str
    level: str
    offset_days: int
    skipped: list[str] = []
    actions: list[str] = []
    channel: str
    due_date: date
    anchor: date | None = None
    step_date: date
    reached_on: date
    outstanding: Decimal


ClaimKind = Literal["interest", "indemnity"]
"""The two claims a late invoice gives rise to: late interest and the fixed recovery indemnity."""

Allocation = Literal["principal_first", "claims_first"]
"""What money a payment leaves unallocated settles first (the policy's ``claims.allocation``)."""


class InterestComputed(_Decided):
    """The total late interest owed on an invoice through a day (it replaces the previous figure).

    ``allocation`` is written only under ``claims_first``: the rule the fold applies to money left unallocated
    (absent: ``principal_first``), see :mod:`shared.ledger.claims`."""

    TYPE: ClassVar[str] = "interest.computed"
    invoice_id: str
    currency: str
    amount: Decimal
    through: date
    days: int
    allocation: Allocation | None = None


class FeeCharged(_Decided):
    """The fixed recovery indemnity, charged once per late invoice (``currency``: the fee's own, which the law may
    set apart from the invoice's); ``allocation`` as in :class:`InterestComputed`."""

    TYPE: ClassVar[str] = "fee.charged"
    invoice_id: str
    currency: str
    amount: Decimal
    allocation: Allocation | None = None


class ClaimFixed(_Decided):
    """The late interest of an invoice whose principal was settled after its due date, fixed for good: ``days`` of
    interest through ``through``, the settlement day. No ``interest.computed`` follows it for the invoice."""

    TYPE: ClassVar[str] = "claim.fixed"
    invoice_id: str
    currency: str
    kind: ClaimKind
    amount: Decimal
    through: date
    days: int
    allocation: Allocation | None = None


class ClaimWaived(RelanceEvent):
    """A collector gave up (part of) a claim, deliberately, with a reason, on record: ``author`` decided it."""

    TYPE: ClassVar[str] = "claim.waived"
    invoice_id: str
    kind: ClaimKind
    currency: str
    amount: Decimal
    reason: str
    author: str


class Notice(RelanceEvent):
    """A written level already sent for an invoice: which, in which reminder, on which (tenant-local) day."""

    level: str
    reminder_id: str
    on: date


class ReminderLine(RelanceEvent):
    """One invoice as a reminder lists it: at ``level``, with the written ``notices`` sent for it before."""

    invoice_id: str
    number: str
    issue_date: date
    due_date: date
    amount: Decimal
    outstanding: Decimal
    days_late: int
    interest: Decimal
    fee: Decimal
    fee_currency: str | None = None  # only when the fee is in another currency than the invoice (French law: EUR)
    level: str | None = None
    notices: list[Notice] | None = None


class ClaimLine(RelanceEvent):
    """A claim still owed on an invoice whose principal is settled, that the customer was already asked for
    (``paid_on``: the day the principal was settled, ``days_late`` after its due date; absent in older logs)."""

    invoice_id: str
    number: str
    kind: ClaimKind
    currency: str
    amount: Decimal
    paid_on: date | None = None
    days_late: int | None = None


class ReminderTotals(RelanceEvent):
    outstanding: Decimal
    interest: Decimal
    fees: Decimal
    claims: Decimal | None = None  # the message's ``claims`` in its currency


class AppliedRate(RelanceEvent):
    """An annual rate late interest was computed at, from ``from_date``; no reference nor margin for an agreed rate."""

    from_date: date
    reference: Decimal | None = None
    margin: Decimal | None = None
    rate: Decimal


CLAIMS_STATEMENT = "claims"  # the ``level`` (and template) of a claims statement: no level of any ladder


class ReminderRequested(_Decided):
    """A reminder to send, per customer, currency and day (the notifier's command ``notifier.send_reminder``).

    A *claims statement* has the ``level`` :data:`CLAIMS_STATEMENT`: it demands no invoice (``lines`` empty) and asks
    once for the claims still owed on invoices already settled (``claims``, summed in ``totals.claims``).
    """

    TYPE: ClassVar[str] = "reminder.requested"
    reminder_id: str
    level: str
    channel: str
    copy_channels: list[str]
    template: str | None
    language: str
    currency: str
    invoice_ids: list[str]
    lines: list[ReminderLine]
    totals: ReminderTotals
    law: str | None = None  # fr | eu | uk: the law the interest and fixed sums follow (absent in older logs)
    rates: list[AppliedRate] | None = None  # the rates the interest it states was computed at
    also: list[ReminderLine] | None = None  # other overdue invoices of the currency, not demanded by this message
    claims: list[ClaimLine] | None = None  # claims still owed on invoices already settled


class CollectionHandedOver(_Decided):
    """Invoices handed over to a collection agency or litigation (the ERP's command ``erp.collection_handover``):
    the ladder ends for them; ``lines`` and ``totals`` are the file's figures when it was handed over."""

    TYPE: ClassVar[str] = "collection.handed_over"
    handover_id: str
    currency: str
    invoice_ids: list[str]
    lines: list[ReminderLine]
    totals: ReminderTotals


class CreditLimit(RelanceEvent):
    amount: Decimal
    currency: str


class CreditBlocked(_Decided):
    """The customer's credit is to be blocked (``reason``: ``level`` or ``credit_limit``); one per block episode."""

    TYPE: ClassVar[str] = "credit.blocked"
    block_id: str
    reason: str
    overdue: dict[str, Decimal]
    credit_limit: CreditLimit | None = None


class CreditUnblocked(_Decided):
    """The block ``block_id`` ends: neither of its reasons holds any more."""

    TYPE: ClassVar[str] = "credit.unblocked"
    block_id: str
    reason: str
    overdue: dict[str, Decimal]


class TaskCreated(RelanceEvent):
    """Something for a collector to do. The engine's tasks carry its policy and instant; the notifier's name the
    reminder and the command, the webhook's the command; a held invoice's interest task names its semester."""

    TYPE: ClassVar[str] = "task.created"
    task_id: str
    kind: str
    due_on: date
    invoice_ids: list[str]
    currency: str
    amount_at_risk: Decimal
    note: str
    semester: date | None = None
    reminder_id: str | None = None
    command_id: str | None = None
    command: str | None = None
    level: str | None = None  # the level a phone_call task is for
    policy: str | None = None
    policy_version: str | None = None
    as_of: Instant | None = None


class ClockTicked(RelanceEvent):
    """The instant an evaluation decided at, and what triggered it: what a replay drives the engine with."""

    TYPE: ClassVar[str] = "escalation.clock_ticked"
    as_of: Instant
    trigger: str


class RefusedRecipient(RelanceEvent):
    """An address the mail server refused at RCPT TO."""

    address: str
    code: int
    reply: str
    kind: str


class _ReminderFact(RelanceEvent):
    """What the notifier records about one ``notifier.send_reminder`` command (its evidence)."""

    command_id: str
    reminder_id: str | None = None
    level: str | None = None
    message_id: str | None = None
    sha256: str | None = None
    recipients: list[str] | None = None
    subject: str | None = None
    template: str | None = None
    template_version: str | None = None
    refusal: str | None = None
    round: int | None = None
    reason: str | None = None
    smtp_reply: str | None = None


class ReminderSending(_ReminderFact):
    """A round of sending begins (the claim: one worker per round)."""

    TYPE: ClassVar[str] = "reminder.sending"


class ReminderSent(_ReminderFact):
    """The server took the message (250 after DATA): who got it, who was refused."""

    TYPE: ClassVar[str] = "reminder.sent"
    accepted: list[str]
    refused: list[RefusedRecipient]


class ReminderDeferred(_ReminderFact):
    """The server said "later": the broker redelivers the command for a new round."""

    TYPE: ClassVar[str] = "reminder.deferred"


class ReminderFailed(_ReminderFact):
    """The reminder will not go out by e-mail (a refusal of the server's, or of relance's: ``refusal``)."""

    TYPE: ClassVar[str] = "reminder.failed"


class ReminderUnconfirmed(_ReminderFact):
    """The connection broke after DATA: whether the server took the message is unknown."""

    TYPE: ClassVar[str] = "reminder.unconfirmed"


class ReminderSkipped(_ReminderFact):
    """Nothing the reminder lists is still due: ``dropped`` says why, invoice by invoice."""

    TYPE: ClassVar[str] = "reminder.skipped"
    dropped: list[dict[str, str]]


class ReminderLetterRequested(_ReminderFact):
    """The reminder is a letter: a collector prints and posts it (``lines``: how many invoices it lists)."""

    TYPE: ClassVar[str] = "reminder.letter_requested"
    lines: int


class CommandDeadLettered(RelanceEvent):
    """An adapter gave up delivering an outbox command to the ERP."""

    TYPE: ClassVar[str] = "command.dead_lettered"
    command_id: str
    command: str
    attempts: int
    last_error: str


# People's actions: what a collector, a credit manager or an administrator records in the workspace, the API or the
# CLI. Each names its ``author`` (the user's login); the event's metadata says where it came from
# (:data:`PEOPLE_SOURCES`) and carries the client's request id. A promise, a dispute or a plan a person records is
# the ERP's own event type (:mod:`shared.contracts.erp`) with that metadata, so the engine treats it exactly as the
# ERP's; :data:`ACTION_COMMANDS` tells the ERP about it.

CallOutcome = Literal["reached", "no_answer", "wrong_contact", "promised", "disputed", "in_difficulty"]
CALL_OUTCOMES: tuple[str, ...] = get_args(CallOutcome)


class _Action(RelanceEvent):
    author: str


class LetterRendered(RelanceEvent):
    """A letter's PDF, rendered when its command was handled; the bytes are in ``letters`` under ``letter_id``.

    ``kind``: ``reminder`` (a reminder level with the letter channel, the formal notice among them) or
    ``confirmation`` (a payment plan's). ``sha256`` is the hash of the stored PDF, as ``reminder.sent``'s is of the
    e-mail's bytes.
    """

    TYPE: ClassVar[str] = "letter.rendered"
    letter_id: str
    command_id: str
    kind: str
    sha256: str
    pages: int
    reminder_id: str | None = None
    level: str | None = None
    template: str | None = None
    template_version: str | None = None


class LetterHandedToPrint(RelanceEvent):
    """The letter went into the day's print batch ``batch_id`` (``relance letters --date``)."""

    TYPE: ClassVar[str] = "letter.handed_to_print"
    letter_id: str
    batch_id: str
    printed_on: date
    batch_sha256: str | None = None


class LetterPosted(_Action):
    """A person posted the letter: the carrier's tracking number (a registered letter's), the day it was posted."""

    TYPE: ClassVar[str] = "letter.posted"
    letter_id: str
    posted_on: date
    tracking_number: str | None = None
    carrier: str | None = None


class LetterDelivered(_Action):
    """The carrier delivered the letter (a registered letter's acknowledgement of receipt: ``delivered_on``)."""

    TYPE: ClassVar[str] = "letter.delivered"
    letter_id: str
    delivered_on: date
    note: str | None = None


class LetterReturned(_Action):
    """The letter came back undelivered (``reason``: the carrier's, e.g. unknown at this address, not collected)."""

    TYPE: ClassVar[str] = "letter.returned"
    letter_id: str
    returned_on: date
    reason: str


class TaskCompleted(_Action):
    """A collector did the task (``outcome``: what came of it, in a few words)."""

    TYPE: ClassVar[str] = "task.completed"
    task_id: str
    outcome: str
    note: str | None = None


class TaskSnoozed(_Action):
    """The task waits until ``until`` (a day of the tenant); it comes back on the agenda then."""

    TYPE: ClassVar[str] = "task.snoozed"
    task_id: str
    until: date
    note: str | None = None


class TaskAssigned(_Action):
    """The task is ``assignee``'s (a user's login)."""

    TYPE: ClassVar[str] = "task.assigned"
    task_id: str
    assignee: str


class CallLogged(_Action):
    """A phone call with the customer, its outcome and what comes next (``next_action_on``: a follow-up task)."""

    TYPE: ClassVar[str] = "call.logged"
    call_id: str
    outcome: CallOutcome
    note: str
    contact: str | None = None
    next_action_on: date | None = None
    task_id: str | None = None  # the task the call answers


class NoteAdded(_Action):
    """A note on the customer's account."""

    TYPE: ClassVar[str] = "note.added"
    note_id: str
    text: str


class CustomerPaused(_Action):
    """No reminder, level, fee, block or hand-over for the customer until ``until`` (inclusive) or until resumed."""

    TYPE: ClassVar[str] = "customer.paused"
    pause_id: str
    reason: str
    until: date


class CustomerResumed(_Action):
    """The pause ``pause_id`` ends before its end date."""

    TYPE: ClassVar[str] = "customer.resumed"
    pause_id: str
    reason: str | None = None


class CreditLimitProposed(_Action):
    """A new credit limit proposed for a credit manager's decision."""

    TYPE: ClassVar[str] = "credit_limit.proposed"
    proposal_id: str
    currency: str
    amount: Decimal
    reason: str


class CreditLimitApproved(_Action):
    """A credit manager approved the proposal: the ERP is asked to change the limit (``erp.credit_limit_change``);
    the limit relance applies changes when the ERP's ``customer.upserted`` says so."""

    TYPE: ClassVar[str] = "credit_limit.approved"
    proposal_id: str
    currency: str
    amount: Decimal
    note: str | None = None


class CreditLimitRejected(_Action):
    TYPE: ClassVar[str] = "credit_limit.rejected"
    proposal_id: str
    note: str | None = None


class PlanInstalment(RelanceEvent):
    due_date: date
    amount: Decimal


class PlanConfirmationRequested(_Action):
    """The customer is sent the written confirmation of the plan ``plan_id`` (``notifier.send_confirmation``), kept
    as evidence like a reminder."""

    TYPE: ClassVar[str] = "payment_plan.confirmation_requested"
    confirmation_id: str
    plan_id: str
    language: str
    currency: str
    invoice_ids: list[str]
    instalments: list[PlanInstalment]


MODELS: dict[str, type[RelanceEvent]] = {
    model.TYPE: model
    for model in (
        LevelReached,
        InterestComputed,
        FeeCharged,
        ClaimFixed,
        ClaimWaived,
        ReminderRequested,
        CreditBlocked,
        CreditUnblocked,
        CollectionHandedOver,
        TaskCreated,
        ClockTicked,
        ReminderSending,
        ReminderSent,
        ReminderDeferred,
        ReminderFailed,
        ReminderUnconfirmed,
        ReminderSkipped,
        ReminderLetterRequested,
        LetterRendered,
        LetterHandedToPrint,
        LetterPosted,
        LetterDelivered,
        LetterReturned,
        CommandDeadLettered,
        TaskCompleted,
        TaskSnoozed,
        TaskAssigned,
        CallLogged,
        NoteAdded,
        CustomerPaused,
        CustomerResumed,
        CreditLimitProposed,
        CreditLimitApproved,
        CreditLimitRejected,
        PlanConfirmationRequested,
    )
}
"""Every event type relance writes, and its model."""

REMINDER_OUTCOMES = (
    ReminderSent.TYPE,
    ReminderLetterRequested.TYPE,
    ReminderSkipped.TYPE,
    ReminderFailed.TYPE,
    ReminderUnconfirmed.TYPE,
)
"""The facts that end a reminder command: one of them per command, once it is done."""

CREDIT_BLOCK = "erp.credit_block"
CREDIT_UNBLOCK = "erp.credit_unblock"
COLLECTION_HANDOVER = "erp.collection_handover"
SEND_REMINDER = "notifier.send_reminder"
SEND_CONFIRMATION = "notifier.send_confirmation"
CREDIT_LIMIT_CHANGE = "erp.credit_limit_change"
COMMANDS: dict[str, str] = {
    CreditBlocked.TYPE: CREDIT_BLOCK,
    CreditUnblocked.TYPE: CREDIT_UNBLOCK,
    CollectionHandedOver.TYPE: COLLECTION_HANDOVER,
    ReminderRequested.TYPE: SEND_REMINDER,
    CreditLimitApproved.TYPE: CREDIT_LIMIT_CHANGE,
    PlanConfirmationRequested.TYPE: SEND_CONFIRMATION,
}
"""Event type appended to the ledger -> the command the outbox writes for it (its AMQP routing key)."""

PEOPLE_SOURCES = ("workspace", "api", "cli")
"""The ``source`` in the metadata of an event a person recorded (with ``author`` and ``request_id``)."""

ACTION_COMMANDS: dict[str, str] = {
    "promise_to_pay.recorded": "erp.promise_to_pay",
    "invoice.disputed": "erp.dispute_opened",
    "invoice.dispute_resolved": "erp.dispute_resolved",
    "payment_plan.agreed": "erp.payment_plan",
}
"""The ERP's event types a person may record in relance, and the command that tells the ERP about it: written to the
outbox only when the event's metadata ``source`` is one of :data:`PEOPLE_SOURCES` (never an echo of the ERP's own)."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A recorded event of a type relance does not know (any more): it changes nothing but the stream's version."""

    event_type: str
    fields: dict[str, Any]


Event = BaseModel | Unknown
"""What the fold consumes: an ERP event's data model (:mod:`shared.contracts.erp`), one of relance's
(:class:`RelanceEvent`), or an :class:`Unknown`."""


def parse(event_type: str, data: dict[str, Any]) -> Event:
    """The typed event of a recorded (type, data): the ERP's model, relance's, or :class:`Unknown`.

    An event is read as recorded, its types converted but the contract's rules not checked again: the log holds
    what an older relance accepted (a due date of 9999-12-31 before the contract bounded dates), and a fold must
    never refuse the past. Of relance's own events, the fields given are read (the fold reads what it needs: a
    field it needs and the event lacks is an error there, as it always was), and :meth:`RelanceEvent.data` gives
    back exactly those.
    """
    model = MODELS.get(event_type) or ERP_MODELS.get(event_type)
    if model is None:
        return Unknown(event_type, data)
    return _as_recorded(model, _recorded(model).model_validate(data))


@cache
def _recorded(model: type[BaseModel]) -> type[BaseModel]:
    """The model's fields with their plain types (no validator, no rule): how a recorded event is read."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if issubclass(model, RelanceEvent):
            fields[name] = (_plain(info.annotation) | None, None)
            continue
        if info.default_factory is not None:
            default = Field(default_factory=info.default_factory)
        else:
            default = Field() if info.is_required() else Field(default=info.default)
        fields[name] = (_plain(info.annotation), default)
    config = ConfigDict(extra="ignore", frozen=True)
    recorded: type[BaseModel] = create_model(f"Recorded{model.__name__}", __config__=config, **fields)
    _ORIGINALS[recorded] = model
    return recorded


_ORIGINALS: dict[type[BaseModel], type[BaseModel]] = {}


def _plain(annotation: Any) -> Any:
    """A type without its Annotated validators; an ERP model as its recorded reading."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _plain(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _recorded(annotation)
    if origin is list:
        return list[_plain(get_args(annotation)[0])]  # type: ignore[misc]
    if origin in (Union, UnionType):
        return Union[tuple(_plain(arg) for arg in get_args(annotation))]  # noqa: UP007
    return annotation


def _as_recorded(model: type[BaseModel], reading: BaseModel) -> BaseModel:
    """The model built from its recorded reading without running its rules again.

    Exactly what :meth:`~pydantic.BaseModel.model_construct` of the given fields builds (the fields in their order,
    an absent one its default, a required one absent left out, the given ones as the fields set), put together
    from the model's :class:`_Shape` instead: ``model_construct`` works out every field's default, aliases and
    factory again on every call, which cost more than the rest of reading a recorded event.
    """
    shape = _shape(model, type(reading))
    if shape.fields is None:
        return model.model_construct(
            _fields_set=set(reading.model_fields_set),
            **{name: _value(getattr(reading, name)) for name in reading.model_fields_set},
        )
    given = reading.model_fields_set
    values: dict[str, Any] = {}
    for name, nested, default, factory in shape.fields:
        if name in given:
            value = getattr(reading, name)
            values[name] = _value(value) if nested else value
        elif factory is not None:
            values[name] = factory()
        elif default is not PydanticUndefined:
            values[name] = default
    built = model.__new__(model)
    _set = object.__setattr__
    _set(built, "__dict__", values)
    _set(built, "__pydantic_fields_set__", set(given))
    _set(built, "__pydantic_extra__", None)
    _set(built, "__pydantic_private__", None)
    return built


@dataclass(frozen=True, slots=True)
class _Shape:
    """How a model is put together from its recorded reading, worked out once per model.

    ``fields``, in the model's order: each field's name, whether its type names a model (the only values walked for
    recorded readings), its default when immutable (``None``, a string, a number, ...; else ``PydanticUndefined``),
    and otherwise what makes its value (its factory, or a copy of its default; ``None`` for a required field).
    ``None`` for a model that ``model_construct`` builds otherwise (aliases, private attributes, a post-init hook,
    extra fields kept): none of relance's, which is then left to build it.
    """

    fields: tuple[tuple[str, bool, Any, Callable[[], Any] | None], ...] | None


_IMMUTABLE = (type(None), str, int, float, bool, Decimal, date)


@cache
def _shape(model: type[BaseModel], recorded: type[BaseModel]) -> _Shape:
    infos = model.model_fields
    if (
        model.__pydantic_post_init__
        or model.__private_attributes__
        or model.__pydantic_root_model__
        or model.model_config.get("extra") == "allow"
        or any(info.alias is not None or info.validation_alias is not None for info in infos.values())
    ):
        return _Shape(None)
    nested = {name for name, info in recorded.model_fields.items() if _names_model(info.annotation)}
    fields: list[tuple[str, bool, Any, Callable[[], Any] | None]] = []
    for name, info in infos.items():
        default: Any = PydanticUndefined
        factory = cast("Callable[[], Any] | None", info.default_factory)
        if factory is not None and info.default_factory_takes_validated_data:
            return _Shape(None)
        if factory is None and not info.is_required():
            if isinstance(info.default, _IMMUTABLE):
                default = info.default
            else:
                factory = partial(deepcopy, info.default)
        fields.append((name, name in nested, default, factory))
    return _Shape(tuple(fields))


def _names_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_names_model(arg) for arg in get_args(annotation))


def _value(value: Any) -> Any:
    if isinstance(value, BaseModel) and type(value) in _ORIGINALS:
        return _as_recorded(_ORIGINALS[type(value)], value)
    if isinstance(value, list):
        return [_value(item) for item in value]
    return value


def type_of(event: Event) -> str:
    """The event type of a parsed event."""
    if isinstance(event, Unknown):
        return event.event_type
    if isinstance(event, RelanceEvent):
        return event.TYPE
    return ERP_TYPES[type(event)]


ERP_TYPES: dict[type[BaseModel], str] = {model: event_type for event_type, model in ERP_MODELS.items()}


def data_of(event: Event) -> dict[str, Any]:
    """The event's data as the log stores it: relance's as :meth:`RelanceEvent.data`, the ERP's as ingest
    normalised it (:meth:`shared.contracts.erp.ErpEvent.data_json`)."""
    if isinstance(event, Unknown):
        return event.fields
    if isinstance(event, RelanceEvent):
        return event.data()
    return event.model_dump(mode="json", exclude_none=True)
