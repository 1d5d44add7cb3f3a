"""The one strict JSON decoder: duplicate keys, hostile nesting and numbers are refused cheaply, with a reason."""

from __future__ import annotations

import json
import time

import pytest

from shared.contracts import jsonio
from shared.contracts.jsonio import MAX_DEPTH, JsonRefused


def refusal(text: bytes) -> JsonRefused:
    with pytest.raises(JsonRefused) as caught:
        jsonio.loads(text)
    return caught.value


@pytest.mark.parametrize(
    ("text", "path", "key"),
    [
        (b'{"tenant": "acme-fr", "tenant": "other"}', "tenant", "tenant"),
        (b'{"data": {"amount": "1.00", "currency": "EUR", "amount": "1000.00"}}', "data.amount", "amount"),
        (
            b'{"data": {"allocations": [{"invoice_id": "A"}, {"invoice_id": "B", "invoice_id": "C"}]}}',
            "data.allocations.1.invoice_id",
            "invoice_id",
        ),
    ],
)
def test_a_duplicated_key_is_refused_as_schema_naming_the_key_and_where_it_is(text: bytes, path: str, key: str) -> None:
    # Given a JSON text in which one object names a key twice (plain json.loads keeps the last one silently)
    assert json.loads(text)
    # When relance decodes it
    error = refusal(text)
    # Then it is refused as a schema error whose reason names the key and its path
    assert error.kind == "schema"
    assert error.reason.startswith(f'{path}: duplicate key "{key}"'), error.reason


def test_the_same_key_in_two_different_objects_is_not_a_duplicate() -> None:
    assert jsonio.loads(b'{"a": {"id": 1}, "b": {"id": 2}, "id": 3}') == {"a": {"id": 1}, "b": {"id": 2}, "id": 3}


@pytest.mark.parametrize(
    "text",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"data": ' + b'{"a": [' * 20_000 + b"1" + b"]}" * 20_000 + b"}",
        b"[" * 100_000,  # never closed
        b"[[]," * (MAX_DEPTH + 1) + b"1" + b"]" * (MAX_DEPTH + 1),
    ],
    ids=["balanced", "objects-and-arrays", "unclosed", "one-level-too-deep"],
)
def test_nesting_beyond_the_limit_is_refused_as_not_json_cheaply(text: bytes) -> None:
    # Given a text nested deeper than relance reads (the interpreter's own parser would exhaust its recursion)
    began = time.perf_counter()
    # When relance decodes it
    error = refusal(text)
    # Then it is refused as not_json with a short reason, in well under a tenth of a second
    assert error.kind == "not_json"
    assert len(error.reason) < 200 and ("nested deeper" in error.reason or "never closed" in error.reason)
    assert time.perf_counter() - began < 0.1


def test_nesting_up_to_the_limit_is_read() -> None:
    text = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert jsonio.loads(text) is not None


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert jsonio.loads(b'{"note": "' + b"[{" * 500 + b'"}') == {"note": "[{" * 500}


@pytest.mark.parametrize("number", [b"1" * 5000, b"-" + b"9" * 41, b"1." + b"0" * 60, b"1e" + b"9" * 50])
def test_a_number_longer_than_the_limit_is_refused_as_not_json(number: bytes) -> None:
    error = refusal(b'{"sequence": ' + number + b"}")
    assert error.kind == "not_json" and "number" in error.reason and len(error.reason) < 200


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(constant: bytes) -> None:
    assert refusal(b'{"amount": ' + constant + b"}").kind == "not_json"


@pytest.mark.parametrize("text", [b"\xff\xfe{}", b'{"a": 1', b"", b"{'a': 1}"])
def test_text_that_is_not_utf8_json_is_refused_as_not_json(text: bytes) -> None:
    assert refusal(text).kind == "not_json"


def test_fields_once_names_only_the_keys_that_appear_once() -> None:
    # Given a message whose tenant is duplicated: naming either value in a dead-letter header would be a guess
    text = b'{"event_id": "E-1", "tenant": "acme-fr", "tenant": "other", "customer_id": "C-1"}'
    # Then only the unambiguous members are read
    assert jsonio.fields_once(text) == {"event_id": "E-1", "customer_id": "C-1"}
    assert jsonio.fields_once(b"[" * 100_000) == {}
    assert jsonio.fields_once(b"[1, 2]") == {}
