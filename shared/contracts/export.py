"""Write the published contract: one JSON Schema per event type and an AsyncAPI 3 document.

The files live in ``shared/contracts/schema`` and are checked in; a test fails when they drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from shared.contracts.commands import command_json_schemas
from shared.contracts.erp import CONTRACT_VERSION, DATA_MODELS, event_json_schemas
from shared.contracts.examples import EXAMPLES


def _message_name(event_type: str) -> str:
    return "".join(part.capitalize() for part in event_type.replace(".", "_").split("_"))


def asyncapi_document() -> dict[str, Any]:
    messages = {
        _message_name(event_type): {
            "name": event_type,
            "title": event_type,
            "summary": (model.__doc__ or event_type).strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": f"./{event_type}.json"},
            "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": "0.3.0"}},
            "examples": [{"name": "example", "payload": EXAMPLES[event_type]}],
        }
        for event_type, model in DATA_MODELS.items()
    }
    refs = [{"$ref": f"#/channels/erpEvents/messages/{name}"} for name in messages]
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
                "x-relance-reason header."
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
                    "unknown_event_type, oversize, business_rule, storage), x-relance-reason and the event ids."
                ),
                "bindings": {"amqp": {"is": "queue", "queue": {"name": "relance.ingest.dead", "durable": True}}},
            },
        },
        "operations": {
            "publishErpEvent": {
                "action": "send",
                "channel": {"$ref": "#/channels/erpEvents"},
                "messages": refs,
            }
        },
        "components": {"messages": messages},
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
