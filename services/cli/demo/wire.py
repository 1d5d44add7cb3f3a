"""Step two of the sample: the facts as contract-v1 messages in publish order, with the disorder real ERPs show."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from services.cli.demo.customers import customer_profile
from services.cli.demo.sample import Builder, Customer, Message, PendingEvent, encode_envelope


def to_wire(b: Builder, people: list[Customer]) -> list[Message]:
    rng = b.rng
    by_id = {c.customer_id: c for c in people}
    _due_date_notices(b, by_id)
    events = sorted(b.events, key=lambda e: (e.at, e.seq))
    numbers: Counter[str] = Counter()
    for number, event in enumerate(events, start=1):
        event.event_id = f"{event.tenant}-{event.at:%Y%m%d}-{number:06d}"
        if event.event_type in ("invoice.issued", "credit_note.issued"):
            # Invoice and credit-note numbers run per tenant and year, in the order the documents were issued.
            french = event.tenant == "acme-fr"
            prefix = ("FA" if french else "INV") if event.event_type == "invoice.issued" else ("AV" if french else "CN")
            series = f"{prefix}{event.at.year}"
            numbers[series] += 1
            event.data["number"] = f"{series}-{numbers[series]:05d}"

    order: list[PendingEvent] = list(events)
    # Out of order: the payments module publishes at once, invoices go out in a nightly batch.
    position = {id(e): n for n, e in enumerate(order)}
    issued = {(e.tenant, e.data["invoice_id"]): e for e in events if e.event_type == "invoice.issued"}
    allocated = [e for e in events if e.event_type == "payment.received" and e.data.get("allocations")]
    early: list[PendingEvent] = []
    for payment in rng.sample(allocated, min(len(allocated), max(3, len(allocated) // 25))):
        invoice = issued[(payment.tenant, payment.data["allocations"][0]["invoice_id"])]
        if position[id(invoice)] < position[id(payment)]:
            payment.note = f"out_of_order: published before its invoice {invoice.data['invoice_id']}"
            early.append(payment)
    moved = {id(e) for e in early}
    order = [e for e in order if id(e) not in moved]
    for payment in early:
        invoice = issued[(payment.tenant, payment.data["allocations"][0]["invoice_id"])]
        order.insert(next(n for n, e in enumerate(order) if e is invoice), payment)

    messages = [Message(encode_envelope(e.envelope()), e.event_type, e.event_id, "applied", note=e.note) for e in order]

    # Redeliveries: the same message (same event_id) a second time, a little later.
    for original in rng.sample(range(len(order)), max(3, len(order) // 80)):
        event = order[original]
        copy = Message(
            encode_envelope(event.envelope()), event.event_type, event.event_id, "duplicate", note="redelivered"
        )
        _insert_after(messages, event.event_id, copy, rng.randint(1, 400))
    # Re-sent invoices: same content, new event_id (the ERP re-exported them).
    invoices = [e for e in order if e.event_type == "invoice.issued"]
    for number, event in enumerate(rng.sample(invoices, max(2, len(invoices) // 200)), start=1):
        envelope = {**event.envelope(), "event_id": f"{event.event_id}-resend{number}"}
        copy = Message(encode_envelope(envelope), event.event_type, envelope["event_id"], "duplicate", note="re-sent")
        _insert_after(messages, event.event_id, copy, rng.randint(50, 1500))

    for after, message in _invalid(b, order, by_id):
        if after:
            _insert_after(messages, after, message, rng.randint(1, 200))
        else:
            messages.insert(rng.randrange(len(messages)), message)
    return messages


def _due_date_notices(b: Builder, by_id: dict[str, Customer]) -> None:
    """acme-fr's ERP reports each invoice still unpaid the day after its due date; acme-uk's does not."""
    for invoice in b.invoices:
        customer = invoice.customer
        if customer.tenant != "acme-fr" or invoice.cancelled or invoice.due_date >= b.as_of:
            continue
        if invoice.settled_by(invoice.due_date):
            continue
        data = {"invoice_id": invoice.invoice_id, "due_date": invoice.due_date.isoformat()}
        b.add(datetime.combine(invoice.due_date + timedelta(days=1), time(5, 30), tzinfo=UTC), customer, _DUE, data)


_DUE = "invoice.due_date_passed"


def _invalid(b: Builder, order: list[PendingEvent], by_id: dict[str, Customer]) -> Iterable[tuple[str | None, Message]]:
    """A handful of messages the ingest must dead-letter, each with the reason an integrator would need."""
    rng = b.rng
    invoices = [e for e in order if e.event_type == "invoice.issued"]
    payments = [e for e in order if e.event_type == "payment.received" and e.tenant == "acme-fr"]
    eur = [e for e in invoices if e.data["currency"] == "EUR"]
    usd = [e for e in invoices if e.data["currency"] == "USD"]

    def bad(template: PendingEvent, suffix: str, data: dict[str, Any], **envelope: Any) -> dict[str, Any]:
        return {**template.envelope(), "event_id": f"{template.event_id}-{suffix}", "data": data, **envelope}

    def msg(body: bytes, raw: dict[str, Any] | None, kind: str, note: str) -> Message:
        event_type = str(raw["event_type"]) if raw else "?"
        event_id = str(raw["event_id"]) if raw else None
        return Message(body, event_type, event_id, "rejected", kind=kind, note=f"invalid: {note}")

    invoice = rng.choice(invoices)
    text = encode_envelope(invoice.envelope()).decode()
    yield None, msg(text[: len(text) // 2].encode(), None, "not_json", "truncated JSON")
    yield None, msg(b"FA2026-00042;C-0042;1250,00;EUR;2026-10-15", None, "not_json", "a CSV row, not JSON")

    payment = rng.choice(payments)
    raw = bad(payment, "float", {**payment.data, "amount": "@@FLOAT@@"})
    body = encode_envelope(raw).replace(b'"@@FLOAT@@"', payment.data["amount"].encode())
    yield None, msg(body, raw, "schema", "amount as a JSON number")

    raw = bad(invoice, "paid", {"invoice_id": invoice.data["invoice_id"]}, event_type="invoice.paid")
    yield None, msg(encode_envelope(raw), raw, "unknown_event_type", "event type not in the contract")
    raw = bad(invoice, "ship", {"order_id": "CMD-88812", "carrier": "Geodis"}, event_type="order.shipped")
    yield None, msg(encode_envelope(raw), raw, "unknown_event_type", "event type not in the contract")

    template = rng.choice(eur)
    raw = bad(template, "euro", {**template.data, "invoice_id": template.data["invoice_id"] + "-X", "currency": "EURO"})
    yield None, msg(encode_envelope(raw), raw, "schema", "unknown currency")

    template = rng.choice(eur)
    wrong = {**template.data, "invoice_id": template.data["invoice_id"] + "-D", "due_date": "2026-01-01"}
    wrong["issue_date"] = "2026-02-01"
    raw = bad(template, "dates", wrong)
    yield None, msg(encode_envelope(raw), raw, "schema", "due date before issue date")

    template = rng.choice(payments)
    raw = bad(template, "tz", {**template.data, "payment_id": template.data["payment_id"] + "-TZ"})
    raw["occurred_at"] = raw["occurred_at"].replace("T", " ").removesuffix("Z")
    yield None, msg(encode_envelope(raw), raw, "schema", "timestamp without time zone")

    template = rng.choice(payments)
    over = {**template.data, "payment_id": template.data["payment_id"] + "-OV"}
    over["allocations"] = [{"invoice_id": invoices[0].data["invoice_id"], "amount": "999999.00"}]
    raw = bad(template, "over", over)
    yield None, msg(encode_envelope(raw), raw, "schema", "allocations exceed the payment")

    customer = by_id[rng.choice(eur).customer_id]
    template = next(e for e in order if e.customer_id == customer.customer_id)
    profile = {**customer_profile(rng, customer), "emails": ["compta(at)example.fr"]}
    raw = bad(template, "mail", profile, event_type="customer.upserted")
    yield None, msg(encode_envelope(raw), raw, "schema", "malformed e-mail address")

    # Business rules: valid on their own, wrong against what the ledger already holds.
    for template in rng.sample(eur, 2):
        changed = {**template.data, "amount": str(Decimal(template.data["amount"]) + Decimal("100.00"))}
        raw = bad(template, "reissue", changed)
        yield (
            template.event_id,
            msg(encode_envelope(raw), raw, "business_rule", "invoice re-issued with another amount"),
        )
    if usd:
        template = rng.choice(usd)
        data = {
            "payment_id": f"PAY-{template.customer_id}-EUR-1",
            "amount": template.data["amount"],
            "currency": "EUR",
            "received_on": template.data["issue_date"],
            "allocations": [{"invoice_id": template.data["invoice_id"], "amount": template.data["amount"]}],
        }
        raw = bad(template, "fx", data, event_type="payment.received")
        yield (
            template.event_id,
            msg(encode_envelope(raw), raw, "business_rule", "EUR payment allocated to a USD invoice"),
        )


def _insert_after(messages: list[Message], event_id: str, message: Message, distance: int) -> None:
    at = next(n for n, m in enumerate(messages) if m.event_id == event_id and m.expect == "applied")
    messages.insert(min(len(messages), at + distance), message)
