"""Write the published contract: one JSON Schema per event type and per command, and an AsyncAPI 3 document.

The files live in ``shared/contracts/schema`` and are checked in; a test fails when they drift from the models.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from shared.config import Settings
from shared.contracts.commands import COMMAND_MODELS, INTERNAL_COMMAND_MODELS, command_json_schemas
from shared.contracts.erp import CONTRACT_VERSION, DATA_MODELS, event_json_schemas
from shared.contracts.examples import COMMAND_EXAMPLES, EXAMPLES

_AMQP = "0.3.0"  # version of the AsyncAPI AMQP bindings


def _message_name(event_type: str) -> str:
    return "".join(part.capitalize() for part in event_type.replace(".", "_").split("_"))


def _summary(model: type) -> str:
    return (model.__doc__ or "").strip().splitlines()[0]


def _command_message(kind: str, model: type) -> dict[str, Any]:
    return {
        "name": kind,
        "title": kind,
        "summary": _summary(model),
        "description": (
            "AMQP properties: message_id = command_id (deduplicate on it: delivery is at least once), type = the "
            "command, content_type application/json, delivery_mode 2 (persistent), app_id relance, timestamp = "
            "when the command was written to the outbox. Routing key: the command."
        ),
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {
                "x-relance-tenant": {"type": "string", "description": "The command's tenant."},
                "x-relance-customer": {"type": "string", "description": "The customer (stream) it is about."},
            },
            "required": ["x-relance-tenant", "x-relance-customer"],
        },
        "correlationId": {
            "description": "The AMQP message_id, equal to command_id.",
            "location": "$message.payload#/command_id",
        },
        "payload": {"$ref": f"./{kind}.json"},
        "bindings": {"amqp": {"messageType": kind, "bindingVersion": _AMQP}},
        "examples": [{"name": "example", "payload": COMMAND_EXAMPLES[kind]}],
    }


def _send_command(summary: str, names: Iterable[str]) -> dict[str, Any]:
    """relance publishing on the commands exchange, as the relay does: persistent, mandatory (a command no queue is
    bound for is returned and stays in the outbox), with a timestamp."""
    return {
        "action": "send",
        "summary": summary,
        "channel": {"$ref": "#/channels/relanceCommands"},
        "messages": [{"$ref": f"#/channels/relanceCommands/messages/{name}"} for name in names],
        "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "timestamp": True, "bindingVersion": _AMQP}},
    }


def asyncapi_document() -> dict[str, Any]:
    exchange = Settings.model_fields["commands_exchange"].default
    messages = {
        _message_name(event_type): {
            "name": event_type,
            "title": event_type,
            "summary": _summary(model),
            "contentType": "application/json",
            "payload": {"$ref": f"./{event_type}.json"},
            "bindings": {"amqp": {"bindingVersion": _AMQP}},
            "examples": [{"name": "example", "payload": EXAMPLES[event_type]}],
        }
        for event_type, model in DATA_MODELS.items()
    }
    refs = [{"$ref": f"#/channels/erpEvents/messages/{name}"} for name in messages]
    erp_commands = {_message_name(kind): _command_message(kind, model) for kind, model in COMMAND_MODELS.items()}
    internal = {_message_name(kind): _command_message(kind, model) for kind, model in INTERNAL_COMMAND_MODELS.items()}
    commands = {**erp_commands, **internal}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "relance ERP contract",
            "version": f"{CONTRACT_VERSION}.0.0",
            "description": (
                "What an ERP publishes to relance. Body: UTF-8 JSON envelope (event_id, event_type, tenant, "
                "customer_id, occurred_at, data); money as decimal strings, ISO 4217 currencies, ISO 8601 dates. "
                "Routing key: the event_type. Publish persistent messages with publisher confirms; event_id makes "
                "redelivery harmless. Invalid messages are moved to the dead-letter queue with the reason in the "
                "x-relance-reason header. relance in turn publishes commands to the relance.commands exchange: "
                "erp.credit_block, erp.credit_unblock and erp.collection_handover for the ERP, and what people "
                "recorded in relance that the ERP must know (erp.promise_to_pay, erp.dispute_opened, "
                "erp.dispute_resolved, erp.payment_plan, erp.credit_limit_change); the ERP tells relance what it did "
                "with each with erp.command_acknowledged. notifier.* commands are for relance's own notifier."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"},
        },
        "channels": {
            "erpEvents": {
                "address": "relance.events",
                "description": "Durable topic exchange declared by relance; routing key = event_type.",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": "relance.events", "type": "topic", "durable": True, "autoDelete": False},
                        "bindingVersion": "0.3.0",
                    }
                },
            },
            "deadLetters": {
                "address": "relance.ingest.dead",
                "description": (
                    "Rejected messages, body unchanged, with headers x-relance-kind (not_json, schema, "
                    "unknown_event_type, oversize, business_rule, storage, internal_error), x-relance-reason and the "
                    "event ids. Like every queue relance declares, a quorum queue (argument x-queue-type: quorum) "
                    'unless RELANCE_QUEUE_TYPE=classic (no arguments); the README\'s "Queues: quorum or classic" '
                    "lists every queue with its arguments."
                ),
                "bindings": {"amqp": {"is": "queue", "queue": {"name": "relance.ingest.dead", "durable": True}}},
            },
            "relanceCommands": {
                "address": exchange,
                "description": (
                    "Durable topic exchange declared by relance (RELANCE_COMMANDS_EXCHANGE); routing key = the "
                    "command. The ERP binds its own durable queue with erp.# before relance starts deciding: a command "
                    "no queue is bound for is returned (mandatory) and stays in relance's outbox."
                ),
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in commands},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": exchange, "type": "topic", "durable": True, "autoDelete": False},
                        "bindingVersion": _AMQP,
                    }
                },
            },
        },
        "operations": {
            "publishErpEvent": {
                "action": "send",
                "summary": "The ERP publishes what happened to its invoices: persistent, with publisher confirms.",
                "channel": {"$ref": "#/channels/erpEvents"},
                "messages": refs,
                "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": _AMQP}},
            },
            "sendErpCommand": _send_command(
                "relance tells the ERP to block or unblock a customer's credit, what it hands over to collection, and "
                "what people recorded in relance that the ERP must know (promises, disputes, plans, credit limits).",
                erp_commands,
            ),
            "sendNotifierCommand": _send_command(
                "Internal: relance asks its notifier workers to send a reminder (not for the ERP).", internal
            ),
        },
        "components": {"messages": {**messages, **commands}},
    }


def write_contract(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type, schema in {**event_json_schemas(), **command_json_schemas()}.items():
        path = out / f"{event_type}.json"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    path = out / "asyncapi.yaml"
    path.write_text(yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    written.append(path)
    return written
