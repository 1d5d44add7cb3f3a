"""The ERP message contract, version 1: what an ERP publishes to the ``relance.events`` exchange.

Every message is a UTF-8 JSON envelope (event_id, event_type, tenant, customer_id, occurred_at, data). Money is a
decimal string, never a JSON number; currencies are ISO 4217 codes; dates are ISO 8601. The models below are the
single source of the contract: the JSON Schema files and the AsyncAPI document are generated from them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Annotated, Any, Literal

from babel.core import get_global
from babel.numbers import get_currency_precision, list_currencies
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)

CONTRACT_VERSION = 1

_AMOUNT = re.compile(r"^\d{1,15}(\.\d{1,6})?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}\S*")
_EMAIL = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,255}\.[A-Za-z]{2,63}$")


class InvalidMessage(Exception):
    """A message that can never be applied, whatever the retries: it belongs in the dead-letter queue."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # not_json | schema | unknown_event_type | oversize | business_rule
        self.reason = reason


@cache
def _currencies() -> frozenset[str]:
    """ISO 4217 codes of currencies that are legal tender somewhere today (not FRF, DEM, XXX, XTS)."""
    in_use = {
        code
        for currencies in get_global("territory_currencies").values()
        for code, _start, end, tender in currencies
        if tender and end is None
    }
    return frozenset(in_use & set(list_currencies()))


def minor_units(currency: str) -> int:
    """Decimal places of the currency's minor unit (EUR 2, JPY 0, KWD 3)."""
    return int(get_currency_precision(currency))


def _parse_amount(value: Any) -> Decimal:
    if isinstance(value, _JsonFloat):
        raise ValueError(f'must be a decimal string such as "{value.text}", not a JSON number')
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f'must be a decimal string such as "1234.56", not a JSON {type(value).__name__}')
    if not _AMOUNT.fullmatch(value):  # not match: "$" also matches before a trailing newline
        raise ValueError(f'must be a non-negative decimal string such as "1234.56", got {value!r}')
    try:
        return Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes this
        raise ValueError(f"not a decimal amount: {value!r}") from exc


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _currency(value: Any) -> str:
    if not isinstance(value, str) or value not in _currencies():
        raise ValueError(f"must be the ISO 4217 code of a currency in use, such as EUR, got {value!r}")
    return value


def _text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (line breaks, tabs, NUL)")
    return value


def _iso_date(value: Any) -> Any:
    # pydantic alone also takes Unix timestamps (1700006400, "1700006400") for dates: the contract says ISO 8601.
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError(f"must be an ISO 8601 date string such as 2026-11-02, got {value!r}")
    return value


def _iso_datetime(value: Any) -> Any:
    if not isinstance(value, str) or not _ISO_DATETIME.fullmatch(value):
        raise ValueError(f"must be an ISO 8601 date-time string such as 2026-11-02T09:15:00Z, got {value!r}")
    return value


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):  # a trailing newline would reach an SMTP header
        raise ValueError(f"not a valid e-mail address: {value!r}")
    return value


_AMOUNT_SCHEMA = {"type": "string", "pattern": _AMOUNT.pattern, "examples": ["1234.56"]}

Amount = Annotated[Decimal, BeforeValidator(_parse_amount), AfterValidator(_positive), WithJsonSchema(_AMOUNT_SCHEMA)]
Currency = Annotated[
    str,
    BeforeValidator(_currency),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code"}),
]
Id = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_text)]
Text = Annotated[str, Field(max_length=2000), AfterValidator(_text)]
Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Instant = Annotated[AwareDatetime, BeforeValidator(_iso_datetime)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _check_precision(amount: Decimal, currency: str, field: str) -> None:
    places = minor_units(currency)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise ValueError(f"{field} {amount} has more decimals than {currency} allows ({places})")


class Money(_Model):
    amount: Amount
    currency: Currency

    @model_validator(mode="after")
    def _precision(self) -> Money:
        _check_precision(self.amount, self.currency, "amount")
        return self


class CustomerUpserted(_Model):
    """The customer's master data: name, contacts, language, segment or policy, credit limit."""

    name: Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_text)]
    emails: list[Email] = Field(default_factory=list, max_length=20)
    language: Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] = "en"
    segment: Id | None = None
    policy: Id | None = None
    credit_limit: Money | None = None
    contact_name: Text | None = None


class InvoiceIssued(_Model):
    """An invoice sent to the customer; amount includes tax."""

    invoice_id: Id
    number: Id
    issue_date: IsoDate
    due_date: IsoDate
    currency: Currency
    amount: Amount
    customer: CustomerUpserted | None = None

    @model_validator(mode="after")
    def _rules(self) -> InvoiceIssued:
        _check_precision(self.amount, self.currency, "amount")
        if self.due_date < self.issue_date:
            raise ValueError(f"due_date {self.due_date} is before issue_date {self.issue_date}")
        return self


class Allocation(_Model):
    invoice_id: Id
    amount: Amount


class PaymentReceived(_Model):
    """Money received; allocated as stated, otherwise to the oldest open invoices first."""

    payment_id: Id
    amount: Amount
    currency: Currency
    received_on: IsoDate
    allocations: list[Allocation] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _rules(self) -> PaymentReceived:
        _check_precision(self.amount, self.currency, "amount")
        for allocation in self.allocations:
            _check_precision(allocation.amount, self.currency, "allocation amount")
        if sum((a.amount for a in self.allocations), Decimal(0)) > self.amount:
            raise ValueError("allocations add up to more than the payment amount")
        if len({a.invoice_id for a in self.allocations}) != len(self.allocations):
            raise ValueError("an invoice appears twice in allocations")
        return self


class InvoiceDueDatePassed(_Model):
    """The ERP's own notice that an invoice fell due (optional: relance keeps its own timers)."""

    invoice_id: Id
    due_date: IsoDate


class CreditNoteIssued(_Model):
    """A credit note, against one invoice or as general credit."""

    credit_note_id: Id
    amount: Amount
    currency: Currency
    issued_on: IsoDate
    invoice_id: Id | None = None
    number: Id | None = None
    reason: Text | None = None

    @model_validator(mode="after")
    def _rules(self) -> CreditNoteIssued:
        _check_precision(self.amount, self.currency, "amount")
        return self


class InvoiceCancelled(_Model):
    """The invoice no longer exists; money applied to it becomes unallocated credit."""

    invoice_id: Id
    cancelled_on: IsoDate | None = None
    reason: Text | None = None


class InvoiceDisputed(_Model):
    """The customer contests the invoice: it leaves the reminder ladder until resolved."""

    invoice_id: Id
    reason: Text
    opened_on: IsoDate | None = None


class InvoiceDisputeResolved(_Model):
    """The dispute is settled; the invoice returns to the ladder."""

    invoice_id: Id
    resolution: Text | None = None
    resolved_on: IsoDate | None = None


class PromiseToPayRecorded(_Model):
    """The customer promised to pay by a date; reminders wait until then."""

    promise_id: Id
    promised_date: IsoDate
    amount: Amount
    currency: Currency
    invoice_ids: list[Id] = Field(default_factory=list, max_length=1000)
    note: Text | None = None

    @model_validator(mode="after")
    def _rules(self) -> PromiseToPayRecorded:
        _check_precision(self.amount, self.currency, "amount")
        return self


class Instalment(_Model):
    due_date: IsoDate
    amount: Amount


class PaymentPlanAgreed(_Model):
    """Instalments that replace the due dates of the invoices they cover."""

    plan_id: Id
    currency: Currency
    invoice_ids: list[Id] = Field(min_length=1, max_length=1000)
    instalments: list[Instalment] = Field(min_length=1, max_length=120)

    @model_validator(mode="after")
    def _rules(self) -> PaymentPlanAgreed:
        for instalment in self.instalments:
            _check_precision(instalment.amount, self.currency, "instalment amount")
        dates = [i.due_date for i in self.instalments]
        if dates != sorted(dates) or len(set(dates)) != len(dates):
            raise ValueError("instalment due dates must be strictly increasing")
        return self


class CommandAcknowledged(_Model):
    """The ERP applied, or refused, a command relance sent it; command_id is the command's message_id."""

    model_config = ConfigDict(
        json_schema_extra={  # the rule below, for validators that read the schema
            "if": {"properties": {"status": {"const": "rejected"}}, "required": ["status"]},
            "then": {"required": ["reason"], "properties": {"reason": {"type": "string", "pattern": r"\S"}}},
        }
    )

    command_id: Id
    command: Literal["erp.credit_block", "erp.credit_unblock"]
    status: Literal["applied", "rejected"]
    reason: Text | None = None
    erp_reference: Id | None = None

    @model_validator(mode="after")
    def _rules(self) -> CommandAcknowledged:
        if self.status == "rejected" and not (self.reason or "").strip():
            raise ValueError("reason is required when status is rejected: say why the ERP refused the command")
        return self


DATA_MODELS: dict[str, type[_Model]] = {
    "customer.upserted": CustomerUpserted,
    "invoice.issued": InvoiceIssued,
    "payment.received": PaymentReceived,
    "invoice.due_date_passed": InvoiceDueDatePassed,
    "credit_note.issued": CreditNoteIssued,
    "invoice.cancelled": InvoiceCancelled,
    "invoice.disputed": InvoiceDisputed,
    "invoice.dispute_resolved": InvoiceDisputeResolved,
    "promise_to_pay.recorded": PromiseToPayRecorded,
    "payment_plan.agreed": PaymentPlanAgreed,
    "erp.command_acknowledged": CommandAcknowledged,
}
EVENT_TYPES = tuple(DATA_MODELS)


class Envelope(_Model):
    event_id: Id
    event_type: str
    tenant: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    customer_id: Id
    occurred_at: Instant
    data: dict[str, Any]
    correlation_id: Id | None = None
    causation_id: Id | None = None


@dataclass(frozen=True, slots=True)
class ErpEvent:
    """A validated ERP event, ready for the ledger."""

    event_id: str
    event_type: str
    tenant: str
    customer_id: str
    occurred_at: datetime
    data: _Model
    correlation_id: str | None = None
    causation_id: str | None = None

    def data_json(self) -> dict[str, Any]:
        """The normalised data as stored in the log (amounts as strings, dates ISO)."""
        return self.data.model_dump(mode="json", exclude_none=True)


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or prefix.rstrip(".") or "message"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{prefix}{where}: {message}" if error["loc"] else f"{where}: {message}")
    return "; ".join(parts)


def parse_event(body: bytes, max_bytes: int = 262144) -> ErpEvent:
    """Decode and validate one message body, or raise :class:`InvalidMessage` saying why."""
    if len(body) > max_bytes:
        raise InvalidMessage("oversize", f"message is {len(body)} bytes, the limit is {max_bytes}")
    try:
        raw = json.loads(body.decode("utf-8"), parse_float=_JsonFloat)
    except UnicodeDecodeError as exc:
        raise InvalidMessage("not_json", f"body is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidMessage("not_json", f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidMessage("schema", f"message must be a JSON object, got {type(raw).__name__}")
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise InvalidMessage("schema", _describe(exc)) from None
    model = DATA_MODELS.get(envelope.event_type)
    if model is None:
        raise InvalidMessage(
            "unknown_event_type",
            f"unknown event_type {envelope.event_type!r}; contract v{CONTRACT_VERSION} knows " + ", ".join(EVENT_TYPES),
        )
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as exc:
        raise InvalidMessage("schema", _describe(exc, "data.")) from None
    return ErpEvent(
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        tenant=envelope.tenant,
        customer_id=envelope.customer_id,
        occurred_at=envelope.occurred_at,
        data=data,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.causation_id,
    )


@dataclass(frozen=True, slots=True)
class _JsonFloat:
    """A JSON number with a fraction or an exponent, kept as written so the field's validator can refuse it by name."""

    text: str


def event_json_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema per event type: the envelope with its typed data."""
    schemas: dict[str, dict[str, Any]] = {}
    for event_type, model in DATA_MODELS.items():
        name = "".join(part.capitalize() for part in re.split(r"[._]", event_type)) + "Event"
        full = create_model(
            name,
            __base__=Envelope,
            event_type=(Literal[event_type], ...),  # type: ignore[valid-type,arg-type]
            data=(model, ...),
        )
        schema = full.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://relance.dev/contract/v{CONTRACT_VERSION}/{event_type}.json"
        schemas[event_type] = schema
    return schemas
