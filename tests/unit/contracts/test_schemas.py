"""The published JSON Schemas, read by a standard validator (jsonschema), say what relance accepts.

An ERP developer validates messages against ``shared/contracts/schema/*.json`` before publishing: every example must
pass, and every message relance refuses for a rule a schema can express must fail there too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from shared.contracts.erp import InvalidMessage, parse_event
from shared.contracts.examples import COMMAND_EXAMPLES, EXAMPLES

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "schema"


def validator(kind: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{kind}.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("kind", sorted({**EXAMPLES, **COMMAND_EXAMPLES}))
def test_every_example_is_valid_against_its_published_schema(kind: str) -> None:
    example = {**EXAMPLES, **COMMAND_EXAMPLES}[kind]
    errors = [error.message for error in validator(kind).iter_errors(example)]
    assert errors == []


Change = Callable[[dict[str, Any]], None]


def data(**changes: Any) -> Change:
    return lambda message: message["data"].update(changes)


def envelope(**changes: Any) -> Change:
    return lambda message: message.update(changes)


INVALID: dict[str, tuple[str, Change]] = {
    "amount in Arabic-Indic digits": ("invoice.issued", data(amount="١٢٣.٤٥")),
    "amount in full-width digits": ("invoice.issued", data(amount="\uff11\uff12\uff13")),
    "amount with a superscript": ("invoice.issued", data(amount="12³")),
    "amount of zero": ("invoice.issued", data(amount="0.00")),
    "amount with 16 digits": ("invoice.issued", data(amount="1" * 16)),
    "amount with a trailing newline": ("invoice.issued", data(amount="1.00\n")),
    "amount as a JSON number": ("invoice.issued", data(amount=12)),
    "negative amount": ("payment.received", data(amount="-5.00", allocations=[])),
    "invoice number with U+2028": ("invoice.issued", data(number="F-1\u2028Bcc: x@y.example")),
    "invoice number with NEL": ("invoice.issued", data(number="F-1\x85")),
    "invoice number with an encoded word": ("invoice.issued", data(number="=?utf-8?q?=0D=0ABcc:_x@y.example?=")),
    "customer name with an encoded word": ("customer.upserted", data(name="Acme =?utf-8?b?QmNjOg==?=")),
    "customer name with a tab": ("customer.upserted", data(name="Acme\tSAS")),
    "address with two dots": ("customer.upserted", data(emails=["a@b..com"])),
    "address with a display name": ("customer.upserted", data(emails=["Claire <compta@martin.fr>"])),
    "address with a newline": ("customer.upserted", data(emails=["compta@martin.fr\nBcc: x@y.example"])),
    "address without a domain dot": ("customer.upserted", data(emails=["compta@localhost"])),
    "due date in 9999": ("invoice.issued", data(due_date="9999-12-31")),
    "issue date in year 1": ("invoice.issued", data(issue_date="0001-01-01")),
    "date with month 13": ("invoice.issued", data(due_date="2026-13-01")),
    "date as a Unix timestamp": ("invoice.issued", data(due_date="1700006400")),
    "instant without a time zone": ("invoice.issued", envelope(occurred_at="2026-11-02T09:15:00")),
    "instant overflowing in UTC": ("invoice.issued", envelope(occurred_at="9999-12-31T23:59:59-01:00")),
    "instant in year 1": ("invoice.issued", envelope(occurred_at="0001-01-01T00:00:00+01:00")),
    "currency with a newline": ("invoice.issued", data(currency="EUR\n")),
    "tenant in capitals": ("invoice.issued", envelope(tenant="ACME")),
    "event id with a control": ("invoice.issued", envelope(event_id="E-1\x00")),
    "unknown data field": ("invoice.issued", data(amount_ht="1000.00")),
    "instalment date out of range": (
        "payment_plan.agreed",
        data(instalments=[{"due_date": "2200-01-01", "amount": "500.00"}]),
    ),
    "rejection without a reason": ("erp.command_acknowledged", data(status="rejected")),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_a_message_relance_refuses_fails_its_published_schema_too(case: str) -> None:
    # Given a message broken in a way a JSON Schema can express
    kind, change = INVALID[case]
    message = copy.deepcopy(EXAMPLES[kind])
    change(message)
    # Then relance refuses it
    with pytest.raises(InvalidMessage):
        parse_event(json.dumps(message).encode())
    # And so does a standard validator reading the published schema
    assert list(validator(kind).iter_errors(message)), f"the schema of {kind} accepts: {case}"


@pytest.mark.parametrize(
    ("kind", "where", "words"),
    [
        ("payment.received", ("properties", "allocations"), "add up to at most"),
        ("invoice.issued", ("properties", "due_date"), "On or after issue_date"),
        ("payment_plan.agreed", ("properties", "instalments"), "strictly increasing"),
        ("invoice.issued", ("properties", "occurred_at"), "24 hours"),
    ],
)
def test_a_rule_a_schema_cannot_express_is_stated_in_its_description(
    kind: str, where: tuple[str, str], words: str
) -> None:
    schema = json.loads((SCHEMA_DIR / f"{kind}.json").read_text(encoding="utf-8"))
    node = schema if "occurred_at" in where else schema["$defs"][_data_model(schema)]
    for key in where:
        node = node[key]
    assert words in node["description"]


def _data_model(schema: dict[str, Any]) -> str:
    return str(schema["properties"]["data"]["$ref"]).rsplit("/", 1)[1]
