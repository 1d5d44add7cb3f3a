"""One example message per event type, and per command relance publishes: in the README, the AsyncAPI document and
the tests."""

from __future__ import annotations

from typing import Any

_BASE = {"tenant": "acme-fr", "customer_id": "C-0042"}


def _message(event_id: str, event_type: str, occurred_at: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": event_type, **_BASE, "occurred_at": occurred_at, "data": data}


EXAMPLES: dict[str, dict[str, Any]] = {
    "customer.upserted": _message(
        "erp-cust-0042-v3",
        "customer.upserted",
        "2026-10-01T08:00:00Z",
        {
            "name": "Boulangeries Martin SAS",
            "emails": ["compta@boulangeries-martin.fr"],
            "language": "fr",
            "segment": "retail",
            "credit_limit": {"amount": "25000.00", "currency": "EUR"},
            "contact_name": "Claire Martin",
            "postal_address": {
                "lines": ["Boulangeries Martin SAS", "Service comptabilité", "12 rue des Lilas"],
                "postal_code": "69003",
                "city": "Lyon",
                "country": "FR",
            },
        },
    ),
    "invoice.issued": _message(
        "erp-inv-2026-1187",
        "invoice.issued",
        "2026-11-02T09:15:00Z",
        {
            "invoice_id": "INV-2026-1187",
            "number": "F2026-1187",
            "issue_date": "2026-11-02",
            "due_date": "2026-12-17",
            "currency": "EUR",
            "amount": "1234.56",
        },
    ),
    "payment.received": _message(
        "erp-pay-88120",
        "payment.received",
        "2026-12-20T14:02:11Z",
        {
            "payment_id": "PAY-88120",
            "amount": "1000.00",
            "currency": "EUR",
            "received_on": "2026-12-20",
            "allocations": [{"invoice_id": "INV-2026-1187", "amount": "1000.00"}],
        },
    ),
    "invoice.due_date_passed": _message(
        "erp-due-2026-1187",
        "invoice.due_date_passed",
        "2026-12-18T00:05:00Z",
        {"invoice_id": "INV-2026-1187", "due_date": "2026-12-17"},
    ),
    "credit_note.issued": _message(
        "erp-cn-2026-031",
        "credit_note.issued",
        "2026-12-21T10:00:00Z",
        {
            "credit_note_id": "CN-2026-031",
            "number": "AV2026-031",
            "amount": "34.56",
            "currency": "EUR",
            "issued_on": "2026-12-21",
            "invoice_id": "INV-2026-1187",
            "reason": "damaged goods",
        },
    ),
    "invoice.cancelled": _message(
        "erp-cancel-2026-1190",
        "invoice.cancelled",
        "2026-11-05T11:00:00Z",
        {"invoice_id": "INV-2026-1190", "cancelled_on": "2026-11-05", "reason": "issued twice"},
    ),
    "invoice.disputed": _message(
        "erp-disp-2026-1191",
        "invoice.disputed",
        "2026-12-01T16:30:00Z",
        {"invoice_id": "INV-2026-1191", "reason": "quantity delivered differs", "opened_on": "2026-12-01"},
    ),
    "invoice.dispute_resolved": _message(
        "erp-disp-2026-1191-ok",
        "invoice.dispute_resolved",
        "2026-12-09T09:00:00Z",
        {"invoice_id": "INV-2026-1191", "resolution": "delivery note confirmed", "resolved_on": "2026-12-09"},
    ),
    "promise_to_pay.recorded": _message(
        "erp-ptp-0042-7",
        "promise_to_pay.recorded",
        "2026-12-22T10:10:00Z",
        {
            "promise_id": "PTP-0042-7",
            "promised_date": "2027-01-10",
            "amount": "200.00",
            "currency": "EUR",
            "invoice_ids": ["INV-2026-1187"],
            "note": "cheque posted after the holidays",
        },
    ),
    "payment_plan.agreed": _message(
        "erp-plan-0042-1",
        "payment_plan.agreed",
        "2027-01-12T15:00:00Z",
        {
            "plan_id": "PLAN-0042-1",
            "currency": "EUR",
            "invoice_ids": ["INV-2026-1191"],
            "instalments": [
                {"due_date": "2027-02-15", "amount": "500.00"},
                {"due_date": "2027-03-15", "amount": "500.00"},
            ],
        },
    ),
    "erp.command_acknowledged": _message(
        "erp-ack-blk-00917",
        "erp.command_acknowledged",
        "2026-12-01T08:00:04Z",
        {
            "command_id": "esc-6c0f5b1e9a3d4b7f8e2a1c0d9b8a7f6e",
            "command": "erp.credit_block",
            "status": "applied",
            "erp_reference": "BLK-2026-00917",
        },
    ),
}


def _command(kind: str, command_id: str, at: str, sequence: int, data: dict[str, Any]) -> dict[str, Any]:
    """A body as the relay publishes it: the outbox envelope, the causing event's data, then the decision's metadata."""
    envelope = {"command_id": command_id, "command": kind, **_BASE, "occurred_at": at, "sequence": sequence}
    meta = {"policy": "standard-fr", "policy_version": _POLICY_VERSION, "as_of": at.replace("+00:00", "Z")}
    return {**envelope, **data, **meta}


_INVOICE_1187 = {  # one invoice as the reminders and the hand-over list it, before its own figures
    "invoice_id": "INV-2026-1187",
    "number": "F2026-1187",
    "issue_date": "2026-11-02",
    "due_date": "2026-12-17",
    "amount": "1234.56",
    "outstanding": "1234.56",
}
_POLICY_VERSION = "9b1c3f0e7d2a4c6b8e1f0a3d5c7b9e2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b"


def _action_command(kind: str, command_id: str, at: str, sequence: int, data: dict[str, Any]) -> dict[str, Any]:
    """A body of a person's action as the relay publishes it: the envelope, the event's data, its author."""
    envelope = {"command_id": command_id, "command": kind, **_BASE, "occurred_at": at, "sequence": sequence}
    return {**envelope, **data, "author": "claire.dupont"}


COMMAND_EXAMPLES: dict[str, dict[str, Any]] = {
    "erp.credit_block": _command(
        "erp.credit_block",
        "esc-6c0f5b1e9a3d4b7f8e2a1c0d9b8a7f6e",
        "2026-12-01T08:00:00+00:00",
        17,
        {
            "block_id": "esc-1f2e3d4c5b6a79880716253443526170",
            "reason": "level",
            "overdue": {"EUR": "12500.00"},
            "credit_limit": {"amount": "10000.00", "currency": "EUR"},
        },
    ),
    "erp.credit_unblock": _command(
        "erp.credit_unblock",
        "esc-0a9b8c7d6e5f40312233445566778899",
        "2027-01-08T08:00:00+00:00",
        23,
        {"block_id": "esc-1f2e3d4c5b6a79880716253443526170", "reason": "cleared", "overdue": {}},
    ),
    "erp.collection_handover": _command(
        "erp.collection_handover",
        "esc-5e4d3c2b1a0f9e8d7c6b5a4938271605",
        "2027-02-15T07:00:00+00:00",
        31,
        {
            "handover_id": "esc-2b3c4d5e6f708192a3b4c5d6e7f80912",
            "currency": "EUR",
            "invoice_ids": ["INV-2026-1187"],
            "lines": [
                {
                    **_INVOICE_1187,
                    "days_late": 60,
                    "interest": "25.32",
                    "fee": "40.00",
                    "level": "credit_block",
                    "notices": [
                        {
                            "level": "reminder_1",
                            "reminder_id": "esc-77e6d5c4b3a291807f6e5d4c3b2a1908",
                            "on": "2026-12-18",
                        },
                        {
                            "level": "formal_notice",
                            "reminder_id": "esc-8a7b6c5d4e3f21009f8e7d6c5b4a3921",
                            "on": "2027-01-16",
                        },
                    ],
                }
            ],
            "totals": {"outstanding": "1234.56", "interest": "25.32", "fees": "40.00"},
        },
    ),
    "erp.promise_to_pay": _action_command(
        "erp.promise_to_pay",
        "act-4b1e0c9d8a7f6e5d4c3b2a1908f7e6d5",
        "2026-12-20T10:42:00+00:00",
        12,
        {
            "promise_id": "act-4b1e0c9d8a7f6e5d4c3b2a1908f7e6d5",
            "promised_date": "2027-01-15",
            "amount": "1234.56",
            "currency": "EUR",
            "invoice_ids": ["INV-2026-1187"],
            "note": "cheque posted on Friday",
        },
    ),
    "erp.dispute_opened": _action_command(
        "erp.dispute_opened",
        "act-5c2f1d0e9b8a7f6e5d4c3b2a1908f7e6",
        "2026-12-20T10:42:00+00:00",
        13,
        {"invoice_id": "INV-2026-1187", "reason": "two pallets missing on delivery"},
    ),
    "erp.dispute_resolved": _action_command(
        "erp.dispute_resolved",
        "act-6d3a2e1f0c9b8a7f6e5d4c3b2a1908f7",
        "2027-01-05T14:10:00+00:00",
        15,
        {"invoice_id": "INV-2026-1187", "resolution": "delivery note signed: the invoice stands"},
    ),
    "erp.payment_plan": _action_command(
        "erp.payment_plan",
        "act-7e4b3f2a1d0c9b8a7f6e5d4c3b2a1908",
        "2027-01-06T09:30:00+00:00",
        16,
        {
            "plan_id": "act-7e4b3f2a1d0c9b8a7f6e5d4c3b2a1908",
            "currency": "EUR",
            "invoice_ids": ["INV-2026-1187"],
            "instalments": [
                {"due_date": "2027-01-31", "amount": "617.28"},
                {"due_date": "2027-02-28", "amount": "617.28"},
            ],
        },
    ),
    "erp.credit_limit_change": _action_command(
        "erp.credit_limit_change",
        "act-8f5c4a3b2e1d0c9b8a7f6e5d4c3b2a19",
        "2027-01-10T11:00:00+00:00",
        18,
        {"proposal_id": "act-9a6d5b4c3f2e1d0c9b8a7f6e5d4c3b2a", "currency": "EUR", "amount": "15000.00"},
    ),
    "notifier.send_reminder": _command(
        "notifier.send_reminder",
        "esc-3d2c1b0a99887766554433221100ffee",
        "2026-12-18T08:00:00+00:00",
        9,
        {
            "reminder_id": "esc-77e6d5c4b3a291807f6e5d4c3b2a1908",
            "level": "reminder_1",
            "channel": "email",
            "copy_channels": [],
            "template": "reminder_1",
            "language": "fr",
            "currency": "EUR",
            "invoice_ids": ["INV-2026-1187"],
            "lines": [
                {
                    **_INVOICE_1187,
                    "days_late": 1,
                    "interest": "0",
                    "fee": "0",
                }
            ],
            "totals": {"outstanding": "1234.56", "interest": "0", "fees": "0"},
            "law": "fr",
            "also": [
                {
                    "invoice_id": "INV-2026-1102",
                    "number": "F2026-1102",
                    "issue_date": "2026-10-15",
                    "due_date": "2026-11-30",
                    "amount": "800.00",
                    "outstanding": "800.00",
                    "days_late": 18,
                    "interest": "0",
                    "fee": "0",
                    "level": "reminder_2",
                    "notices": [
                        {
                            "level": "reminder_1",
                            "reminder_id": "esc-0c1d2e3f405162738495a6b7c8d9e0f1",
                            "on": "2026-12-01",
                        },
                        {
                            "level": "reminder_2",
                            "reminder_id": "esc-1d2e3f405162738495a6b7c8d9e0f1a2",
                            "on": "2026-12-15",
                        },
                    ],
                }
            ],
        },
    ),
    "notifier.send_confirmation": {
        "command_id": "act-4f3e2d1c0b9a88776655443322110fed-1",
        "command": "notifier.send_confirmation",
        **_BASE,
        "occurred_at": "2026-12-20T10:30:00+00:00",
        "sequence": 12,
        "author": "claire.martin",
        "confirmation_id": "act-4f3e2d1c0b9a88776655443322110fed-1",
        "plan_id": "plan-2026-0042",
        "language": "fr",
        "currency": "EUR",
        "invoice_ids": ["INV-2026-1187"],
        "instalments": [
            {"due_date": "2027-01-15", "amount": "617.28"},
            {"due_date": "2027-02-15", "amount": "617.28"},
        ],
    },
}
