"""Builders of ERP events for tests: the data as the ledger stores it, the envelope as an ERP sends it.

Every builder returns an :class:`Ev` (event type, normalised data, a deterministic event_id) so a test can say
``invoice("INV-1", "100.00")`` and hand it to the pure state (:func:`fold`), to the ledger (:func:`incoming`) or to
the contract parser (:func:`body`). :func:`summary` says a decision of relance's in a few words, the same way whether
the engine just took it or the ledger recorded it, so the engine's tables and the scenarios' read alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

from hypothesis import strategies as st

from shared.contracts.events import Event, parse
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


def promise(promise_id: str, promised: str, amount: str, invoice_ids: list[str]) -> Ev:
    data: dict[str, Any] = {"promise_id": promise_id, "promised_date": promised, "amount": amount, "currency": "EUR"}
    data["invoice_ids"] = invoice_ids
    return Ev("promise_to_pay.recorded", data, f"promise-{promise_id}")


def plan(plan_id: str, invoice_ids: list[str], instalments: list[tuple[str, str]]) -> Ev:
    data = {
        "plan_id": plan_id,
        "currency": "EUR",
        "invoice_ids": invoice_ids,
        "instalments": [{"due_date": d, "amount": a} for d, a in instalments],
    }
    return Ev("payment_plan.agreed", data, f"plan-{plan_id}")


# ---------------------------------------------------------------------------------------------------- decisions
class Decided(Protocol):
    """A decision as the engine returns it or as the ledger hands it back: its type and its data."""

    @property
    def event_type(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


def summary(decision: Decided) -> tuple[str, ...]:
    """A decision in a few words: enough for the tables to say exactly what was decided."""
    data = decision.data
    match decision.event_type:
        case "escalation.level_reached":
            skipped = f" skipping {','.join(data['skipped'])}" if data["skipped"] else ""
            return ("level", data["invoice_id"], data["level"] + skipped)
        case "reminder.requested":
            return ("reminder", data["currency"], data["level"], ",".join(data["invoice_ids"]))
        case "task.created":
            return ("task", data["kind"], ",".join(data["invoice_ids"]), data["amount_at_risk"])
        case "fee.charged":
            return ("fee", data["invoice_id"], data["amount"])
        case "interest.computed":
            return ("interest", data["invoice_id"], data["amount"])
        case "claim.fixed":
            return ("fixed", data["invoice_id"], data["amount"], data["through"])
        case "credit.blocked":
            return ("blocked", data["reason"])
        case "credit.unblocked":
            return ("unblocked",)
        case "collection.handed_over":
            return ("handed_over", data["currency"], ",".join(data["invoice_ids"]))
    raise AssertionError(decision)


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
    ev: Ev,
    *,
    tenant: str = TENANT,
    customer_id: str = CUSTOMER,
    expected_version: int | None = None,
    dedupe: Literal["id", "content"] = "id",
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
        dedupe=dedupe,
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
    history: list[Ev] = field(default_factory=list)  # what was applied, in order

    def deliver(self, events: Iterable[Ev]) -> list[str]:
        """Apply what the state accepts; returns each event's verdict (``duplicate`` for an event_id seen before)."""
        verdicts = []
        for ev in events:
            if ev.event_id in self.seen:
                verdicts.append("duplicate")
                continue
            event = parse(ev.event_type, ev.data)
            check = self.state.check(event)
            verdicts.append(check.verdict)
            if check.verdict == "new":
                self.seen.add(ev.event_id)
                self.history.append(ev)
                self.state.version += 1
                self.state.apply(event, ev.occurred_at, ev.event_id, recorded_at=None)
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


# ---------------------------------------------------------------------------------------------------- generated
PLACES = {"EUR": 2, "JPY": 0, "KWD": 3}
_DAY0 = date(2026, 6, 1)


def _money(units: int, currency: str) -> str:
    return str(Decimal(units).scaleb(-PLACES[currency]))


@st.composite
def histories(draw: st.DrawFn, max_invoices: int = 6) -> list[Ev]:
    """A consistent history of one customer, unique events in a natural order.

    Invoices in one or two currencies; payments with or without explicit allocations (never more than the payment,
    always in the invoice's currency); credit notes with or without an invoice; cancellations; disputes, some
    resolved. Events reach the ledger in any order, so the order here only serves as the canonical one.
    """
    currencies = draw(st.lists(st.sampled_from(sorted(PLACES)), min_size=1, max_size=2, unique=True))
    units = st.integers(min_value=1, max_value=200_000)
    day = st.integers(min_value=0, max_value=120).map(lambda n: _DAY0 + timedelta(days=n))

    invoices: list[Ev] = []
    for n in range(draw(st.integers(min_value=0, max_value=max_invoices))):
        currency = draw(st.sampled_from(currencies))
        issued = draw(day)
        due = issued + timedelta(days=draw(st.integers(min_value=0, max_value=60)))
        invoices.append(
            invoice(f"INV-{n}", _money(draw(units), currency), currency=currency, issue_date=issued, due_date=due)
        )

    def same_currency(currency: str) -> list[str]:
        return [i.data["invoice_id"] for i in invoices if i.data["currency"] == currency]

    payments: list[Ev] = []
    for n in range(draw(st.integers(min_value=0, max_value=5))):
        currency = draw(st.sampled_from(currencies))
        targets = (
            draw(st.lists(st.sampled_from(same_currency(currency)), unique=True, max_size=3))
            if (same_currency(currency))
            else []
        )
        allocations = {t: draw(units) for t in targets}
        total = sum(allocations.values()) + draw(st.integers(min_value=0 if allocations else 1, max_value=150_000))
        payments.append(
            payment(
                f"P{n}",
                _money(total, currency),
                currency=currency,
                received_on=draw(day),
                allocations={t: _money(u, currency) for t, u in allocations.items()},
            )
        )

    credit_notes: list[Ev] = []
    for n in range(draw(st.integers(min_value=0, max_value=3))):
        currency = draw(st.sampled_from(currencies))
        options = same_currency(currency)
        target = draw(st.none() | st.sampled_from(options)) if options else None
        credit_notes.append(
            credit_note(
                f"CN{n}", _money(draw(units), currency), currency=currency, issued_on=draw(day), invoice_id=target
            )
        )

    ids = [i.data["invoice_id"] for i in invoices]
    pick = st.lists(st.sampled_from(ids), unique=True) if ids else st.just([])
    disputed = draw(pick)
    resolved = draw(st.lists(st.sampled_from(disputed), unique=True)) if disputed else []
    cancelled = draw(pick)

    events = [
        *invoices,
        *[dispute(i) for i in disputed],
        *payments,
        *credit_notes,
        *[dispute_resolved(i) for i in resolved],
        *[cancellation(i) for i in cancelled],
    ]
    return [ev.at(T0 + timedelta(minutes=n)) for n, ev in enumerate(events)]


@st.composite
def deliveries(draw: st.DrawFn, events: list[Ev]) -> list[Ev]:
    """The events as a broker may hand them over: some delivered again, all in any order."""
    again = draw(st.lists(st.sampled_from(events), max_size=len(events))) if events else []
    return list(draw(st.permutations([*events, *again])))


def assert_consistent(state: CustomerState) -> None:
    """Invariants of any folded state: no negative or excessive outstanding, money conserved in every credit."""
    for inv in state.invoices.values():
        assert 0 <= inv.outstanding <= inv.amount, inv
        allocated = sum(inv.allocations.values(), Decimal(0))
        if inv.status == "cancelled":
            assert inv.outstanding == 0 and not inv.allocations, inv
        else:
            assert allocated == inv.amount - inv.outstanding, inv
            assert (inv.status == "paid") == (inv.outstanding == 0), inv
        for key, amount in inv.allocations.items():
            assert amount > 0 and state.credits[key].applied[inv.invoice_id] == amount
    to_claims: dict[str, Decimal] = {}
    for claim in state.claims.all():
        # never more money on a claim than it is due, none on a void one, only on claimed ones
        assert claim.allocated <= (0 if claim.void else max(Decimal(0), claim.charged - claim.waived)), claim
        assert claim.claimed or not claim.settled, claim
        for key, amount in claim.settled.items():
            assert amount > 0 and state.credits[key].currency == claim.currency, claim
            to_claims[key] = to_claims.get(key, Decimal(0)) + amount
    for credit in state.credits.values():
        assert credit.free >= 0, credit
        placed = credit.free + sum(credit.earmarks.values(), Decimal(0)) + sum(credit.applied.values(), Decimal(0))
        assert placed + to_claims.get(credit.key, Decimal(0)) == credit.amount, credit
        for invoice_id, amount in credit.applied.items():
            assert state.invoices[invoice_id].allocations[credit.key] == amount
            assert state.invoices[invoice_id].currency == credit.currency


def typed(ev: Ev) -> Event:
    """The event as the state folds it: its data parsed into its model."""
    return parse(ev.event_type, ev.data)
