"""The published contract files are generated from the models and must not drift from them."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.escalation.engine import decide
from services.escalation.interest import RateTable
from services.escalation.model import Level, Policy
from shared.config import Settings
from shared.contracts.commands import (
    COMMAND_MODELS,
    INTERNAL_COMMAND_MODELS,
    ClaimLine,
    ReminderLine,
    ReminderTotals,
    SendReminder,
)
from shared.contracts.erp import EVENT_TYPES, CommandAcknowledged, parse_event
from shared.contracts.events import CLAIMS_STATEMENT
from shared.contracts.examples import COMMAND_EXAMPLES, EXAMPLES
from shared.contracts.export import asyncapi_document, write_contract
from shared.ledger.outbox import command_rows
from shared.ledger.state import CustomerState
from tests.factories import CUSTOMER, TENANT, Ev, Feed, customer, fold, invoice, payment

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "schema"


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


def _messages(document: dict[str, Any], channel: str) -> dict[str, dict[str, Any]]:
    """The channel's messages, resolved to their components, by name (the routing key)."""
    refs = document["channels"][channel]["messages"].values()
    components = document["components"]["messages"]
    found = [components[ref["$ref"].removeprefix("#/components/messages/")] for ref in refs]
    return {message["name"]: message for message in found}


def test_asyncapi_document_lists_every_event_type() -> None:
    document = yaml.safe_load(yaml.safe_dump(asyncapi_document()))
    assert set(_messages(document, "erpEvents")) == set(EVENT_TYPES)
    assert document["channels"]["erpEvents"]["address"] == "relance.events"


def test_asyncapi_document_describes_the_commands_relance_sends() -> None:
    # Given the document as a reader gets it (no YAML anchors: every object written out)
    text = yaml.safe_dump(asyncapi_document(), sort_keys=False)
    assert "&id" not in text
    document = yaml.safe_load(text)
    # Then the commands exchange is the settings' default, a durable topic exchange
    channel = document["channels"]["relanceCommands"]
    assert channel["address"] == Settings.model_fields["commands_exchange"].default == "relance.commands"
    assert channel["bindings"]["amqp"]["exchange"] == {
        "name": "relance.commands",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
    }
    # And it carries the ERP's commands and the notifier's, each with its schema, routing key and AMQP properties
    messages = _messages(document, "relanceCommands")
    assert set(messages) == {
        "erp.credit_block",
        "erp.credit_unblock",
        "erp.collection_handover",
        "erp.promise_to_pay",
        "erp.dispute_opened",
        "erp.dispute_resolved",
        "erp.payment_plan",
        "erp.credit_limit_change",
        "notifier.send_reminder",
    }
    for kind, message in messages.items():
        assert message["payload"] == {"$ref": f"./{kind}.json"} and (SCHEMA_DIR / f"{kind}.json").exists()
        assert message["bindings"]["amqp"]["messageType"] == kind
        assert message["contentType"] == "application/json"
        assert message["correlationId"]["location"] == "$message.payload#/command_id"
        assert "message_id = command_id" in message["description"] and "persistent" in message["description"]
        assert set(message["headers"]["required"]) == {"x-relance-tenant", "x-relance-customer"}
        [example] = message["examples"]
        assert example["payload"]["command"] == kind
    # And relance is the sender: one operation for the ERP's commands, one for its own notifier
    operations = document["operations"]
    sent = {
        name: {ref["$ref"].rsplit("/", 1)[1] for ref in operation["messages"]}
        for name, operation in operations.items()
        if operation["channel"] == {"$ref": "#/channels/relanceCommands"}
    }
    assert sent == {
        "sendErpCommand": {
            "ErpCreditBlock",
            "ErpCreditUnblock",
            "ErpCollectionHandover",
            "ErpPromiseToPay",
            "ErpDisputeOpened",
            "ErpDisputeResolved",
            "ErpPaymentPlan",
            "ErpCreditLimitChange",
        },
        "sendNotifierCommand": {"NotifierSendReminder"},
    }
    for name in sent:
        assert operations[name]["action"] == "send"
        assert operations[name]["bindings"]["amqp"]["deliveryMode"] == 2


@pytest.mark.parametrize("kind", sorted(COMMAND_EXAMPLES))
def test_every_command_example_is_valid_for_its_model(kind: str) -> None:
    models = {**COMMAND_MODELS, **INTERNAL_COMMAND_MODELS}
    command = models[kind].model_validate(COMMAND_EXAMPLES[kind])
    assert command.command_id == COMMAND_EXAMPLES[kind]["command_id"]  # type: ignore[attr-defined]


def test_the_acknowledged_command_kinds_are_the_erp_commands() -> None:
    schema = CommandAcknowledged.model_json_schema()
    assert set(schema["properties"]["command"]["enum"]) == set(COMMAND_MODELS)


def test_the_notifier_command_model_documents_the_body_the_outbox_writes() -> None:
    # Given a reminder the engine decides, turned into its outbox row as the ledger does when appending it
    letter = Level("formal-notice", 5, "letter", "formal_notice", frozenset({"charge_interest"}), frozenset({"email"}))
    policy = Policy(name="p", version="v1", levels=(letter,), business_days=False)
    state = fold(
        [
            customer(),
            invoice("INV-1", "100.00", issue_date="2026-02-01", due_date="2026-03-02"),
            invoice("INV-2", "50.00", issue_date="2026-02-09", due_date="2026-03-09"),  # overdue, listed apart
        ]
    )
    as_of = datetime(2026, 3, 10, 9, tzinfo=UTC)
    [reminder] = [d for d in decide(state, policy, as_of, RateTable.default()) if d.event_type == "reminder.requested"]
    event: dict[str, Any] = {"event_id": reminder.event_id, "event_type": reminder.event_type, "tenant": state.tenant}
    event |= {"customer_id": state.customer_id, "occurred_at": as_of, "version": 3, "data": reminder.data}
    [row] = command_rows([event], as_of)
    payload = json.loads(json.dumps(row["payload"]))
    # Then the model names every field of the body, and of its lines and totals, and accepts it
    # (the example, a first reminder, states no interest, so no rates; a line's fee_currency only for a foreign fee)
    # (nor claims: no invoice of the customer is settled yet; test_a_claims_statement_body_is_a_command_of_the_contract)
    fields = set(SendReminder.model_fields)
    assert set(payload) | {"claims"} == fields == {*COMMAND_EXAMPLES["notifier.send_reminder"], "rates", "claims"}
    line_fields = set(ReminderLine.model_fields) - {"fee_currency"}
    assert set(payload["lines"][0]) | {"notices"} == line_fields  # nothing sent before
    assert set(payload["also"][0]) | {"level", "notices"} == line_fields  # no level reached
    assert payload["law"] == "fr" and payload["rates"][0]["rate"] == "12.15"
    assert set(payload["totals"]) | {"claims"} == set(ReminderTotals.model_fields)
    assert SendReminder.model_validate(payload).channel == "letter"


def test_a_claims_statement_body_is_a_command_of_the_contract() -> None:
    # Given an invoice whose formal notice claimed interest and the fee, and whose principal was then paid late
    letter = Level("formal-notice", 5, "letter", "formal_notice", frozenset({"charge_interest", "charge_fee"}))
    policy = Policy(name="p", version="v1", levels=(letter,), business_days=False)
    feed = Feed(CustomerState(tenant=TENANT, customer_id=CUSTOMER))
    feed.deliver([customer(), invoice("INV-1", "100.00", issue_date="2026-02-01", due_date="2026-03-02")])
    rates = RateTable.default()
    for day, erp in ((10, []), (12, [payment("P1", "100.00", received_on="2026-03-12")]), (13, [])):
        feed.deliver(erp)
        as_of = datetime(2026, 3, day, 9, tzinfo=UTC)
        feed.deliver(Ev(d.event_type, d.data, d.event_id, as_of) for d in decide(feed.state, policy, as_of, rates))
    # When the engine's claims statement becomes its outbox row
    [statement] = [ev for ev in feed.history if ev.data.get("level") == CLAIMS_STATEMENT]
    event: dict[str, Any] = {"event_id": statement.event_id, "event_type": statement.event_type, "tenant": TENANT}
    event |= {"customer_id": CUSTOMER, "occurred_at": statement.occurred_at, "version": 9, "data": statement.data}
    [row] = command_rows([event], statement.occurred_at)
    payload = json.loads(json.dumps(row["payload"]))
    # Then the model reads it: no line, the claims with the day paid and the days late, their total
    command = SendReminder.model_validate(payload)
    assert (command.level, command.template, command.lines, command.invoice_ids) == ("claims", "claims", [], [])
    assert command.claims is not None and {c.kind for c in command.claims} == {"interest", "indemnity"}
    assert set(payload["claims"][0]) == set(ClaimLine.model_fields)
    assert command.totals.claims == sum((c.amount for c in command.claims), Decimal(0))
