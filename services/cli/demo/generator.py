"""A realistic, repeatable sample of what an ERP publishes: B2B customers, invoices, payments and the usual mess.

Everything is derived from one seed, so the same arguments always give byte-identical messages. The sample is
built in three steps:

1. *The business*: customers with a payment habit (punctual, late, partial, very slow, never pays), invoices on
   30/45/60-day or "45 days end of month" terms, and what happened to each invoice up to the as-of date (payments,
   credit notes, cancellations, disputes, promises to pay, a payment plan).
2. *The wire*: those facts as contract-v1 messages in the order an ERP would publish them, then the disorder real
   integrations show: payments published before their invoice, redelivered messages, invoices re-sent with a new
   event_id, and a handful of invalid messages.
3. *The expectation*: for every message, what the ingest must do with it (apply, count as duplicate, or reject and
   why), so the demo and the tests can check the outcome message by message.

The business is built here (its customers in :mod:`services.cli.demo.customers`), the wire and the expectation in
:mod:`services.cli.demo.wire`; the data model they share is :mod:`services.cli.demo.sample`.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from services.cli.demo.customers import customer_profile, make_customers
from services.cli.demo.sample import (
    AS_OF,
    CENT,
    Behaviour,
    Builder,
    Customer,
    InvoiceDraft,
    Sample,
    due_on,
    month_end,
    months_before,
)
from services.cli.demo.wire import to_wire

__all__ = ["AS_OF", "Sample", "generate"]

_DISPUTE_REASONS = (
    "marchandise endommagée à la livraison",
    "quantité facturée différente du bon de livraison",
    "prix différent du devis accepté",
    "prestation non conforme au cahier des charges",
)
_RESOLUTIONS = (
    "avoir émis pour la part contestée",
    "accord commercial : remise consentie",
)
_CREDIT_REASONS = ("geste commercial", "retour de marchandise", "remise sur volume", "erreur de prix")


def generate(customers: int = 300, months: int = 4, seed: int = 7, as_of: date = AS_OF) -> Sample:
    """Build the sample: ``customers`` customers, ``months`` months of activity ending on ``as_of``."""
    if customers < 10:
        raise ValueError("the demo needs at least 10 customers to show every kind of event")
    if not 1 <= months <= 36:
        raise ValueError("months must be between 1 and 36")
    rng = random.Random(seed)
    builder = Builder(rng=rng, as_of=as_of, start=months_before(as_of, months))
    people = make_customers(rng, customers)
    for customer in people:
        _customer_history(builder, customer)
    _special_cases(builder, people)
    messages = to_wire(builder, people)
    return Sample(as_of=as_of, seed=seed, customers=tuple(people), messages=tuple(messages))


def _customer_history(b: Builder, customer: Customer) -> None:
    rng = b.rng
    onboarded = b.start - timedelta(days=rng.randint(1, 20))
    profile = customer_profile(rng, customer)
    b.add(b.moment(onboarded), customer, "customer.upserted", profile)
    if rng.random() < 0.1:
        changed_on = b.start + timedelta(days=rng.randint(10, max(11, (b.as_of - b.start).days - 5)))
        b.add(b.moment(changed_on), customer, "customer.upserted", customer_profile(rng, customer, revision=1))

    per_month = rng.choice((1, 1, 2, 2, 2, 3, 3, 4, 6))
    days = (b.as_of - b.start).days
    issue_days = sorted(b.start + timedelta(days=rng.randrange(days)) for _ in range(max(1, per_month * days // 30)))
    invoices: list[InvoiceDraft] = []
    for index, issued in enumerate(issue_days):
        cents = max(8000, min(6_000_000, int(rng.lognormvariate(11.6, 0.9))))
        invoice = InvoiceDraft(
            customer=customer,
            invoice_id=f"{customer.tenant[-2:]}-{customer.customer_id}-{index + 1:03d}",
            issue_date=issued,
            due_date=due_on(issued, customer.terms),
            amount=Decimal(cents) * CENT,
        )
        invoices.append(invoice)
        b.invoices.append(invoice)
        data = _invoice_data(invoice)
        if customer.tenant == "acme-uk" and index == 0:
            data["customer"] = profile  # this ERP sends the customer with its first invoice
        b.add(b.moment(issued, 8, 18), customer, "invoice.issued", data)
        if rng.random() < 0.025:
            _credit_note(b, invoice, issued + timedelta(days=rng.randint(3, 20)))
    _payments(b, customer, invoices)


def _invoice_data(invoice: InvoiceDraft) -> dict[str, Any]:
    return {
        "invoice_id": invoice.invoice_id,
        "number": "",  # numbered in issue order across customers once every invoice exists (see to_wire)
        "issue_date": invoice.issue_date.isoformat(),
        "due_date": invoice.due_date.isoformat(),
        "currency": invoice.customer.currency,
        "amount": str(invoice.amount),
    }


def _credit_note(b: Builder, invoice: InvoiceDraft, on: date, reason: str = "", share: Decimal | None = None) -> None:
    share = share if share is not None else Decimal(b.rng.randint(5, 20)) / 100
    amount = (invoice.amount * share).quantize(CENT)
    customer = invoice.customer
    data = {
        "credit_note_id": f"AV-{invoice.invoice_id}",
        "number": "",
        "amount": str(amount),
        "currency": customer.currency,
        "issued_on": on.isoformat(),
        "invoice_id": invoice.invoice_id,
        "reason": reason or b.rng.choice(_CREDIT_REASONS),
    }
    if b.add(b.moment(on), customer, "credit_note.issued", data):
        invoice.credited += amount
        invoice.settlements.append((on, amount))


def _payments(b: Builder, customer: Customer, invoices: list[InvoiceDraft]) -> None:
    """Pay the invoices as this customer's habit says; monthly payers group a month's invoices in one transfer."""
    rng = b.rng
    monthly = customer.behaviour in ("punctual", "late") and rng.random() < 0.15
    groups: dict[date, list[tuple[InvoiceDraft, Decimal]]] = {}
    for invoice in invoices:
        for on, amount in _instalments(rng, customer.behaviour, invoice):
            if monthly:
                on = month_end(on) + timedelta(days=10)
            groups.setdefault(on, []).append((invoice, amount))
    for on in sorted(groups):
        if on > b.as_of:
            continue
        items = groups[on]
        explicit = len(items) > 1 or rng.random() < 0.45
        for part in [items] if explicit else [[item] for item in items]:
            _pay(b, customer, on, part, explicit)


def _instalments(rng: random.Random, behaviour: Behaviour, invoice: InvoiceDraft) -> list[tuple[date, Decimal]]:
    due, net = invoice.due_date, invoice.amount - invoice.credited
    if behaviour == "punctual":
        return [(max(invoice.issue_date + timedelta(days=2), due - timedelta(days=rng.randint(0, 12))), net)]
    if behaviour == "late":
        return [(due + timedelta(days=rng.choice((rng.randint(1, 20), rng.randint(5, 75)))), net)]
    if behaviour == "slow":
        return [(due + timedelta(days=rng.randint(80, 130)), net)]
    if behaviour == "partial":
        first = (net * Decimal(rng.randint(30, 70)) / 100).quantize(CENT)
        paid = [(due + timedelta(days=rng.randint(0, 20)), first)]
        if rng.random() < 0.5:
            paid.append((due + timedelta(days=rng.randint(30, 90)), net - first))
        return paid
    return []


def _pay(
    b: Builder,
    customer: Customer,
    on: date,
    items: list[tuple[InvoiceDraft, Decimal]],
    explicit: bool,
    *,
    count: bool = True,
) -> None:
    total = sum((amount for _, amount in items), Decimal(0))
    data: dict[str, Any] = {
        "payment_id": b.number(f"PAY-{customer.customer_id}-", on.year),
        "amount": str(total),
        "currency": customer.currency,
        "received_on": on.isoformat(),
    }
    if explicit:
        data["allocations"] = [{"invoice_id": i.invoice_id, "amount": str(a)} for i, a in items]
    if b.add(b.moment(on, 6, 20), customer, "payment.received", data) and count:
        for invoice, amount in items:
            invoice.paid += amount
            invoice.settlements.append((on, amount))


def _special_cases(b: Builder, people: list[Customer]) -> None:
    """Cancellations, disputes, rebates, promises to pay and payment plans: a few of each, always present."""
    rng = b.rng
    scale = max(1, len(people) // 100)
    data: dict[str, Any]

    unpaid = [i for i in b.invoices if i.paid == 0 and i.credited == 0 and i.issue_date < b.as_of - timedelta(days=5)]
    rng.shuffle(unpaid)
    for invoice in unpaid[: 1 + scale]:
        on = invoice.issue_date + timedelta(days=rng.randint(1, 4))
        data = {"invoice_id": invoice.invoice_id, "cancelled_on": on.isoformat(), "reason": "facture émise par erreur"}
        if b.add(b.moment(on), invoice.customer, "invoice.cancelled", data):
            invoice.cancelled = True
    for index, invoice in enumerate(i for i in unpaid[1 + scale :] if i.due_date < b.as_of - timedelta(days=20)):
        if index >= 2 * scale:
            break
        _dispute(b, invoice, resolve=index % 2 == 0)

    punctual = [c for c in people if c.behaviour == "punctual"]
    for customer in rng.sample(punctual, min(len(punctual), 1 + scale)):
        on = b.as_of - timedelta(days=rng.randint(5, 40))
        data = {
            "credit_note_id": f"RFA-{customer.customer_id}-{on.year}",
            "number": "",
            "amount": f"{rng.randint(50, 400)}.00",
            "currency": customer.currency,
            "issued_on": on.isoformat(),
            "reason": "remise de fin d'année sur volume",
        }
        b.add(b.moment(on), customer, "credit_note.issued", data)

    overdue = _overdue_by_customer(b)
    laggards = [c for c in people if c.behaviour in ("late", "slow", "partial") and c.customer_id in overdue]
    for customer in rng.sample(laggards, min(len(laggards), 2 * scale)):
        invoices = overdue[customer.customer_id]
        recorded = b.as_of - timedelta(days=rng.randint(1, 12))
        data = {
            "promise_id": f"PRM-{customer.customer_id}-{recorded:%Y%m%d}",
            "promised_date": (recorded + timedelta(days=rng.randint(5, 25))).isoformat(),
            "amount": str(sum((i.open for i in invoices), Decimal(0))),
            "currency": customer.currency,
            "invoice_ids": [i.invoice_id for i in invoices],
            "note": "promesse obtenue par téléphone" if customer.language == "fr" else "promised on the phone",
        }
        b.add(b.moment(recorded), customer, "promise_to_pay.recorded", data)

    strugglers = [c for c in people if c.behaviour in ("never", "partial") and c.customer_id in overdue]
    for customer in strugglers[: 1 + scale // 2]:
        _payment_plan(b, customer, overdue[customer.customer_id])

    _paid_twice(b, people, 1 + scale // 2)


def _paid_twice(b: Builder, people: list[Customer], how_many: int) -> None:
    """Customers with nothing left to pay who paid their last invoice a second time: credit the ledger must keep."""
    invoices: dict[str, list[InvoiceDraft]] = {}
    for invoice in b.invoices:
        invoices.setdefault(invoice.customer.customer_id, []).append(invoice)
    done = 0
    for customer in people:
        mine = [i for i in invoices.get(customer.customer_id, []) if not i.cancelled]
        if done >= how_many or not mine or any(i.open != 0 or not i.settlements for i in mine):
            continue
        last = max(mine, key=lambda i: max(on for on, _ in i.settlements))
        on = max(on for on, _ in last.settlements) + timedelta(days=b.rng.randint(1, 5))
        if on <= b.as_of:
            net = last.amount - last.credited
            _pay(b, customer, on, [(last, net)], explicit=True, count=False)
            done += 1


def _dispute(b: Builder, invoice: InvoiceDraft, *, resolve: bool) -> None:
    rng, customer = b.rng, invoice.customer
    opened = invoice.due_date + timedelta(days=rng.randint(1, 10))
    data = {"invoice_id": invoice.invoice_id, "reason": rng.choice(_DISPUTE_REASONS), "opened_on": opened.isoformat()}
    if not b.add(b.moment(opened), customer, "invoice.disputed", data):
        return
    invoice.disputed = True
    resolved = opened + timedelta(days=rng.randint(5, 15))
    if not resolve or resolved > b.as_of:
        return
    resolution = rng.choice(_RESOLUTIONS)
    data = {"invoice_id": invoice.invoice_id, "resolution": resolution, "resolved_on": resolved.isoformat()}
    b.add(b.moment(resolved), customer, "invoice.dispute_resolved", data)
    invoice.disputed = False
    _credit_note(b, invoice, resolved, reason=resolution, share=Decimal("0.15"))
    paid_on = resolved + timedelta(days=rng.randint(3, 10))
    _pay(b, customer, paid_on, [(invoice, invoice.open)], explicit=True)


def _payment_plan(b: Builder, customer: Customer, invoices: list[InvoiceDraft]) -> None:
    total = sum((i.open for i in invoices), Decimal(0))
    agreed = b.as_of - timedelta(days=25)
    share = (total / 3).quantize(CENT)
    amounts = [share, share, total - 2 * share]
    dates = [agreed + timedelta(days=10 + 30 * n) for n in range(3)]
    data = {
        "plan_id": f"ECH-{customer.customer_id}-{agreed:%Y%m}",
        "currency": customer.currency,
        "invoice_ids": [i.invoice_id for i in invoices],
        "instalments": [{"due_date": d.isoformat(), "amount": str(a)} for d, a in zip(dates, amounts, strict=True)],
    }
    b.add(b.moment(agreed), customer, "payment_plan.agreed", data)
    # The first instalment was honoured, without a remittance advice: the ledger allocates it oldest first.
    _pay(b, customer, dates[0] + timedelta(days=1), [(invoices[0], amounts[0])], explicit=False)


def _overdue_by_customer(b: Builder) -> dict[str, list[InvoiceDraft]]:
    overdue: dict[str, list[InvoiceDraft]] = {}
    for invoice in b.invoices:
        if invoice.open > 0 and not invoice.disputed and invoice.due_date < b.as_of - timedelta(days=15):
            overdue.setdefault(invoice.customer.customer_id, []).append(invoice)
    return overdue
