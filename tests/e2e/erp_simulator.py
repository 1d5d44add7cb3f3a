"""An ERP as seen from outside: generates v1 messages and publishes them with plain pika.

Nothing here imports relance. The expected outcome (which event ids must end in the log, the balance of every
customer per currency, which messages must be dead-lettered and why) is computed from the generator's own
bookkeeping, so the end-to-end test compares relance with an independent answer, not with itself.

The sample mixes what a real ERP sends: customer records, invoices, payments with explicit allocations and without
(oldest invoice first), payments published before the invoice they pay, credit notes, cancellations, disputes and
due-date notices; the same message published twice, the same invoice re-sent under another event_id; and invalid
messages (not JSON, a float amount, an unknown event type, an unknown currency, an invoice id re-issued with a
different amount) with the rejection kind relance must give each.

It is not the demo's generator (services/cli/demo/generator.py), and does not use it: the two serve different ends.
The generator is part of relance and tells a business story a person reads (payment habits, payment terms, promises,
payment plans), sized in customers and months, and says what ingest must do with each message. This simulator must
stay outside relance, so that its answer is not relance's own; it is sized in events, for volume (the kill -9 test
and ``make bench-ingest``), spans two tenants and a second currency, computes every customer's balance, and sets apart
the messages whose verdict depends on the order of delivery (``late_messages``). All they share is the v1 envelope.

Command line, to feed a running deployment by hand::

    python -m tests.e2e.erp_simulator --events 20000 --amqp-url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pika
from pika.spec import Basic

CENT = Decimal("0.01")
EventKey = tuple[str, str]  # (tenant, event_id): event ids are unique per tenant
BalanceKey = tuple[str, str, str]  # (tenant, customer_id, currency)

TENANTS = {"acme-fr": "EUR", "globex-us": "USD"}
SECOND_CURRENCY = {"acme-fr": "USD"}  # some acme-fr customers are also invoiced in USD


@dataclass(frozen=True, slots=True)
class Message:
    routing_key: str
    body: bytes
    message_id: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """A message relance must dead-letter, with the rejection kind it must give."""

    key: str  # the message's event_id, or its AMQP message_id when the body has none (not JSON)
    kind: str
    body: bytes
    event_id: str | None


@dataclass
class Scenario:
    # Published first, in this order.
    messages: list[Message]
    # Published once everything before is in the log. A re-issue of an invoice id with other content is only
    # rejected if the original is applied first; AMQP does not order deliveries across consumers (nor across a
    # worker crash, which sends its unacked messages back), so the test publishes these after the originals landed.
    late_messages: list[Message]
    # Valid events that must be in the log exactly once.
    required: set[EventKey]
    # Groups of event ids carrying the same business fact (an invoice re-sent under a new event_id): whichever
    # arrives first is applied and the other is a duplicate, so exactly one of each group must be in the log.
    alternatives: list[frozenset[EventKey]]
    # sum(invoices not cancelled) - sum(payments + credit notes), per (tenant, customer, currency); no zeros.
    balances: dict[BalanceKey, Decimal]
    invalid: list[Invalid]
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def published(self) -> int:
        return len(self.messages) + len(self.late_messages)

    @property
    def expected_events(self) -> int:
        return len(self.required) + len(self.alternatives)

    def all_messages(self) -> list[Message]:
        return self.messages + self.late_messages


@dataclass
class _Invoice:
    invoice_id: str
    currency: str
    amount: Decimal
    data: dict[str, Any]
    event_id: str
    cancelled: bool = False
    resent: bool = False
    disputed: bool = False
    due_noticed: bool = False


@dataclass
class _Customer:
    tenant: str
    customer_id: str
    currencies: list[str]
    invoices: list[_Invoice] = field(default_factory=list)


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT))


class _Generator:
    def __init__(self, events: int, customers: int, seed: int, prefix: str) -> None:
        self.target = events
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.clock = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        self.out: list[Message] = []
        self.late: list[Message] = []
        self.deferred: list[tuple[int, Message]] = []  # (release once len(out) reaches this, message)
        self.valid_published: list[Message] = []  # candidates for an exact re-publication
        self.required: set[EventKey] = set()
        self.alternatives: list[frozenset[EventKey]] = []
        self.balances: dict[BalanceKey, Decimal] = {}
        self.invalid: list[Invalid] = []
        self.stats: dict[str, int] = {}
        self.counter = 0
        self.customers = []
        tenants = list(TENANTS)
        for n in range(customers):
            tenant = tenants[0] if n % 3 else tenants[1]  # two thirds acme-fr, one third globex-us
            currencies = [TENANTS[tenant]]
            if tenant in SECOND_CURRENCY and self.rng.random() < 0.15:
                currencies.append(SECOND_CURRENCY[tenant])
            self.customers.append(_Customer(tenant, f"C-{n:05d}", currencies))

    # ------------------------------------------------------------------------------------------------ plumbing
    def _pending(self) -> int:
        return len(self.out) + len(self.deferred) + len(self.late)

    def _id(self, kind: str) -> str:
        self.counter += 1
        return f"{self.prefix}-{kind}-{self.counter:07d}"

    def _tick(self) -> str:
        self.clock += timedelta(minutes=self.rng.randint(1, 40))
        return self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _envelope(self, customer: _Customer, event_type: str, data: dict[str, Any], event_id: str) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "event_type": event_type,
            "tenant": customer.tenant,
            "customer_id": customer.customer_id,
            "occurred_at": self._tick(),
            "data": data,
        }

    def _emit(self, message: Message, *, delay: int = 0) -> None:
        if delay:
            self.deferred.append((len(self.out) + delay, message))
        else:
            self.out.append(message)
        self._release()

    def _release(self) -> None:
        ready = [m for at, m in self.deferred if at <= len(self.out)]
        if ready:
            self.deferred = [(at, m) for at, m in self.deferred if at > len(self.out)]
            self.out.extend(ready)

    def _valid(
        self, customer: _Customer, event_type: str, data: dict[str, Any], *, delay: int = 0, kind: str = ""
    ) -> Message:
        event_id = self._id(kind or event_type.split(".")[0])
        body = json.dumps(self._envelope(customer, event_type, data, event_id)).encode()
        message = Message(event_type, body, event_id)
        self.required.add((customer.tenant, event_id))
        self.valid_published.append(message)
        self._emit(message, delay=delay)
        self._count(event_type)
        return message

    def _add(self, customer: _Customer, currency: str, amount: Decimal) -> None:
        key = (customer.tenant, customer.customer_id, currency)
        self.balances[key] = self.balances.get(key, Decimal(0)) + amount

    # ------------------------------------------------------------------------------------------------ facts
    def customer_record(self, customer: _Customer) -> None:
        data = {
            "name": f"Client {customer.customer_id}",
            "emails": [f"ap-{customer.customer_id.lower()}@example.com"],
            "language": "fr" if customer.tenant == "acme-fr" else "en",
            "segment": self.rng.choice(["retail", "wholesale", "public"]),
        }
        self._valid(customer, "customer.upserted", data, kind="cust")

    def invoice(self, customer: _Customer, *, delay: int = 0) -> _Invoice:
        currency = self.rng.choice(customer.currencies)
        amount = Decimal(self.rng.randint(1000, 500000)) / 100
        invoice_id = self._id("INV")
        issued = self.clock.date() - timedelta(days=self.rng.randint(0, 60))
        data = {
            "invoice_id": invoice_id,
            "number": f"F-{invoice_id[-7:]}",
            "issue_date": issued.isoformat(),
            "due_date": (issued + timedelta(days=self.rng.choice([30, 45, 60]))).isoformat(),
            "currency": currency,
            "amount": _money(amount),
        }
        message = self._valid(customer, "invoice.issued", data, delay=delay, kind="inv")
        invoice = _Invoice(invoice_id, currency, amount, data, message.message_id)
        customer.invoices.append(invoice)
        self._add(customer, currency, amount)
        return invoice

    def payment(self, customer: _Customer, *, allocate_to: list[_Invoice] | None = None) -> None:
        if allocate_to:
            currency = allocate_to[0].currency
            allocations = []
            for invoice in allocate_to:
                share = (invoice.amount * Decimal(self.rng.choice([25, 50, 100])) / 100).quantize(CENT)
                allocations.append({"invoice_id": invoice.invoice_id, "amount": _money(share)})
            amount = sum((Decimal(a["amount"]) for a in allocations), Decimal(0))
            amount += Decimal(self.rng.choice([0, 0, 0, 1500])) / 100
            self._count("payment.allocated")
        else:
            currency = self.rng.choice(customer.currencies)
            amount = Decimal(self.rng.randint(500, 300000)) / 100
            allocations = []
            self._count("payment.fifo")
        data: dict[str, Any] = {
            "payment_id": self._id("PAY"),
            "amount": _money(amount),
            "currency": currency,
            "received_on": self.clock.date().isoformat(),
        }
        if allocations:
            data["allocations"] = allocations
        self._valid(customer, "payment.received", data, kind="pay")
        self._add(customer, currency, -amount)

    def payment_before_invoice(self, customer: _Customer) -> None:
        """The payment is published first; the invoice it pays follows a few to a few hundred messages later."""
        invoice = self.invoice(customer, delay=self.rng.randint(3, 400))
        self.payment(customer, allocate_to=[invoice])
        self._count("out_of_order_payment")

    def credit_note(self, customer: _Customer) -> None:
        invoice = self.rng.choice(customer.invoices) if customer.invoices and self.rng.random() < 0.6 else None
        currency = invoice.currency if invoice else self.rng.choice(customer.currencies)
        top = invoice.amount if invoice else Decimal(500)
        amount = max(CENT, (top * Decimal(self.rng.randint(5, 100)) / 100).quantize(CENT))
        data = {
            "credit_note_id": self._id("CN"),
            "amount": _money(amount),
            "currency": currency,
            "issued_on": self.clock.date().isoformat(),
        }
        if invoice:
            data["invoice_id"] = invoice.invoice_id
        self._valid(customer, "credit_note.issued", data, kind="cn")
        self._add(customer, currency, -amount)

    def cancellation(self, customer: _Customer) -> None:
        candidates = [i for i in customer.invoices if not i.cancelled]
        if not candidates:
            self.invoice(customer)
            return
        invoice = self.rng.choice(candidates)
        invoice.cancelled = True
        data = {"invoice_id": invoice.invoice_id, "cancelled_on": self.clock.date().isoformat(), "reason": "error"}
        self._valid(customer, "invoice.cancelled", data, kind="cancel")
        self._add(customer, invoice.currency, -invoice.amount)

    def dispute_or_notice(self, customer: _Customer) -> None:
        invoice = self.rng.choice(customer.invoices) if customer.invoices else None
        if invoice is None:
            self.invoice(customer)
        elif not invoice.disputed and self.rng.random() < 0.5:
            invoice.disputed = True
            data = {"invoice_id": invoice.invoice_id, "reason": "goods not received"}
            self._valid(customer, "invoice.disputed", data, kind="disp")
        elif not invoice.due_noticed:
            invoice.due_noticed = True
            data = {"invoice_id": invoice.invoice_id, "due_date": invoice.data["due_date"]}
            self._valid(customer, "invoice.due_date_passed", data, kind="due")
        else:
            self.payment(customer)

    # ------------------------------------------------------------------------------------------------ duplicates
    def republish(self) -> None:
        """The very same message again (an ERP retrying after a lost confirm)."""
        self.out.append(self.rng.choice(self.valid_published))
        self._release()
        self._count("duplicate.same_message")

    def resend_invoice(self, customer: _Customer) -> None:
        """The same invoice again under a new event_id (an ERP re-export): a duplicate by content."""
        candidates = [i for i in customer.invoices if not i.resent]
        if not candidates:
            self.invoice(customer)
            return
        invoice = self.rng.choice(candidates)
        invoice.resent = True
        event_id = self._id("inv-resend")
        body = json.dumps(self._envelope(customer, "invoice.issued", invoice.data, event_id)).encode()
        self._emit(Message("invoice.issued", body, event_id))
        original = (customer.tenant, invoice.event_id)
        self.required.discard(original)
        self.alternatives.append(frozenset({original, (customer.tenant, event_id)}))
        self._count("duplicate.resent_invoice")

    # ------------------------------------------------------------------------------------------------ invalid
    def invalid_message(self, customer: _Customer) -> None:
        kind = self.rng.choice(["not_json", "float", "unknown_type", "currency", "conflict"])
        if kind == "conflict" and not customer.invoices:
            kind = "currency"
        event_id = self._id(f"bad-{kind}")
        if kind == "conflict" and customer.invoices:
            invoice = self.rng.choice(customer.invoices)
            data = {**invoice.data, "amount": _money(invoice.amount + 1)}
            body = json.dumps(self._envelope(customer, "invoice.issued", data, event_id)).encode()
            message = Message("invoice.issued", body, event_id)
            self.late.append(message)
            self.invalid.append(Invalid(event_id, "business_rule", body, event_id))
            self._count("invalid.conflicting_reissue")
            return
        if kind == "not_json":
            body = f'{{"event_id": "{event_id}", "event_type": "invoice.issued", <truncated export'.encode()
            message = Message("invoice.issued", body, event_id)
            self.invalid.append(Invalid(event_id, "not_json", body, None))
        elif kind == "unknown_type":
            envelope = self._envelope(customer, "invoice.reissued", {"invoice_id": "X"}, event_id)
            body = json.dumps(envelope).encode()
            message = Message("invoice.reissued", body, event_id)
            self.invalid.append(Invalid(event_id, "unknown_event_type", body, event_id))
        else:
            data = {
                "payment_id": self._id("PAY"),
                "amount": "125.50",
                "currency": "EUR",
                "received_on": self.clock.date().isoformat(),
            }
            if kind == "float":
                data["amount"] = 125.5  # a JSON number: money must be a decimal string
            else:
                data["currency"] = "EUX"  # not an ISO 4217 code
            body = json.dumps(self._envelope(customer, "payment.received", data, event_id)).encode()
            message = Message("payment.received", body, event_id)
            self.invalid.append(Invalid(event_id, "schema", body, event_id))
        self._emit(message)
        self._count(f"invalid.{kind}")

    # ------------------------------------------------------------------------------------------------ the run
    def run(self) -> Scenario:
        for customer in self.customers:
            if self._pending() >= self.target:
                break
            self.customer_record(customer)
        actions: list[tuple[int, Callable[[_Customer], object]]] = [
            (40, lambda c: self.invoice(c)),
            (14, lambda c: self.payment(c)),
            (12, self._allocated_payment),
            (4, self.payment_before_invoice),
            (6, self.credit_note),
            (4, self.cancellation),
            (5, self.dispute_or_notice),
            (3, lambda c: self.republish()),
            (2, self.resend_invoice),
            (2, self.invalid_message),
        ]
        weights = [w for w, _ in actions]
        while self._pending() < self.target:
            customer = self.rng.choice(self.customers)
            if self.target - self._pending() == 1:
                self.invoice(customer)  # every other action may add two messages
                continue
            _, action = self.rng.choices(actions, weights)[0]
            action(customer)
        self.out.extend(m for _, m in sorted(self.deferred, key=lambda d: d[0]))
        self.deferred = []
        return Scenario(
            messages=self.out,
            late_messages=self.late,
            required=self.required,
            alternatives=self.alternatives,
            balances={k: v for k, v in self.balances.items() if v != 0},
            invalid=self.invalid,
            stats=dict(sorted(self.stats.items())),
        )

    def _allocated_payment(self, customer: _Customer) -> None:
        if not customer.invoices:
            self.invoice(customer)
            return
        currency = self.rng.choice([i.currency for i in customer.invoices])
        same = [i for i in customer.invoices if i.currency == currency]
        self.payment(customer, allocate_to=self.rng.sample(same, min(len(same), self.rng.choice([1, 1, 2]))))


def generate(events: int = 20000, *, customers: int = 300, seed: int = 20261102, prefix: str = "erp") -> Scenario:
    """A reproducible sample of ``events`` messages (duplicates and invalid ones included)."""
    return _Generator(events, customers, seed, prefix).run()


# ---------------------------------------------------------------------------------------------------- publishing
class PublishError(RuntimeError):
    """The broker refused a message (nack) or could not route it to any queue (returned)."""


def publish(messages: Iterable[Message], amqp_url: str, exchange: str, *, window: int = 1000) -> int:
    """Publish persistent messages with publisher confirms; raise :class:`PublishError` unless all were confirmed.

    Confirms are pipelined: up to ``window`` messages are in flight, as a real ERP integration would publish at
    volume (waiting for each confirm in turn caps a publisher at a few hundred messages a second). ``mandatory``
    turns an unroutable message (no queue bound for its routing key) into an error instead of a silent loss.
    """
    return _Publisher(list(messages), amqp_url, exchange, window).run()


class _Publisher:
    def __init__(self, messages: list[Message], amqp_url: str, exchange: str, window: int) -> None:
        self.messages = messages
        self.parameters = pika.URLParameters(amqp_url)
        self.exchange = exchange
        self.window = window
        self.sent = 0
        self.confirmed = 0
        self.pending: dict[int, str] = {}  # delivery tag -> message_id
        self.error: str | None = None
        self.connection: pika.SelectConnection | None = None
        self.channel: Any = None
        self.closing = False

    def run(self) -> int:
        if not self.messages:
            return 0
        self.connection = pika.SelectConnection(
            self.parameters,
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel),
            on_open_error_callback=lambda conn, exc: self._fail(f"cannot connect: {exc!r}"),
            on_close_callback=lambda conn, reason: conn.ioloop.stop(),
        )
        self.connection.ioloop.start()
        if self.error:
            raise PublishError(self.error)
        if self.confirmed != len(self.messages):
            raise PublishError(f"only {self.confirmed} of {len(self.messages)} messages were confirmed")
        return self.confirmed

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda frame: self._send())

    def _send(self) -> None:
        while self.error is None and self.sent < len(self.messages) and len(self.pending) < self.window:
            message = self.messages[self.sent]
            properties = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=message.message_id,
                app_id="erp-simulator",
            )
            self.channel.basic_publish(self.exchange, message.routing_key, message.body, properties, mandatory=True)
            self.sent += 1
            self.pending[self.sent] = message.message_id  # confirm tags count publishes from 1
        if self.error is None and self.sent == len(self.messages) and not self.pending:
            self._close()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tags = [t for t in self.pending if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        for tag in tags:
            message_id = self.pending.pop(tag, None)
            if isinstance(method, Basic.Nack):
                self._fail(f"broker nacked message {message_id}")
                return
            self.confirmed += 1
        self._send()

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        if not self.closing:
            self._fail(f"channel closed by the broker: {reason!r}")

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._fail(f"message {properties.message_id} was unroutable: {method.reply_text} (no queue bound?)")

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self._close()

    def _close(self) -> None:
        self.closing = True
        connection = self.connection
        if connection is not None and connection.is_open:
            connection.close()
        elif connection is not None and connection.is_closed:
            connection.ioloop.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20261102)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--exchange", default="relance.events")
    parser.add_argument("--dry-run", action="store_true", help="only print what would be published")
    args = parser.parse_args(argv)
    scenario = generate(args.events, customers=args.customers, seed=args.seed)
    print(f"{scenario.published} messages, {scenario.expected_events} events expected in the log")
    print(f"{len(scenario.invalid)} invalid, {len(scenario.balances)} non-zero balances")
    for what, count in scenario.stats.items():
        print(f"  {what:32} {count}")
    if args.dry_run:
        return 0
    started = time.perf_counter()
    sent = publish(scenario.all_messages(), args.amqp_url, args.exchange)
    print(f"published {sent} messages in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
