"""Commands relance publishes on the commands exchange: the message bodies, as models and JSON Schema.

The relay (:mod:`services.relay.worker`) publishes each outbox row's payload as the body, routing key = ``command``,
``message_id`` = ``command_id``. Receivers must accept fields they do not know (the models allow extra fields, so
relance can add some without a new contract version) and deduplicate on ``command_id``: delivery is at least once.
``erp.credit_block``, ``erp.credit_unblock`` and ``erp.collection_handover`` are for the ERP (which answers with
``erp.command_acknowledged``), and so are the commands of people's actions the ERP must know (a promise, a dispute
opened or resolved, a payment plan recorded by a person in relance; a credit limit a credit manager approved);
``notifier.send_reminder`` is internal, for relance's own notifier workers.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from shared.contracts import jsonio
from shared.contracts.erp import CONTRACT_VERSION, Currency, Id, IsoDate

_AMOUNT = re.compile(r"^-?[0-9]{1,15}(\.[0-9]{1,6})?$")


def _amount(value: Any) -> Any:
    # What the schema says, checked: a string of ASCII digits (pydantic alone would take numbers, "1E+3", " 12 ").
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise ValueError(f'must be a decimal string such as "1234.56", got {value!r}')
    return value


Amount = Annotated[
    Decimal,
    BeforeValidator(_amount),
    WithJsonSchema({"type": "string", "pattern": _AMOUNT.pattern, "examples": ["12500.00"]}),
]


class _Envelope(BaseModel):
    """What every command carries (:data:`shared.ledger.outbox.ENVELOPE`), then the causing event's data."""

    model_config = ConfigDict(extra="allow", frozen=True)

    command_id: Id = Field(description="Deterministic id of the command: deduplicate on it (also the message_id).")
    tenant: str = Field(min_length=1)
    customer_id: Id
    occurred_at: AwareDatetime = Field(description="The instant the decision was taken for (its as-of instant).")
    sequence: int = Field(ge=1, description="Grows with every event of the customer: a lower one is older.")


class _Command(_Envelope):
    block_id: Id = Field(description="The block episode; the unblock names the block it ends.")
    overdue: dict[Currency, Amount] = Field(description="Overdue amount per currency when the decision was taken.")
    policy: str | None = Field(default=None, description="Name of the dunning policy that decided.")
    policy_version: str | None = Field(default=None, description="SHA-256 of that policy's content.")


class CreditLimit(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: Amount
    currency: Currency


class CreditBlock(_Command):
    """Block the customer's credit: stop deliveries and new orders on account until the matching unblock."""

    command: Literal["erp.credit_block"]
    reason: Literal["level", "credit_limit"] = Field(
        description="level: a dunning level requires it; credit_limit: the overdue amount exceeds the credit limit."
    )
    credit_limit: CreditLimit | None = None


class CreditUnblock(_Command):
    """Lift the block ``block_id``: what justified it has cleared (payment, credit note, dispute resolved…)."""

    command: Literal["erp.credit_unblock"]
    reason: str = Field(description="Why the block ends, e.g. cleared.")


class Notice(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    level: str = Field(min_length=1, description="Key of the written level sent, e.g. formal_notice.")
    reminder_id: Id = Field(description="The reminder that sent it (its reference).")
    on: IsoDate = Field(description="The tenant-local day it was decided on.")


class ReminderLine(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    invoice_id: Id
    number: str = Field(min_length=1)
    issue_date: IsoDate
    due_date: IsoDate = Field(description="The due date the ladder counts from (an instalment's under a payment plan).")
    amount: Amount
    outstanding: Amount
    days_late: int = Field(ge=0, strict=True)
    interest: Amount = Field(description="Late interest owed on the invoice as recorded (0 when none).")
    fee: Amount = Field(description="Fixed recovery fee charged on the invoice (0 when none).")
    fee_currency: Currency | None = Field(
        default=None, description="The fee's currency when not the invoice's (French law: EUR 40 on any invoice)."
    )
    level: str | None = Field(default=None, description="The level the invoice is addressed at in this message.")
    notices: list[Notice] | None = Field(
        default=None, description="The written levels already sent for the invoice, oldest first."
    )


class ReminderTotals(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    outstanding: Amount
    interest: Amount
    fees: Amount
    claims: Amount | None = Field(default=None, description="The claims' sum in the reminder's currency, if any.")


class ClaimLine(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    invoice_id: Id
    number: str = Field(min_length=1)
    kind: Literal["interest", "indemnity"] = Field(description="Late interest, or the fixed recovery indemnity.")
    currency: Currency = Field(description="The claim's own currency (French law: EUR 40 on any invoice).")
    amount: Amount = Field(description="What is still owed on it (never what was paid or waived).")
    paid_on: IsoDate | None = Field(default=None, description="The day the invoice's principal was settled.")
    days_late: int | None = Field(default=None, ge=0, strict=True, description="Days after its due date.")


class AppliedRate(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    from_date: IsoDate = Field(description="The first day the rate applied.")
    reference: Decimal | None = Field(default=None, description="The reference rate (ECB, Bank of England), percent.")
    margin: Decimal | None = Field(default=None, description="The points added to the reference rate.")
    rate: Decimal = Field(description="The annual rate, percent (an agreed rate has no reference nor margin).")


class CollectionHandover(_Envelope):
    """Hand these invoices over to the collection agency or to litigation: relance's ladder has ended for them."""

    command: Literal["erp.collection_handover"]
    handover_id: Id = Field(description="Deterministic id of the hand-over (currency and invoices).")
    currency: Currency
    invoice_ids: list[Id] = Field(description="The invoices handed over.")
    lines: list[ReminderLine] = Field(description="The file's figures per invoice when it was handed over.")
    totals: ReminderTotals
    policy: str | None = Field(default=None, description="Name of the dunning policy that decided.")
    policy_version: str | None = Field(default=None, description="SHA-256 of that policy's content.")
    as_of: AwareDatetime | None = Field(default=None, description="The instant the engine decided at.")


class SendReminder(_Envelope):
    """Internal: send the customer the reminder the engine decided (its reminder.requested event)."""

    command: Literal["notifier.send_reminder"]
    reminder_id: Id = Field(description="Deterministic id of the reminder (currency, level and invoices).")
    level: str = Field(
        min_length=1,
        description=(
            "Key of the policy level the reminder speaks at, e.g. reminder_1; `claims` for a claims statement, which"
            " is no level of the ladder: no lines, only the claims still owed on invoices already paid, asked once."
        ),
    )
    channel: Literal["email", "letter"]
    copy_channels: list[str] = Field(description="Other channels the level also uses, e.g. email for a letter.")
    template: str = Field(min_length=1, description="Template name of the level.")
    language: str = Field(description="Language of the customer (else of the policy), e.g. fr.")
    currency: Currency
    invoice_ids: list[Id] = Field(description="The invoices the reminder demands (its lines).")
    lines: list[ReminderLine] = Field(description="What the reminder demands: the invoices at its level.")
    totals: ReminderTotals = Field(description="Sums over lines only.")
    also: list[ReminderLine] | None = Field(
        default=None,
        description="Other overdue invoices of the currency, each at its own level, listed but not demanded.",
    )
    policy: str | None = Field(default=None, description="Name of the dunning policy that decided.")
    policy_version: str | None = Field(default=None, description="SHA-256 of that policy's content.")
    as_of: AwareDatetime | None = Field(default=None, description="The instant the engine decided at.")
    law: Literal["fr", "eu", "uk"] | None = Field(
        default=None,
        description="The law the interest and fixed sums follow (fr, eu, uk); absent before it was stated.",
    )
    rates: list[AppliedRate] | None = Field(
        default=None, description="The annual rates the interest stated was computed at, oldest first."
    )
    claims: list[ClaimLine] | None = Field(
        default=None,
        description="Claims (late interest, fixed indemnity) still owed on invoices whose principal is settled.",
    )


# ---------------------------------------------------------------------------------------- people's actions
# What a person recorded in relance (the workspace, the API, the CLI) that the ERP must know. The ERP's own event
# types recorded by a person cause the first four (never the ERP's own events: nothing is echoed back); the fifth
# comes from a credit manager's approval. Each names the person's login (``author``).


class _Action(_Envelope):
    author: str = Field(min_length=1, description="The login of the person who recorded it in relance.")


class PromiseToPay(_Action):
    """The customer promised a collector to pay by a date: record the promise (relance's reminders wait for it)."""

    command: Literal["erp.promise_to_pay"]
    promise_id: Id = Field(description="relance's id of the promise (deterministic).")
    promised_date: IsoDate
    amount: Amount
    currency: Currency
    invoice_ids: list[Id] = Field(description="The invoices the promise covers (empty: the account).")
    note: str | None = None


class DisputeOpened(_Action):
    """The customer disputes the invoice, a collector recorded it: the invoice is out of the reminders."""

    command: Literal["erp.dispute_opened"]
    invoice_id: Id
    reason: str = Field(description="What the customer contests, in the collector's words.")
    opened_on: IsoDate | None = None


class DisputeResolved(_Action):
    """A collector recorded the dispute of the invoice settled: the invoice returns to the ladder."""

    command: Literal["erp.dispute_resolved"]
    invoice_id: Id
    resolution: str | None = None
    resolved_on: IsoDate | None = None


class PlanInstalment(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    due_date: IsoDate
    amount: Amount


class PaymentPlan(_Action):
    """A collector agreed a payment plan with the customer: these instalments replace the invoices' due dates."""

    command: Literal["erp.payment_plan"]
    plan_id: Id = Field(description="relance's id of the plan (deterministic).")
    currency: Currency
    invoice_ids: list[Id] = Field(min_length=1, description="The invoices the plan covers.")
    instalments: list[PlanInstalment] = Field(min_length=1, description="Due dates strictly increasing.")


class CreditLimitChange(_Action):
    """A credit manager approved a new credit limit: apply it, then say so with the customer's customer.upserted."""

    command: Literal["erp.credit_limit_change"]
    proposal_id: Id = Field(description="relance's id of the proposal approved.")
    currency: Currency
    amount: Amount = Field(description="The new credit limit.")
    note: str | None = None


ACTION_COMMAND_MODELS: dict[str, type[_Envelope]] = {
    "erp.promise_to_pay": PromiseToPay,
    "erp.dispute_opened": DisputeOpened,
    "erp.dispute_resolved": DisputeResolved,
    "erp.payment_plan": PaymentPlan,
    "erp.credit_limit_change": CreditLimitChange,
}
# ------------------------------------------------------------------------------------ end of people's actions

COMMAND_MODELS: dict[str, type[_Envelope]] = {
    "erp.credit_block": CreditBlock,
    "erp.credit_unblock": CreditUnblock,
    "erp.collection_handover": CollectionHandover,
    **ACTION_COMMAND_MODELS,
}
# Commands for relance's own services, published on the same exchange; not part of what the ERP receives.
INTERNAL_COMMAND_MODELS: dict[str, type[_Envelope]] = {"notifier.send_reminder": SendReminder}


def command_json_schemas() -> dict[str, dict[str, Any]]:
    schemas = {}
    for kind, model in {**COMMAND_MODELS, **INTERNAL_COMMAND_MODELS}.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://relance.dev/contract/v{CONTRACT_VERSION}/{kind}.json"
        schemas[kind] = schema
    return schemas


ErpCommand = (
    CreditBlock
    | CreditUnblock
    | CollectionHandover
    | PromiseToPay
    | DisputeOpened
    | DisputeResolved
    | PaymentPlan
    | CreditLimitChange
)


def parse_command(payload: dict[str, Any] | bytes) -> ErpCommand:
    """A command body as the ERP receives it, checked (for tests and for ERP-side adapters written in Python).

    Given the body's bytes, it is decoded with relance's strict decoder: a duplicated key raises
    :class:`~shared.contracts.jsonio.JsonRefused` rather than one of the two values being kept silently.
    """
    if isinstance(payload, bytes):
        decoded = jsonio.loads(payload)
        if not isinstance(decoded, dict):
            raise jsonio.JsonRefused("schema", f"a command must be a JSON object, got {type(decoded).__name__}")
        payload = decoded
    model = COMMAND_MODELS[payload["command"]]
    parsed = model.model_validate(payload)
    assert isinstance(parsed, ErpCommand)
    return parsed
