"""The commands of people's actions: a promise, dispute or plan a person records tells the ERP; the ERP's own do not."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.contracts.commands import COMMAND_MODELS, parse_command
from shared.contracts.events import ACTION_COMMANDS
from shared.ledger.outbox import KINDS, command_rows, families

AT = datetime(2026, 12, 20, 10, 42, tzinfo=UTC)
PROMISE = {
    "promise_id": "act-1",
    "promised_date": "2027-01-15",
    "amount": "1234.56",
    "currency": "EUR",
    "invoice_ids": ["INV-1"],
}
DATA: dict[str, dict[str, Any]] = {
    "promise_to_pay.recorded": PROMISE,
    "invoice.disputed": {"invoice_id": "INV-1", "reason": "two pallets missing"},
    "invoice.dispute_resolved": {"invoice_id": "INV-1", "resolution": "signed delivery note"},
    "payment_plan.agreed": {
        "plan_id": "act-2",
        "currency": "EUR",
        "invoice_ids": ["INV-1"],
        "instalments": [{"due_date": "2027-01-31", "amount": "617.28"}, {"due_date": "2027-02-28", "amount": "617.28"}],
    },
}


def row(event_type: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "tenant": "acme-fr",
        "customer_id": "C-1",
        "event_id": "act-0123",
        "event_type": event_type,
        "data": DATA[event_type],
        "metadata": metadata,
        "occurred_at": AT,
        "version": 7,
    }


@pytest.mark.parametrize("source", ["workspace", "api", "cli"])
@pytest.mark.parametrize("event_type", sorted(ACTION_COMMANDS))
def test_what_a_person_records_writes_its_command_for_the_erp(event_type: str, source: str) -> None:
    metadata = {"source": source, "author": "claire", "request_id": "r-1"}
    [command] = command_rows([row(event_type, metadata)], AT)
    kind = ACTION_COMMANDS[event_type]
    assert command["kind"] == kind and command["command_id"] == "act-0123"
    payload = command["payload"]
    assert payload["author"] == "claire" and payload["sequence"] == 7
    parsed = parse_command(payload)
    assert type(parsed) is COMMAND_MODELS[kind]


@pytest.mark.parametrize("metadata", [{"source": "erp", "message_id": "m-1"}, {}, {"source": "notifier"}])
def test_the_erps_own_events_are_never_echoed_back(metadata: dict[str, Any]) -> None:
    assert command_rows([row(event_type, metadata) for event_type in DATA], AT) == []


def test_the_new_commands_belong_to_the_erps_family() -> None:
    assert set(ACTION_COMMANDS.values()) <= set(KINDS)
    assert set(ACTION_COMMANDS.values()) | {"erp.credit_limit_change"} <= set(families()["erp"])
