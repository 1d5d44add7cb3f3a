"""The published contract files are generated from the models and must not drift from them."""

import json
from pathlib import Path

import pytest
import yaml

from shared.contracts.erp import EVENT_TYPES, parse_event
from shared.contracts.examples import EXAMPLES
from shared.contracts.export import asyncapi_document, write_contract

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "shared" / "contracts" / "schema"


def test_checked_in_schema_files_match_the_models(tmp_path: Path) -> None:
    # Given the contract written fresh from the models
    written = write_contract(tmp_path)
    # Then every checked-in file is byte-identical (run `relance contract export` after changing a model)
    for path in written:
        checked_in = SCHEMA_DIR / path.name
        assert checked_in.exists(), f"{checked_in} is missing: run `relance contract export`"
        assert checked_in.read_text() == path.read_text(), f"{checked_in.name} is stale: run `relance contract export`"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_has_an_example_that_parses(event_type: str) -> None:
    event = parse_event(json.dumps(EXAMPLES[event_type]).encode())
    assert event.event_type == event_type


def test_asyncapi_document_lists_every_event_type() -> None:
    document = yaml.safe_load(yaml.safe_dump(asyncapi_document()))
    names = {m["name"] for m in document["components"]["messages"].values()}
    assert names == set(EVENT_TYPES)
    assert document["channels"]["erpEvents"]["address"] == "relance.events"
