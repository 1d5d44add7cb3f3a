"""The projections kept beside the log, in the transaction that appends the events they come from.

A customer's head row (``customer_state``: version, head hash, and every ``SNAPSHOT_EVERY`` events a snapshot of the
folded state), and the rows that read the folded state out for queries: ``invoice_balances``, ``credits``,
``customer_balances``. The row builders are those :mod:`shared.ledger.verify` compares the stored rows with, so a
row is rebuilt from the log exactly as it was written.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from shared.ledger.bulk import update_rows, upsert_rows
from shared.ledger.schema import credits, customer_balances, customer_state, invoice_balances
from shared.ledger.state import Changes, Credit, CustomerState, Invoice

SNAPSHOT_EVERY = 50  # events between two snapshots of a customer's state
STATE_KEY = ("tenant", "customer_id")


def save_projections(conn: Connection, touched: list[tuple[CustomerState, Changes]], now: datetime) -> None:
    """Write what the batch changed: stream heads, snapshots now and then, invoices, credits, balances."""
    heads: list[dict[str, Any]] = []
    snapshots: list[dict[str, Any]] = []
    invoice_rows: list[dict[str, Any]] = []
    credit_rows: list[dict[str, Any]] = []
    balance_rows: list[dict[str, Any]] = []
    for state, changes in touched:
        key = {"tenant": state.tenant, "customer_id": state.customer_id}
        head = {**key, "version": state.version, "head_hash": state.head_hash}
        if state.snapshot_version == 0 or state.version - state.snapshot_version >= SNAPSHOT_EVERY:
            state.snapshot_version = state.version
            snapshots.append({**head, "snapshot_version": state.version, "state": state.to_json()})
        else:
            heads.append(head)
        for invoice_id in changes.invoices:
            invoice = state.invoices.get(invoice_id)
            if invoice is not None:
                invoice_rows.append({**key, **invoice_balance_row(state, invoice)})
        for credit_key in changes.credits:
            credit = state.credits[credit_key]
            credit_rows.append({**key, **credit_row(credit)})
        balance_rows.extend({**key, **row, "version": state.version} for row in customer_balance_rows(state))
    update_rows(conn, customer_state, [{**h, "updated_at": now} for h in heads], STATE_KEY)
    update_rows(conn, customer_state, [{**s, "updated_at": now} for s in snapshots], STATE_KEY)
    upsert_rows(conn, invoice_balances, invoice_rows, ("tenant", "customer_id", "invoice_id"))
    upsert_rows(conn, credits, credit_rows, ("tenant", "customer_id", "credit_key"))
    upsert_rows(conn, customer_balances, balance_rows, ("tenant", "customer_id", "currency"))


def invoice_balance_row(state: CustomerState, invoice: Invoice) -> dict[str, Any]:
    """The ``invoice_balances`` row of an invoice, without the stream's key."""
    return {
        "invoice_id": invoice.invoice_id,
        "number": invoice.number,
        "currency": invoice.currency,
        "amount": invoice.amount,
        "outstanding": invoice.outstanding,
        "issue_date": invoice.issue_date,
        "due_date": invoice.due_date,
        "status": invoice.status,
        "disputed": invoice.invoice_id in state.disputes,
    }


def credit_row(credit: Credit) -> dict[str, Any]:
    """The ``credits`` row of a payment or credit note, without the stream's key."""
    return {
        "credit_key": credit.key,
        "kind": credit.kind,
        "currency": credit.currency,
        "amount": credit.amount,
        "received_on": credit.on,
        "unallocated": credit.free + sum(credit.earmarks.values(), Decimal(0)),
        "applied": {invoice_id: str(amount) for invoice_id, amount in credit.applied.items()},
    }


def customer_balance_rows(state: CustomerState) -> list[dict[str, Any]]:
    """The ``customer_balances`` rows of a customer, one per currency, without the stream's key and version."""
    currencies = {i.currency for i in state.invoices.values()} | {c.currency for c in state.credits.values()}
    balances, unallocated = state.balances(), state.unallocated()
    open_counts: dict[str, int] = {}
    for invoice in state.invoices.values():
        if invoice.is_open:
            open_counts[invoice.currency] = open_counts.get(invoice.currency, 0) + 1
    return [
        {
            "currency": currency,
            "balance": balances.get(currency, Decimal(0)),
            "unallocated": unallocated.get(currency, Decimal(0)),
            "open_invoices": open_counts.get(currency, 0),
        }
        for currency in sorted(currencies)
    ]
