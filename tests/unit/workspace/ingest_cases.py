"""The messages the HTTP ingest tests send, over HTTP and over AMQP alike: every outcome AMQP ingest knows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

TENANT = "acme-fr"
OTHER_TENANT = "acme-de"
MAX_MESSAGE_BYTES = 2048


def envelope(event_id: str, event_type: str, customer: str, data: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "tenant": TENANT,
        "customer_id": customer,
        "occurred_at": "2026-11-02T09:15:00Z",
        "data": data,
        **fields,
    }


def invoice(event_id: str, customer: str, invoice_id: str, amount: str, **fields: Any) -> dict[str, Any]:
    data = {
        "invoice_id": invoice_id,
        "number": f"F-{invoice_id}",
        "issue_date": "2026-10-01",
        "due_date": "2026-10-31",
        "currency": "EUR",
        "amount": amount,
    }
    return envelope(event_id, "invoice.issued", customer, data, **fields)


def raw(message: dict[str, Any] | bytes) -> bytes:
    return message if isinstance(message, bytes) else json.dumps(message, separators=(",", ":")).encode()


def cases(received_at: datetime) -> list[tuple[str, bytes]]:
    """``(expected outcome, body)``: ``applied``, ``duplicate`` or the refusal's kind, in the order they are sent."""
    future = (received_at + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    first = invoice("E-1", "C-1", "INV-1", "1000.00")
    customer = {"name": "Dupont SA", "emails": ["ap@dupont.example"]}
    return [
        ("applied", raw(envelope("E-0", "customer.upserted", "C-1", customer))),
        ("applied", raw(first)),
        (
            "applied",
            raw(
                envelope(
                    "E-2",
                    "payment.received",
                    "C-1",
                    {
                        "payment_id": "P-1",
                        "amount": "400.00",
                        "currency": "EUR",
                        "received_on": "2026-11-05",
                        "allocations": [{"invoice_id": "INV-1", "amount": "400.00"}],
                    },
                )
            ),
        ),
        ("duplicate", raw(first)),  # the ERP sent it again
        ("duplicate", raw(invoice("E-5", "C-1", "INV-1", "1000.00"))),  # same content under a new event id
        ("schema", raw(envelope("E-S", "invoice.issued", "C-3", {"invoice_id": "INV-S"}))),
        ("unknown_event_type", raw(envelope("E-U", "invoice.teleported", "C-3", {}))),
        ("not_json", b"this is not json {"),
        ("oversize", raw({**invoice("E-BIG", "C-3", "INV-BIG", "10.00"), "padding": "p" * MAX_MESSAGE_BYTES})),
        ("business_rule", raw(invoice("E-FUT", "C-3", "INV-FUT", "10.00", occurred_at=future))),
        ("business_rule", raw(invoice("E-6", "C-1", "INV-1", "999.00"))),  # INV-1 again, another amount
    ]


def comparable(reason: str) -> str:
    """A refusal's reason without the instant of reception, which differs between two ways in."""
    return reason.split(" after relance received")[0]
