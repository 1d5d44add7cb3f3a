"""Builders of ERP events for tests: the data as the ledger stores it, the envelope as an ERP sends it.

Every builder returns an :class:`Ev` (event type, normalised data, a deterministic event_id) so a test can say
``invoice("INV-1", "100.00")`` and hand it to the pure state (:func:`fold`), to the ledger (:func:`incoming`) or to
the contract parser (:func:`body`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.ledger.state import CustomerState
from shared.ledger.store import Incoming

TENANT = "acme-fr"
CUSTOMER = "C-0042"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Ev:
    event_type: str
    data: dict[str, Any]
    event_id: str
    occurred_at: datetime = T0
    metadata: dict[str, Any] = field(default_factory=dict)

    def at(self, occurred_at: datetime) -> Ev:
        return replace(self, occurred_at=occurred_at)

    def with_id(self, event_id: str) -> Ev:
        return replace(self, event_id=event_id)


def _iso(value: str | date) -> str:
    return value if isinstance(value, str) else value.isoformat()


# ---------------------------------------------------------------------------------------------------- builders
def customer(
    name: str = "Boulangeries Martin SAS", *, emails: Iterable[str] = ("compta@martin.fr",), **extra: Any
) -> Ev:
    data = {"name": name, "emails": list(emails), "language": "fr", **extra}
    return Ev("customer.upserted", data, f"cust-{name}")


def invoice(
    invoice_id: str,
    amount: str,
    *,
    currency: str = "EUR",
    issue_date: str | date = "2026-10-01",
    due_date: str | date | None = None,
    number: str | None = None,
) -> Ev:
    issued = date.fromisoformat(_iso(issue_date))
    data = {
        "invoice_id": invoice_id,
        "number": number or f"F-{invoice_id}",
        "issue_date": issued.isoformat(),
        "due_date": _iso(due_date) if due_date is not None else (issued + timedelta(days=30)).isoformat(),
        "currency": currency,
        "amount": amount,
    }
    return Ev("invoice.issued", data, f"inv-{invoice_id}")


def payment(
    payment_id: str,
    amount: str,
    *,
    currency: str = "EUR",
    received_on: str | date = "2026-11-05",
    allocations: dict[str, str] | None = None,
) -> Ev:
    data: dict[str, Any] = {
        "payment_id": payment_id,
        "amount": amount,
        "currency": currency,
        "received_on": _iso(received_on),
    }
    if allocations:
        data["allocations"] = [{"invoice_id": i, "amount": a} for i, a in allocations.items()]
    return Ev("payment.received", data, f"pay-{payment_id}")


def credit_note(
    credit_note_id: str,
    amount: str,
    *,
    currency: str = "EUR",
    issued_on: str | date = "2026-11-06",
    invoice_id: str | None = None,
) -> Ev:
    data: dict[str, Any] = {
        "credit_note_id": credit_note_id,
        "amount": amount,
        "currency": currency,
        "issued_on": _iso(issued_on),
    }
    if invoice_id is not None:
        data["invoice_id"] = invoice_id
    return Ev("credit_note.issued", data, f"cn-{credit_note_id}")


def cancellation(invoice_id: str, reason: str = "issued twice") -> Ev:
    return Ev("invoice.cancelled", {"invoice_id": invoice_id, "reason": reason}, f"cancel-{invoice_id}")


def dispute(invoice_id: str, reason: str = "quantity delivered differs") -> Ev:
    return Ev("invoice.disputed", {"invoice_id": invoice_id, "reason": reason}, f"disp-{invoice_id}")


def dispute_resolved(invoice_id: str, resolution: str = "delivery note confirmed") -> Ev:
    return Ev(
        "invoice.dispute_resolved", {"invoice_id": invoice_id, "resolution": resolution}, f"resolved-{invoice_id}"
    )


# ---------------------------------------------------------------------------------------------------- adapters
def envelope(ev: Ev, *, tenant: str = TENANT, customer_id: str = CUSTOMER) -> dict[str, Any]:
    """The ERP's JSON message for the event (contract v1)."""
    return {
        "event_id": ev.event_id,
        "event_type": ev.event_type,
        "tenant": tenant,
        "customer_id": customer_id,
        "occurred_at": ev.occurred_at.isoformat().replace("+00:00", "Z"),
        "data": ev.data,
    }


def body(ev: Ev, **kwargs: Any) -> bytes:
    return json.dumps(envelope(ev, **kwargs)).encode("utf-8")


def incoming(
    ev: Ev, *, tenant: str = TENANT, customer_id: str = CUSTOMER, expected_version: int | None = None
) -> Incoming:
    return Incoming(
        tenant=tenant,
        customer_id=customer_id,
        event_id=ev.event_id,
        event_type=ev.event_type,
        data=ev.data,
        occurred_at=ev.occurred_at,
        metadata=ev.metadata,
        expected_version=expected_version,
    )


def fold(events: Iterable[Ev], *, tenant: str = TENANT, customer_id: str = CUSTOMER) -> CustomerState:
    """A fresh state fed the events the way the ledger feeds it."""
    feed = Feed(CustomerState(tenant=tenant, customer_id=customer_id))
    feed.deliver(events)
    return feed.state


@dataclass
class Feed:
    """What the ledger does per stream, without a database: skip known event_ids, check, then apply."""

    state: CustomerState
    seen: set[str] = field(default_factory=set)

    def deliver(self, events: Iterable[Ev]) -> list[str]:
        """Apply what the state accepts; returns each event's verdict (``duplicate`` for an event_id seen before)."""
        verdicts = []
        for ev in events:
            if ev.event_id in self.seen:
                verdicts.append("duplicate")
                continue
            check = self.state.check(ev.event_type, ev.data)
            verdicts.append(check.verdict)
            if check.verdict == "new":
                self.seen.add(ev.event_id)
                self.state.version += 1
                self.state.apply(ev.event_type, ev.data, ev.occurred_at.isoformat())
        return verdicts


def expected_balances(events: Iterable[Ev]) -> dict[str, Decimal]:
    """Per currency: what was invoiced and not cancelled, less every payment and credit note."""
    events = list(events)
    cancelled = {e.data["invoice_id"] for e in events if e.event_type == "invoice.cancelled"}
    result: dict[str, Decimal] = {}
    for e in events:
        if e.event_type == "invoice.issued" and e.data["invoice_id"] not in cancelled:
            sign = Decimal(1)
        elif e.event_type in ("payment.received", "credit_note.issued"):
            sign = Decimal(-1)
        else:
            continue
        currency = e.data["currency"]
        result[currency] = result.get(currency, Decimal(0)) + sign * Decimal(e.data["amount"])
    return result
