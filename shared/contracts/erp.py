"""The ERP message contract, version 1: what an ERP publishes to the ``relance.events`` exchange.

Every message is a UTF-8 JSON envelope (event_id, event_type, tenant, customer_id, occurred_at, data). Money is a
decimal string, never a JSON number; currencies are ISO 4217 codes; dates are ISO 8601. The models below are the
single source of the contract: the JSON Schema files and the AsyncAPI document are generated from them.

One module on purpose: it is the published contract, and its value types, models and parser change together
with its version, so a reader reviewing a contract change sees all of it in one file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from typing import Annotated, Any, Literal, TypeVar

from babel.core import get_global
from babel.numbers import get_currency_precision, list_currencies
from email_validator import EmailNotValidError, validate_email
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

from shared.contracts import jsonio

CONTRACT_VERSION = 1

# Bounds every date and instant of the contract must respect: wide enough for any receivable an ERP still holds or
# plans (a 30-year payment plan, an invoice from 1990), narrow enough that the calendar, the interest computation and
# the conversion of any time zone to UTC never leave Python's range (a due date of 9999-12-31 used to crash
# `relance clock tick`).
DATE_MIN = date(1900, 1, 1)
DATE_MAX = date(2199, 12, 31)
INSTANT_MIN = datetime(1900, 1, 1, tzinfo=UTC)
INSTANT_MAX = datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
MAX_AHEAD_OF_RECEPTION = timedelta(hours=24)
"""How far ``occurred_at`` may be ahead of the moment relance received the message: more is a skewed ERP clock,
whose events would otherwise pin a customer's profile or a dispute for good (a later correction would look older)."""

AMOUNT_DIGITS = 15
AMOUNT_DECIMALS = 6
"""Money: at most 15 digits before the point and 6 after, ASCII digits only. The ledger keeps numeric(24, 6), so a
sum of a billion such amounts still fits."""

# Patterns are written once and serve both the models (Python ``re``, ASCII digits only) and the published JSON
# Schemas (ECMA-262). Every string pattern of the schemas starts with _NO_CONTROLS, which also keeps a Python
# validator's "$" (that matches before a final newline) from letting "1.00\n" through.
_CONTROLS = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
_NO_CONTROLS = rf"(?![\s\S]*[{_CONTROLS}])"
_NO_ENCODED_WORD = r"(?![\s\S]*=\?[^?]*\?[^?]*\?[\s\S]*\?=)"
_AMOUNT_CORE = rf"[0-9]{{1,{AMOUNT_DIGITS}}}(\.[0-9]{{1,{AMOUNT_DECIMALS}}})?"
_DATE_CORE = r"(19|20|21)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME_CORE = r"[Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?"
_ZONE_CORE = r"([Zz]|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])"
_INSTANT_CORE = _DATE_CORE + _TIME_CORE + _ZONE_CORE
_EMAIL_ATOM = rf'[^\s@<>()\[\],;:"\\.{_CONTROLS}]+'
_EMAIL_CORE = rf"(?=[^@]{{1,64}}@){_EMAIL_ATOM}(\.{_EMAIL_ATOM})*@{_EMAIL_ATOM}(\.{_EMAIL_ATOM})+"

_AMOUNT = re.compile(_AMOUNT_CORE)
_CONTROL = re.compile(rf"[{_CONTROLS}\ud800-\udfff]")
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[^?]*\?.*\?=", re.DOTALL)
_ISO_DATE = re.compile(_DATE_CORE)
_ISO_DATETIME = re.compile(_INSTANT_CORE)
_ISO_DATETIME_NAIVE = re.compile(_DATE_CORE + _TIME_CORE)
TEXT_PATTERN = f"^{_NO_CONTROLS}{_NO_ENCODED_WORD}"
"""What every text field of the contract matches: no control character, no RFC 2047 encoded word."""


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


def _shown(value: Any) -> str:
    """A refused value as a reason quotes it: escaped, and short enough for a dead-letter header."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _parse_amount(value: Any) -> Decimal:
    if isinstance(value, _JsonFloat):
        raise ValueError(f'must be a decimal string such as "{value.text[:40]}", not a JSON number')
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f'must be a decimal string such as "1234.56", not a JSON {type(value).__name__}')
    if not _AMOUNT.fullmatch(value):  # not match: "$" also matches before a trailing newline
        raise ValueError(
            f'must be a non-negative decimal string of ASCII digits such as "1234.56", at most {AMOUNT_DIGITS} '
            f"digits before the point and {AMOUNT_DECIMALS} after, got {_shown(value)}"
        )
    return Decimal(value)


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _currency(value: Any) -> str:
    if not isinstance(value, str) or value not in _currencies():
        raise ValueError(f"must be the ISO 4217 code of a currency in use, such as EUR, got {_shown(value)}")
    return value


def _text(value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(
            f"must not contain control characters (line breaks, tabs, NUL, U+0080 to U+009F, U+2028, U+2029) "
            f"or lone surrogates: U+{ord(found.group()):04X} at position {found.start()}"
        )
    if _ENCODED_WORD.search(value):  # decoded by mail readers (and some Python versions) into header text
        raise ValueError("must not contain an RFC 2047 encoded word (=?charset?encoding?text?=)")
    return value


def _iso_date(value: Any) -> Any:
    # pydantic alone also takes Unix timestamps (1700006400, "1700006400") for dates: the contract says ISO 8601.
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError(
            f"must be an ISO 8601 date string such as 2026-11-02, between {DATE_MIN} and {DATE_MAX}, "
            f"got {_shown(value)}"
        )
    return value


def _iso_datetime(value: Any) -> Any:
    if isinstance(value, str) and _ISO_DATETIME_NAIVE.fullmatch(value):
        raise ValueError(
            f"must state its time zone (Z or an offset such as +01:00): a timezone-less instant is ambiguous, got "
            f"{_shown(value)}"
        )
    if not isinstance(value, str) or not _ISO_DATETIME.fullmatch(value):
        raise ValueError(
            "must be an ISO 8601 date-time string with a time zone such as 2026-11-02T09:15:00Z, between "
            f"{DATE_MIN} and {DATE_MAX}, got {_shown(value)}"
        )
    return value


def _instant_bounds(value: datetime) -> datetime:
    # The pattern bounds the local year, so converting to UTC cannot overflow; the bounds themselves are in UTC.
    if not INSTANT_MIN <= value.astimezone(UTC) <= INSTANT_MAX:
        raise ValueError(f"must be between {INSTANT_MIN:%Y-%m-%dT%H:%M:%SZ} and {INSTANT_MAX:%Y-%m-%dT%H:%M:%SZ}")
    return value


def _email(value: str) -> str:
    _text(value)
    problem = _email_problem(value)
    if problem:
        raise ValueError(f"not a valid e-mail address ({problem}): {_shown(value)}")
    return value


@lru_cache(maxsize=65536)
def _email_problem(value: str) -> str | None:
    """What email-validator finds wrong with an address (about 0.2 ms each): cached, since a customer's addresses
    come again with every upsert of it."""
    try:
        # allow_smtputf8=False: an internationalised domain is fine (the notifier sends it as xn--…), a non-ASCII
        # local part would need SMTPUTF8, which the notifier does not use, so it is refused here rather than later.
        validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def _string_schema(pattern: str, description: str, **extra: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", **extra, "pattern": pattern, "description": description})


_AMOUNT_SCHEMA = _string_schema(
    f"^{_NO_CONTROLS}(?!0*(\\.0*)?$){_AMOUNT_CORE}$",
    f"Decimal string of ASCII digits, greater than zero, at most {AMOUNT_DIGITS} digits before the point and "
    f"{AMOUNT_DECIMALS} after, and no more decimals than the currency's minor unit (EUR 2, JPY 0, KWD 3; relance "
    "checks the last two rules, which JSON Schema cannot relate to the currency).",
    examples=["1234.56"],
)
_DATE_DESCRIPTION = f"ISO 8601 date between {DATE_MIN} and {DATE_MAX}."

Amount = Annotated[Decimal, BeforeValidator(_parse_amount), AfterValidator(_positive), _AMOUNT_SCHEMA]
Currency = Annotated[
    str,
    BeforeValidator(_currency),
    _string_schema(f"^{_NO_CONTROLS}[A-Z]{{3}}$", "ISO 4217 code of a currency in use (not FRF, not XXX)."),
]
Id = Annotated[
    str,
    Field(min_length=1, max_length=128),
    AfterValidator(_text),
    _string_schema(TEXT_PATTERN, "No control character, no RFC 2047 encoded word.", minLength=1, maxLength=128),
]
Text = Annotated[
    str,
    Field(max_length=2000),
    AfterValidator(_text),
    _string_schema(TEXT_PATTERN, "No control character, no RFC 2047 encoded word.", maxLength=2000),
]
Email = Annotated[
    str,
    Field(max_length=320),
    AfterValidator(_email),
    _string_schema(
        f"^{_NO_CONTROLS}{_EMAIL_CORE}$",
        "One bare address local@domain (no display name, no quotes, no IP literal), internationalised domains "
        "accepted; relance checks it with the email-validator library.",
        format="idn-email",
        maxLength=320,
    ),
]
IsoDate = Annotated[
    date,
    BeforeValidator(_iso_date),
    _string_schema(f"^{_NO_CONTROLS}{_DATE_CORE}$", _DATE_DESCRIPTION, format="date"),
]
Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_datetime),
    AfterValidator(_instant_bounds),
    _string_schema(
        f"^{_NO_CONTROLS}{_INSTANT_CORE}$",
        "ISO 8601 date-time with a time zone (Z or ±hh:mm), between 1900-01-01T00:00:00Z and 2199-12-31T23:59:59Z.",
        format="date-time",
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


_M = TypeVar("_M", bound=_Model)


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


POSTAL_LINES_MAX = 4
POSTAL_LINE_MAX = 100


@cache
def _countries() -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes of countries and territories (not EU, UN, ZZ nor the private-use codes)."""
    codes = get_global("territory_currencies").keys() | get_global("territory_languages").keys()
    return frozenset(c for c in codes if len(c) == 2 and c.isalpha() and c.isupper()) - {"EU", "EZ", "UN", "ZZ", "QO"}


def _country(value: Any) -> str:
    if not isinstance(value, str) or value not in _countries():
        raise ValueError(f"must be the ISO 3166-1 alpha-2 code of a country, such as FR or GB, got {_shown(value)}")
    return value


PostalLine = Annotated[
    str,
    Field(min_length=1, max_length=POSTAL_LINE_MAX),
    AfterValidator(_text),
    _string_schema(
        TEXT_PATTERN,
        "One line of the address as the envelope's window shows it: no control character, no RFC 2047 encoded word.",
        minLength=1,
        maxLength=POSTAL_LINE_MAX,
    ),
]
PostalCode = Annotated[
    str,
    Field(min_length=1, max_length=20),
    AfterValidator(_text),
    _string_schema(
        TEXT_PATTERN, "The postal code as the country writes it (75001, SW1A 1AA).", minLength=1, maxLength=20
    ),
]
City = Annotated[
    str,
    Field(min_length=1, max_length=POSTAL_LINE_MAX),
    AfterValidator(_text),
    _string_schema(
        TEXT_PATTERN, "No control character, no RFC 2047 encoded word.", minLength=1, maxLength=POSTAL_LINE_MAX
    ),
]
Country = Annotated[
    str,
    BeforeValidator(_country),
    _string_schema(f"^{_NO_CONTROLS}[A-Z]{{2}}$", "ISO 3166-1 alpha-2 code of the country, such as FR or GB."),
]


class PostalAddress(_Model):
    """Where relance's letters go (the formal notice, a hand-over): printed in the window of a DL/C5 envelope."""

    lines: list[PostalLine] = Field(
        min_length=1,
        max_length=POSTAL_LINES_MAX,
        description=f"1 to {POSTAL_LINES_MAX} lines of up to {POSTAL_LINE_MAX} characters: the addressee's name, a "
        "department or a person, the street; the postal code, city and country apart.",
    )
    postal_code: PostalCode
    city: City
    country: Country


class CustomerUpserted(_Model):
    """The customer's master data: name, contacts, language, segment or policy, credit limit, postal address."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=300),
        AfterValidator(_text),
        _string_schema(
            TEXT_PATTERN,
            "Shown in reminders' Subject: no control character, no RFC 2047 encoded word.",
            minLength=1,
            maxLength=300,
        ),
    ]
    emails: list[Email] = Field(default_factory=list, max_length=20)
    language: Annotated[
        str,
        Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$"),
        _string_schema(f"^{_NO_CONTROLS}[a-z]{{2}}(-[A-Z]{{2}})?$", "Language code such as fr or en-GB."),
    ] = "en"
    segment: Id | None = None
    policy: Id | None = None
    credit_limit: Money | None = None
    contact_name: Text | None = None
    postal_address: PostalAddress | None = Field(
        default=None, description="Where letters go; without it a letter is not printed and a task asks for it."
    )


class InvoiceIssued(_Model):
    """An invoice sent to the customer; amount includes tax."""

    invoice_id: Id
    number: Id
    issue_date: IsoDate
    due_date: IsoDate = Field(
        description=f"{_DATE_DESCRIPTION} On or after issue_date (relance checks it: JSON Schema cannot compare dates)."
    )
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
    allocations: list[Allocation] = Field(
        default_factory=list,
        max_length=1000,
        description=(
            "How the payment is applied; without it, to the oldest open invoices first. The amounts add up to at most "
            "the payment's amount and each invoice appears once (relance checks both: JSON Schema cannot add up "
            "amounts or compare members of an array)."
        ),
    )

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
    instalments: list[Instalment] = Field(
        min_length=1,
        max_length=120,
        description="Due dates strictly increasing (relance checks it: JSON Schema cannot compare dates).",
    )

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
    command: Literal[
        "erp.credit_block",
        "erp.credit_unblock",
        "erp.collection_handover",
        "erp.promise_to_pay",
        "erp.dispute_opened",
        "erp.dispute_resolved",
        "erp.payment_plan",
        "erp.credit_limit_change",
    ]
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
    tenant: Annotated[
        str,
        Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$"),
        _string_schema(f"^{_NO_CONTROLS}[a-z0-9][a-z0-9._-]{{0,63}}$", "The tenant: lowercase, up to 64 characters."),
    ]
    customer_id: Id
    occurred_at: Instant = Field(
        description=(
            "When it happened, with a time zone, between 1900-01-01T00:00:00Z and 2199-12-31T23:59:59Z, and at most "
            "24 hours after relance receives the message (a later one is refused as business_rule: check the ERP's "
            "clock)."
        )
    )
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


def parse_event(body: bytes, max_bytes: int = 262144, *, received_at: datetime | None = None) -> ErpEvent:
    """Decode and validate one message body, or raise :class:`InvalidMessage` saying why.

    ``received_at`` is when relance received the message: an ``occurred_at`` more than
    :data:`MAX_AHEAD_OF_RECEPTION` after it is refused as ``business_rule``.
    """
    if len(body) > max_bytes:
        raise InvalidMessage("oversize", f"message is {len(body)} bytes, the limit is {max_bytes}")
    try:
        raw = jsonio.loads(body, parse_float=_JsonFloat)
    except jsonio.JsonRefused as exc:
        raise InvalidMessage(exc.kind, exc.reason) from None
    if not isinstance(raw, dict):
        raise InvalidMessage("schema", f"message must be a JSON object, got {type(raw).__name__}")
    envelope = _validated(Envelope, raw, "")
    model = DATA_MODELS.get(envelope.event_type)
    if model is None:
        raise InvalidMessage(
            "unknown_event_type",
            f"unknown event_type {_shown(envelope.event_type)}; contract v{CONTRACT_VERSION} knows "
            + ", ".join(EVENT_TYPES),
        )
    data = _validated(model, envelope.data, "data.")
    if received_at is not None and envelope.occurred_at - received_at > MAX_AHEAD_OF_RECEPTION:
        ahead = envelope.occurred_at - received_at
        raise InvalidMessage(
            "business_rule",
            f"occurred_at {envelope.occurred_at.isoformat()} is {_hours(ahead)} after relance received the message "
            f"({received_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}); more than "
            f"{_hours(MAX_AHEAD_OF_RECEPTION)} ahead means a skewed ERP clock: correct it and publish again",
        )
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


def _validated(model: type[_M], raw: Any, prefix: str) -> _M:
    """The model of ``raw``; any failure of a conversion is the message's fault, reported as ``schema``."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidMessage("schema", _describe(exc, prefix)) from None
    except (ArithmeticError, TypeError, ValueError) as exc:  # OverflowError included: never relance's own failure
        raise InvalidMessage("schema", f"{prefix.rstrip('.') or 'message'}: {type(exc).__name__}: {exc}") from None


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"


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
