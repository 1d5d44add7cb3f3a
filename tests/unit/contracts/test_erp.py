"""The ERP contract v1 at the door: what parses, what is refused, and that every refusal says which field is wrong."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from shared.contracts.erp import EVENT_TYPES, InvalidMessage, parse_event
from shared.contracts.examples import EXAMPLES


def message(event_type: str = "invoice.issued", **data_changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(EXAMPLES[event_type])
    raw["data"].update(data_changes)
    return raw


def encode(raw: dict[str, Any]) -> bytes:
    return json.dumps(raw, ensure_ascii=False).encode("utf-8")


def refusal(body: bytes, **kwargs: Any) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        parse_event(body, **kwargs)
    return caught.value


# ---------------------------------------------------------------------------------------------------- accepted
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_a_valid_message_of_every_event_type_parses(event_type: str) -> None:
    # Given the documented example of the event type
    raw = EXAMPLES[event_type]
    # When it is parsed
    event = parse_event(encode(raw))
    # Then the envelope is kept and the data normalised without losing anything
    assert (event.event_id, event.event_type, event.tenant, event.customer_id) == (
        raw["event_id"],
        event_type,
        raw["tenant"],
        raw["customer_id"],
    )
    assert event.occurred_at.utcoffset() is not None
    assert event.data_json() == raw["data"]


def test_amounts_are_kept_as_exact_decimals() -> None:
    # Given an amount that a float cannot represent exactly
    event = parse_event(encode(message(amount="0.10", currency="EUR")))
    # Then the model holds the exact Decimal and the stored data the same string
    assert event.data.amount == Decimal("0.10")  # type: ignore[attr-defined]
    assert event.data_json()["amount"] == "0.10"


def test_an_offset_timestamp_is_understood_as_the_same_instant_in_utc() -> None:
    raw = copy.deepcopy(EXAMPLES["invoice.issued"])
    raw["occurred_at"] = "2026-11-02T10:15:00+01:00"
    event = parse_event(encode(raw))
    assert event.occurred_at.astimezone(UTC).isoformat() == "2026-11-02T09:15:00+00:00"


@pytest.mark.parametrize(("currency", "amount"), [("JPY", "1500"), ("KWD", "12.345"), ("EUR", "12.3"), ("EUR", "12")])
def test_an_amount_within_the_currency_precision_is_accepted(currency: str, amount: str) -> None:
    event = parse_event(encode(message(currency=currency, amount=amount)))
    assert event.data_json()["amount"] == amount


# ---------------------------------------------------------------------------------------------------- money
@pytest.mark.parametrize(
    ("amount_json", "expected"),
    [
        ("1234.56", "decimal string"),  # a JSON float
        ("1234", "decimal string"),  # a JSON integer
        ("1e3", "decimal string"),  # a JSON number in exponent form
        ('"1e3"', "decimal string"),
        ('"-12.00"', "decimal string"),
        ('"12,50"', "decimal string"),
        ('" 12.50"', "decimal string"),
        ('"12.50\\n"', "decimal string"),
        ('"NaN"', "decimal string"),
        ('""', "decimal string"),
        ('"0.00"', "greater than zero"),
        ("true", "decimal string"),
        ("null", "decimal string"),
    ],
)
def test_an_amount_that_is_not_a_positive_decimal_string_is_refused_naming_the_field(
    amount_json: str, expected: str
) -> None:
    # Given an invoice whose amount is written as something other than a decimal string
    text = encode(message()).decode().replace('"amount": "1234.56"', f'"amount": {amount_json}')
    assert amount_json in text
    # When it is parsed, Then it is refused as a schema error that names the amount field
    error = refusal(text.encode())
    assert error.kind == "schema"
    assert "amount" in error.reason, error.reason
    assert expected in error.reason, error.reason


@pytest.mark.parametrize(
    ("currency", "amount", "places"),
    [("JPY", "1500.5", 0), ("EUR", "12.345", 2), ("KWD", "12.3456", 3), ("EUR", "0.001", 2)],
)
def test_more_decimals_than_the_currency_allows_is_refused(currency: str, amount: str, places: int) -> None:
    error = refusal(encode(message(currency=currency, amount=amount)))
    assert error.kind == "schema"
    assert "amount" in error.reason and currency in error.reason and f"({places})" in error.reason, error.reason


def test_an_allocation_with_too_many_decimals_is_refused() -> None:
    raw = message("payment.received", allocations=[{"invoice_id": "INV-1", "amount": "10.001"}])
    error = refusal(encode(raw))
    assert "allocation amount" in error.reason, error.reason


def test_allocations_adding_up_to_more_than_the_payment_are_refused() -> None:
    raw = message(
        "payment.received",
        amount="100.00",
        allocations=[{"invoice_id": "INV-1", "amount": "60.00"}, {"invoice_id": "INV-2", "amount": "40.01"}],
    )
    error = refusal(encode(raw))
    assert "allocations" in error.reason, error.reason


@pytest.mark.parametrize("currency", ["EURO", "eur", "ABC", "", "€", 978, None, "FRF", "DEM", "XXX", "XTS"])
def test_an_unknown_currency_is_refused_naming_the_field(currency: Any) -> None:
    error = refusal(encode(message(currency=currency)))
    assert error.kind == "schema"
    assert "data.currency" in error.reason and "ISO 4217" in error.reason, error.reason


# ---------------------------------------------------------------------------------------------------- dates
@pytest.mark.parametrize(
    "value",
    ["02/11/2026", "2026-13-01", "2026-02-30", "Nov 2, 2026", "", "yesterday", 1700006400, "1700006400"],
)
def test_a_date_that_is_not_an_iso_8601_date_is_refused_naming_the_field(value: Any) -> None:
    error = refusal(encode(message(issue_date=value)))
    assert error.kind == "schema"
    assert "data.issue_date" in error.reason, error.reason


@pytest.mark.parametrize(
    "value", ["02/11/2026 09:15", "2026-11-02T25:00:00Z", "tomorrow", 1793610000, "1793610000", "2026-11-02"]
)
def test_an_occurred_at_that_is_not_an_iso_8601_instant_is_refused(value: Any) -> None:
    raw = copy.deepcopy(EXAMPLES["invoice.issued"])
    raw["occurred_at"] = value
    error = refusal(encode(raw))
    assert error.kind == "schema"
    assert "occurred_at" in error.reason, error.reason


def test_a_naive_occurred_at_is_refused_because_its_instant_is_ambiguous() -> None:
    raw = copy.deepcopy(EXAMPLES["invoice.issued"])
    raw["occurred_at"] = "2026-11-02T09:15:00"
    error = refusal(encode(raw))
    assert "occurred_at" in error.reason and "timezone" in error.reason, error.reason


def test_a_due_date_before_the_issue_date_is_refused() -> None:
    error = refusal(encode(message(issue_date="2026-11-02", due_date="2026-11-01")))
    assert "due_date" in error.reason and "issue_date" in error.reason, error.reason


# ---------------------------------------------------------------------------------------------------- shape
@pytest.mark.parametrize("field", ["event_id", "event_type", "tenant", "customer_id", "occurred_at", "data"])
def test_a_missing_envelope_field_is_refused_naming_it(field: str) -> None:
    raw = copy.deepcopy(EXAMPLES["invoice.issued"])
    del raw[field]
    error = refusal(encode(raw))
    assert error.kind == "schema"
    assert field in error.reason and "required" in error.reason.lower(), error.reason


@pytest.mark.parametrize(
    ("event_type", "field"),
    [
        ("invoice.issued", "invoice_id"),
        ("invoice.issued", "due_date"),
        ("invoice.issued", "currency"),
        ("payment.received", "payment_id"),
        ("payment.received", "received_on"),
        ("credit_note.issued", "amount"),
        ("invoice.disputed", "reason"),
        ("customer.upserted", "name"),
    ],
)
def test_a_missing_data_field_is_refused_naming_it(event_type: str, field: str) -> None:
    raw = copy.deepcopy(EXAMPLES[event_type])
    del raw["data"][field]
    error = refusal(encode(raw))
    assert error.kind == "schema"
    assert f"data.{field}" in error.reason and "required" in error.reason.lower(), error.reason


def test_an_unexpected_field_is_refused_rather_than_silently_dropped() -> None:
    # Given a message with a typo'd field in data and an extra field in the envelope
    in_data = message(amout="12.00")
    in_envelope = {**EXAMPLES["invoice.issued"], "priority": "high"}
    # Then each is refused and the reason names the unexpected field
    assert "data.amout" in refusal(encode(in_data)).reason
    assert "priority" in refusal(encode(in_envelope)).reason


def test_an_unknown_event_type_is_refused_listing_the_known_ones() -> None:
    raw = {**EXAMPLES["invoice.issued"], "event_type": "invoice.paid"}
    error = refusal(encode(raw))
    assert error.kind == "unknown_event_type"
    assert "invoice.paid" in error.reason and all(t in error.reason for t in EVENT_TYPES)


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"{'event_id': 1}", b"\xef\xbb\xbf{}"])
def test_a_body_that_is_not_json_is_refused(body: bytes) -> None:
    error = refusal(body)
    assert error.kind == "not_json"
    assert "JSON" in error.reason


@pytest.mark.parametrize("body", [b"[]", b'"invoice"', b"42", b"null"])
def test_json_that_is_not_an_object_is_refused(body: bytes) -> None:
    assert refusal(body).kind == "schema"


def test_a_body_that_is_not_utf8_is_refused() -> None:
    body = encode(message(number="F-2026-é")).decode().encode("latin-1")
    error = refusal(body)
    assert error.kind == "not_json" and "UTF-8" in error.reason


def test_an_oversize_message_is_refused_before_being_decoded() -> None:
    # Given a message above the limit (the check must not depend on parsing: this one is not even JSON)
    body = b"x" * 1001
    error = refusal(body, max_bytes=1000)
    assert error.kind == "oversize"
    assert "1001" in error.reason and "1000" in error.reason
    # And a message at the limit is judged on its content instead
    assert refusal(b"x" * 1000, max_bytes=1000).kind == "not_json"


def test_the_default_size_limit_refuses_a_huge_text_field() -> None:
    raw = message("credit_note.issued", reason="x" * 300_000)
    assert refusal(encode(raw)).kind == "oversize"


# ---------------------------------------------------------------------------------------------------- text
INJECTIONS = ["ab\r\ncd", "ab\ncd", "ab\rcd", "ab\tcd", "ab\x00cd", "ab\x1bcd", "ab\x7fcd", "trailing\n"]


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize(
    ("event_type", "field"),
    [
        ("customer.upserted", "name"),
        ("customer.upserted", "contact_name"),
        ("invoice.issued", "number"),
        ("invoice.issued", "invoice_id"),
        ("credit_note.issued", "reason"),
        ("invoice.disputed", "reason"),
    ],
)
def test_control_characters_in_a_text_field_are_refused(event_type: str, field: str, bad: str) -> None:
    error = refusal(encode(message(event_type, **{field: bad})))
    assert error.kind == "schema"
    assert f"data.{field}" in error.reason and "control characters" in error.reason, error.reason


@pytest.mark.parametrize("field", ["event_id", "customer_id"])
def test_control_characters_in_envelope_ids_are_refused(field: str) -> None:
    raw = {**EXAMPLES["invoice.issued"], field: "C-1\r\nX-Injected: 1"}
    assert field in refusal(encode(raw)).reason


@pytest.mark.parametrize(
    "email",
    [
        "compta@martin.fr\r\nBcc: victim@example.com",
        "compta@martin.fr\n",
        "compta@martin.fr\r\n",
        "compta@martin.fr\nBcc: victim@example.com",
        "compta@martin.fr, other@example.com",
        "Compta <compta@martin.fr>",
        "no-at-sign.fr",
        "compta@localhost",
        "",
    ],
)
def test_an_invalid_or_injecting_email_is_refused_naming_it(email: str) -> None:
    # Given a customer whose second e-mail address would smuggle a header or a second recipient
    raw = message("customer.upserted", emails=["compta@martin.fr", email])
    # Then the message is refused, naming the offending address
    error = refusal(encode(raw))
    assert error.kind == "schema"
    assert "data.emails.1" in error.reason, error.reason


def test_a_well_formed_email_is_accepted() -> None:
    event = parse_event(encode(message("customer.upserted", emails=["a.b+relance@sub.martin-sas.fr"])))
    assert event.data_json()["emails"] == ["a.b+relance@sub.martin-sas.fr"]


@pytest.mark.parametrize("tenant", ["ACME", "acme fr", "", "a" * 65, "acme\n"])
def test_a_malformed_tenant_is_refused(tenant: str) -> None:
    raw = {**EXAMPLES["invoice.issued"], "tenant": tenant}
    assert "tenant" in refusal(encode(raw)).reason


# ---------------------------------------------------------------------------------------------------- reasons
BREAKERS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("data.amount", lambda m: m["data"].update(amount=12.5)),
    ("data.currency", lambda m: m["data"].update(currency="XYZ")),
    ("data.due_date", lambda m: m["data"].update(due_date="31/12/2026")),
    ("data.number", lambda m: m["data"].update(number="F\r\n1")),
]


def test_several_problems_are_all_reported_in_one_reason() -> None:
    # Given one message with several independent problems
    raw = copy.deepcopy(EXAMPLES["invoice.issued"])
    for _, breaker in BREAKERS:
        breaker(raw)
    text = json.dumps(raw).replace('"amount": 12.5', '"amount": "12.5x"')
    # Then the single reason lists every field at fault, so the ERP team fixes them in one round
    error = refusal(text.encode())
    for field, _ in BREAKERS:
        assert field in error.reason, error.reason


# ---------------------------------------------------------------------------------------------------- hostile input
@pytest.mark.parametrize(
    ("amount", "why"),
    [
        ("١٢٣.٤٥", "Arabic-Indic digits"),
        ("\uff11\uff12\uff13.\uff14\uff15", "full-width digits"),
        ("12³", "a superscript"),
        ("1" * 16, "16 digits"),
    ],
)
def test_money_in_anything_but_ascii_digits_within_the_bound_is_refused(amount: str, why: str) -> None:
    error = refusal(encode(message(amount=amount)))
    assert error.kind == "schema" and error.reason.startswith("data.amount: ") and "ASCII digits" in error.reason, why


@pytest.mark.parametrize(
    "character", ["\x00", "\x1b", "\x7f", "\x85", "\x9f", "\u2028", "\u2029", "\ud800"], ids=lambda c: f"U+{ord(c):04X}"
)
@pytest.mark.parametrize(("event_type", "field"), [("invoice.issued", "number"), ("customer.upserted", "name")])
def test_text_with_any_control_character_is_refused(character: str, event_type: str, field: str) -> None:
    raw = message(event_type, **{field: f"Acme{character}Bcc: spy@attacker.example"})
    body = json.dumps(raw).encode()  # ASCII escapes: a lone surrogate can only arrive as \ud800
    error = refusal(body)
    assert error.kind == "schema" and error.reason.startswith(f"data.{field}: "), error.reason


@pytest.mark.parametrize(
    "text",
    [
        "Acme =?utf-8?q?=0D=0ABcc:_spy@attacker.example?=",
        "=?UTF-8?B?QmNjOiBzcHlAYXR0YWNrZXIuZXhhbXBsZQ==?=",
        "x=?a?q?b?c?=",
    ],
)
@pytest.mark.parametrize(
    ("event_type", "field"),
    [("customer.upserted", "name"), ("customer.upserted", "contact_name"), ("invoice.issued", "number")],
)
def test_an_rfc2047_encoded_word_is_refused_in_text_that_can_reach_a_mail_header(
    text: str, event_type: str, field: str
) -> None:
    error = refusal(encode(message(event_type, **{field: text})))
    assert error.kind == "schema" and f"data.{field}: " in error.reason and "encoded word" in error.reason


@pytest.mark.parametrize(
    "address",
    [
        "a@b..com",
        "compta@martin.fr\n",
        "compta\x85@martin.fr",
        "Claire <compta@martin.fr>",
        "compta@[10.0.0.1]",
        "compta@localhost",
        "compta@martin.invalid",
        '"a b"@martin.fr',
        "andré@martin.fr",  # a non-ASCII local part needs SMTPUTF8, which the notifier does not use
    ],
)
def test_an_address_email_validator_refuses_is_refused(address: str) -> None:
    error = refusal(encode(message("customer.upserted", emails=["ok@martin.fr", address])))
    assert error.kind == "schema" and error.reason.startswith("data.emails.1: "), error.reason


@pytest.mark.parametrize("address", ["compta@münchen.de", "compta@xn--mnchen-3ya.de", "a.b+c@sub.martin.fr"])
def test_internationalised_and_plain_addresses_are_accepted(address: str) -> None:
    event = parse_event(encode(message("customer.upserted", emails=[address])))
    assert event.data_json()["emails"] == [address]


@pytest.mark.parametrize("field", ["issue_date", "due_date"])
@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "1899-12-31", "2200-01-01"])
def test_a_date_outside_1900_to_2199_is_refused(field: str, day: str) -> None:
    changes = {"issue_date": "1900-01-01", "due_date": "2199-12-31", field: day}
    error = refusal(encode(message(**changes)))
    assert error.kind == "schema" and error.reason.startswith(f"data.{field}: ") and "1900-01-01" in error.reason


def test_the_bounds_themselves_are_accepted() -> None:
    event = parse_event(encode(message(issue_date="1900-01-01", due_date="2199-12-31")))
    assert event.data_json()["due_date"] == "2199-12-31"


@pytest.mark.parametrize(
    "instant",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1900-01-01T00:30:00+01:00", "2200-01-01T00:00:00Z"],
)
def test_an_instant_outside_the_bounds_is_refused_even_when_utc_would_overflow(instant: str) -> None:
    raw = copy.deepcopy(EXAMPLES["invoice.issued"])
    raw["occurred_at"] = instant
    error = refusal(encode(raw))
    assert error.kind == "schema" and error.reason.startswith("occurred_at: ") and len(error.reason) < 300


def test_an_occurred_at_more_than_a_day_ahead_of_reception_is_a_business_rule_refusal() -> None:
    # Given an event stamped by an ERP whose clock runs in 2099
    raw = copy.deepcopy(EXAMPLES["invoice.issued"])
    raw["occurred_at"] = "2099-01-01T00:00:00Z"
    received = datetime(2026, 11, 2, 9, 15, tzinfo=UTC)
    # When relance receives it today
    error = refusal(encode(raw), received_at=received)
    # Then it is refused, saying how far ahead and why
    assert error.kind == "business_rule" and error.reason.startswith("occurred_at 2099-01-01"), error.reason
    assert "skewed ERP clock" in error.reason


def test_an_occurred_at_within_a_day_of_reception_is_accepted() -> None:
    raw = copy.deepcopy(EXAMPLES["invoice.issued"])
    raw["occurred_at"] = "2026-11-03T09:00:00Z"
    assert parse_event(encode(raw), received_at=datetime(2026, 11, 2, 9, 15, tzinfo=UTC)).event_id


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b'{"event_id": "E-1", "event_id": "E-2"}', "schema"),
        (b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not_json"),
        (b'{"event_id": ' + b"7" * 5000 + b"}", "not_json"),
    ],
    ids=["duplicate-key", "deep", "huge-int"],
)
def test_hostile_json_is_refused_by_the_decoder_with_a_short_reason(body: bytes, kind: str) -> None:
    error = refusal(body)
    assert error.kind == kind and len(error.reason) < 200, error.reason


def test_a_duplicated_amount_is_refused_rather_than_the_last_one_kept() -> None:
    body = encode(message()).replace(b'"amount": "1234.56"', b'"amount": "1.00", "amount": "1234.56"')
    error = refusal(body)
    assert error.kind == "schema" and error.reason.startswith('data.amount: duplicate key "amount"')
