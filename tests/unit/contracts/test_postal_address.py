"""A customer's postal address in ``customer.upserted``: optional, checked as strictly as the rest of the contract."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from shared.contracts import erp
from shared.contracts.erp import InvalidMessage, parse_event
from shared.contracts.examples import EXAMPLES


def upsert(**address: Any) -> bytes:
    raw = copy.deepcopy(EXAMPLES["customer.upserted"])
    raw["data"]["postal_address"].update(address)
    return json.dumps(raw, ensure_ascii=False).encode("utf-8")


def refused(body: bytes) -> str:
    with pytest.raises(InvalidMessage) as caught:
        parse_event(body)
    return caught.value.reason


def test_the_example_address_parses_with_its_lines_code_city_and_country() -> None:
    event = parse_event(upsert())
    assert isinstance(event.data, erp.CustomerUpserted)
    address = event.data.postal_address
    assert address is not None
    assert (address.lines[0], address.postal_code, address.city, address.country) == (
        "Boulangeries Martin SAS",
        "69003",
        "Lyon",
        "FR",
    )


def test_a_customer_without_an_address_is_still_valid() -> None:
    raw = copy.deepcopy(EXAMPLES["customer.upserted"])
    del raw["data"]["postal_address"]
    event = parse_event(json.dumps(raw).encode())
    assert isinstance(event.data, erp.CustomerUpserted) and event.data.postal_address is None


@pytest.mark.parametrize("character", ["\n", "\r", "\t", "\x00", "\x85", "\u2028"])
def test_a_control_character_in_an_address_line_is_refused_naming_the_line(character: str) -> None:
    reason = refused(upsert(lines=["Boulangeries Martin SAS", f"12 rue{character}des Lilas"]))
    assert "data.postal_address.lines.1" in reason and "control characters" in reason, reason


@pytest.mark.parametrize(
    ("change", "where", "words"),
    [
        ({"lines": []}, "data.postal_address.lines", "at least 1"),
        ({"lines": ["a", "b", "c", "d", "e"]}, "data.postal_address.lines", "at most 4"),
        ({"lines": ["x" * 101]}, "data.postal_address.lines.0", "at most 100"),
        ({"country": "France"}, "data.postal_address.country", "ISO 3166-1 alpha-2"),
        ({"country": "fr"}, "data.postal_address.country", "ISO 3166-1 alpha-2"),
        ({"country": "ZZ"}, "data.postal_address.country", "ISO 3166-1 alpha-2"),
        ({"city": ""}, "data.postal_address.city", "at least 1"),
        ({"postal_code": "=?utf-8?q?x?="}, "data.postal_address.postal_code", "encoded word"),
        ({"street": "12 rue des Lilas"}, "data.postal_address.street", "xtra"),
    ],
)
def test_an_address_that_breaks_a_rule_is_refused_with_the_field_and_the_rule(
    change: dict[str, Any], where: str, words: str
) -> None:
    reason = refused(upsert(**change))
    assert where in reason and words in reason, reason


def test_a_country_is_any_iso_code_in_use_not_only_european_ones() -> None:
    for country in ("GB", "US", "JP", "MA", "CH"):
        event = parse_event(upsert(country=country))
        assert isinstance(event.data, erp.CustomerUpserted) and event.data.postal_address is not None
