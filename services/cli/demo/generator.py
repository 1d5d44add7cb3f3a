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
"""

from __future__ import annotations

import calendar
import json
import random
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

AS_OF = date(2026, 11, 20)
CENT = Decimal("0.01")

Behaviour = Literal["punctual", "late", "partial", "slow", "never"]
Expect = Literal["applied", "duplicate", "rejected"]

_BEHAVIOURS: tuple[tuple[Behaviour, int], ...] = (
    ("punctual", 55),
    ("late", 23),
    ("partial", 12),
    ("slow", 6),
    ("never", 4),
)
_TERMS = ("30", "30", "45", "45", "60", "45EOM")

_FR_TRADES = (
    "Boulangerie",
    "Transports",
    "Garage",
    "Menuiserie",
    "Imprimerie",
    "Cabinet",
    "Atelier",
    "Fromagerie",
    "Brasserie",
    "Quincaillerie",
    "Librairie",
    "Hôtel",
    "Laboratoires",
    "Électricité",
    "Plomberie",
    "Charcuterie",
    "Agence",
    "Bureau d'études",
    "Serrurerie",
    "Pépinières",
)
_FR_NAMES = (
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefèvre",
    "Michel",
    "Garcia",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier",
    "Morel",
    "Girard",
    "André",
    "Mercier",
    "Dupont",
    "Lambert",
    "Bonnet",
    "François",
    "Chevalier",
    "Gauthier",
)
_FR_FORMS = ("SARL", "SAS", "SA", "EURL", "& Fils", "Frères")
_FR_FIRST = ("Sophie", "Julien", "Camille", "Nicolas", "Élodie", "Mathieu", "Claire", "Antoine", "Aurélie", "Hugo")
_UK_NAMES = ("Harris", "Clarke", "Walker", "Wright", "Hughes", "Edwards", "Green", "Hall", "Wood", "Turner", "Baker")
_UK_TRADES = ("Engineering", "Logistics", "Foods", "Print", "Builders", "Supplies", "Consulting", "Retail")
_UK_FORMS = ("Ltd", "plc", "& Sons Ltd", "LLP")
_US_NAMES = ("Hudson", "Lakeside", "Pioneer", "Summit", "Redwood", "Bayview", "Granite", "Prairie")
_US_TRADES = ("Trading", "Imports", "Distribution", "Foods", "Hospitality")
_US_FORMS = ("Inc.", "LLC", "Corp.")
_EN_FIRST = ("Emma", "James", "Olivia", "Oliver", "Amelia", "Harry", "Grace", "Jack")

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


# ------------------------------------------------------------------------------------------------- the sample
@dataclass(frozen=True, slots=True)
class Message:
    """One message as the ERP publishes it, and what the ingest must make of it."""

    body: bytes
    event_type: str  # as written in the message ("?" when the body is not JSON)
    event_id: str | None
    expect: Expect
    kind: str = ""  # for rejected messages: the rejection kind the ingest must report
    note: str = ""  # why this message is special (out of order, redelivered, invalid: what is wrong)

    @property
    def routing_key(self) -> str:
        return self.event_type if self.event_type != "?" else "unknown"


@dataclass(frozen=True, slots=True)
class Customer:
    tenant: str
    customer_id: str
    name: str
    currency: str
    language: str
    behaviour: Behaviour
    terms: str


@dataclass(frozen=True, slots=True)
class Sample:
    """The messages in publish order, with the facts needed to check what the ingest did with them."""

    as_of: date
    seed: int
    customers: tuple[Customer, ...]
    messages: tuple[Message, ...]

    def jsonl(self) -> bytes:
        """The messages as JSON Lines, one body per line, for ``relance publish``."""
        return b"".join(m.body + b"\n" for m in self.messages)

    def expected(self) -> Counter[str]:
        return Counter(m.expect for m in self.messages)

    def expected_rejections(self) -> Counter[str]:
        return Counter(m.kind for m in self.messages if m.expect == "rejected")

    def event_types(self) -> Counter[str]:
        """Event types of the messages that must be applied: the mix the ledger ends up with."""
        return Counter(m.event_type for m in self.messages if m.expect == "applied")

    def notes(self) -> Counter[str]:
        return Counter(m.note.split(":", 1)[0] for m in self.messages if m.note)


# ------------------------------------------------------------------------------------------------- internals
@dataclass
class _Event:
    """A valid fact before it is serialised: sort key, envelope and data."""

    at: datetime
    seq: int
    tenant: str
    customer_id: str
    event_type: str
    data: dict[str, Any]
    event_id: str = ""
    note: str = ""

    def envelope(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "tenant": self.tenant,
            "customer_id": self.customer_id,
            "occurred_at": _stamp(self.at),
            "data": self.data,
        }


@dataclass
class _Invoice:
    customer: Customer
    invoice_id: str
    issue_date: date
    due_date: date
    amount: Decimal
    credited: Decimal = Decimal(0)
    paid: Decimal = Decimal(0)  # by the as-of date
    cancelled: bool = False
    disputed: bool = False
    settlements: list[tuple[date, Decimal]] = field(default_factory=list)  # payments and credit notes, dated

    def settled_by(self, day: date) -> bool:
        return sum((a for on, a in self.settlements if on <= day), Decimal(0)) >= self.amount

    @property
    def open(self) -> Decimal:
        return Decimal(0) if self.cancelled else self.amount - self.credited - self.paid


@dataclass
class _Builder:
    rng: random.Random
    as_of: date
    start: date
    events: list[_Event] = field(default_factory=list)
    invoices: list[_Invoice] = field(default_factory=list)
    _seq: int = 0
    _numbers: Counter[str] = field(default_factory=Counter)

    def add(
        self, at: datetime, customer: Customer, event_type: str, data: dict[str, Any], note: str = ""
    ) -> _Event | None:
        if at.date() > self.as_of:
            return None  # has not happened yet
        self._seq += 1
        event = _Event(at, self._seq, customer.tenant, customer.customer_id, event_type, data, note=note)
        self.events.append(event)
        return event

    def moment(self, day: date, first_hour: int = 7, last_hour: int = 19) -> datetime:
        clock = time(self.rng.randint(first_hour, last_hour - 1), self.rng.randint(0, 59), self.rng.randint(0, 59))
        return datetime.combine(day, clock, tzinfo=UTC)

    def number(self, prefix: str, year: int) -> str:
        self._numbers[f"{prefix}{year}"] += 1
        return f"{prefix}{year}-{self._numbers[f'{prefix}{year}']:05d}"


def generate(customers: int = 300, months: int = 4, seed: int = 7, as_of: date = AS_OF) -> Sample:
    """Build the sample: ``customers`` customers, ``months`` months of activity ending on ``as_of``."""
    if customers < 10:
        raise ValueError("the demo needs at least 10 customers to show every kind of event")
    if not 1 <= months <= 36:
        raise ValueError("months must be between 1 and 36")
    rng = random.Random(seed)
    builder = _Builder(rng=rng, as_of=as_of, start=_months_before(as_of, months))
    people = _customers(rng, customers)
    for customer in people:
        _customer_history(builder, customer)
    _special_cases(builder, people)
    messages = _wire(builder, people)
    return Sample(as_of=as_of, seed=seed, customers=tuple(people), messages=tuple(messages))


# ------------------------------------------------------------------------------------------------- customers
def _customers(rng: random.Random, count: int) -> list[Customer]:
    people: list[Customer] = []
    names: set[str] = set()
    uk_every = 7  # about one customer in seven belongs to the UK subsidiary
    parts: tuple[tuple[str, ...], ...]
    for n in range(1, count + 1):
        customer_id = f"C-{n:04d}"
        if n % uk_every == 3:
            tenant, currency, language = "acme-uk", "GBP", "en"
            parts = (_UK_NAMES, _UK_TRADES, _UK_FORMS)
        elif n % 11 == 5:
            tenant, currency, language = "acme-fr", "USD", "en"  # export customers invoiced in dollars
            parts = (_US_NAMES, _US_TRADES, _US_FORMS)
        else:
            tenant, currency, language = "acme-fr", "EUR", "en" if rng.random() < 0.04 else "fr"
            parts = (_FR_TRADES, _FR_NAMES, _FR_FORMS)
        name = " ".join(rng.choice(p) for p in parts)
        while name in names:
            name = f"{name} {rng.choice(('Nord', 'Sud', 'Est', 'Ouest', 'II', 'Group'))}"
        names.add(name)
        behaviour = _pick(rng, _BEHAVIOURS)
        people.append(Customer(tenant, customer_id, name, currency, language, behaviour, rng.choice(_TERMS)))
    # The sample must show every habit whatever the seed: give the first customers of each kind a fixed habit.
    fixed: list[Behaviour] = ["never", "slow", "partial", "late", "partial", "never"]
    for index, behaviour in zip(range(len(people) - 1, 0, -7), fixed, strict=False):
        c = people[index]
        people[index] = Customer(c.tenant, c.customer_id, c.name, c.currency, c.language, behaviour, c.terms)
    return people


def _profile(rng: random.Random, customer: Customer, revision: int = 0) -> dict[str, Any]:
    slug = _slug(customer.name)
    first: tuple[str, ...]
    last: tuple[str, ...]
    if customer.tenant == "acme-uk":
        domain, box, first, last = f"{slug}.co.uk", "accounts", _EN_FIRST, _UK_NAMES
    elif customer.currency == "USD":
        domain, box, first, last = f"{slug}.com", "ap", _EN_FIRST, _UK_NAMES
    else:
        domain, box, first, last = f"{slug}.fr", "comptabilite", _FR_FIRST, _FR_NAMES
    emails = [f"{box}@{domain}"]
    contact = f"{rng.choice(first)} {rng.choice(last)}"
    if revision:
        emails.append(f"{_slug(contact).replace('-', '.')}@{domain}")
    limit = rng.choice((5000, 10000, 15000, 20000, 30000, 50000, 75000, 100000)) * (1 + revision)
    data: dict[str, Any] = {
        "name": customer.name,
        "emails": emails,
        "language": customer.language,
        "segment": rng.choice(("sme", "sme", "sme", "key_account", "public_sector")),
        "policy": "standard-en" if customer.tenant == "acme-uk" else "standard-fr",  # shipped policies
        "credit_limit": {"amount": f"{limit}.00", "currency": customer.currency},
    }
    if rng.random() < 0.6:
        data["contact_name"] = contact
    return data


# ------------------------------------------------------------------------------------------------- history
def _customer_history(b: _Builder, customer: Customer) -> None:
    rng = b.rng
    onboarded = b.start - timedelta(days=rng.randint(1, 20))
    profile = _profile(rng, customer)
    b.add(b.moment(onboarded), customer, "customer.upserted", profile)
    if rng.random() < 0.1:
        changed_on = b.start + timedelta(days=rng.randint(10, max(11, (b.as_of - b.start).days - 5)))
        b.add(b.moment(changed_on), customer, "customer.upserted", _profile(rng, customer, revision=1))

    per_month = rng.choice((1, 1, 2, 2, 2, 3, 3, 4, 6))
    days = (b.as_of - b.start).days
    issue_days = sorted(b.start + timedelta(days=rng.randrange(days)) for _ in range(max(1, per_month * days // 30)))
    invoices: list[_Invoice] = []
    for index, issued in enumerate(issue_days):
        cents = max(8000, min(6_000_000, int(rng.lognormvariate(11.6, 0.9))))
        invoice = _Invoice(
            customer=customer,
            invoice_id=f"{customer.tenant[-2:]}-{customer.customer_id}-{index + 1:03d}",
            issue_date=issued,
            due_date=_due(issued, customer.terms),
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


def _invoice_data(invoice: _Invoice) -> dict[str, Any]:
    return {
        "invoice_id": invoice.invoice_id,
        "number": "",  # numbered in issue order across customers once every invoice exists (see _wire)
        "issue_date": invoice.issue_date.isoformat(),
        "due_date": invoice.due_date.isoformat(),
        "currency": invoice.customer.currency,
        "amount": str(invoice.amount),
    }


def _credit_note(b: _Builder, invoice: _Invoice, on: date, reason: str = "", share: Decimal | None = None) -> None:
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


def _payments(b: _Builder, customer: Customer, invoices: list[_Invoice]) -> None:
    """Pay the invoices as this customer's habit says; monthly payers group a month's invoices in one transfer."""
    rng = b.rng
    monthly = customer.behaviour in ("punctual", "late") and rng.random() < 0.15
    groups: dict[date, list[tuple[_Invoice, Decimal]]] = {}
    for invoice in invoices:
        for on, amount in _instalments(rng, customer.behaviour, invoice):
            if monthly:
                on = _month_end(on) + timedelta(days=10)
            groups.setdefault(on, []).append((invoice, amount))
    for on in sorted(groups):
        if on > b.as_of:
            continue
        items = groups[on]
        explicit = len(items) > 1 or rng.random() < 0.45
        for part in [items] if explicit else [[item] for item in items]:
            _pay(b, customer, on, part, explicit)


def _instalments(rng: random.Random, behaviour: Behaviour, invoice: _Invoice) -> list[tuple[date, Decimal]]:
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
    b: _Builder,
    customer: Customer,
    on: date,
    items: list[tuple[_Invoice, Decimal]],
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


# ------------------------------------------------------------------------------------------------- special cases
def _special_cases(b: _Builder, people: list[Customer]) -> None:
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


def _paid_twice(b: _Builder, people: list[Customer], how_many: int) -> None:
    """Customers with nothing left to pay who paid their last invoice a second time: credit the ledger must keep."""
    invoices: dict[str, list[_Invoice]] = {}
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


def _dispute(b: _Builder, invoice: _Invoice, *, resolve: bool) -> None:
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


def _payment_plan(b: _Builder, customer: Customer, invoices: list[_Invoice]) -> None:
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


def _overdue_by_customer(b: _Builder) -> dict[str, list[_Invoice]]:
    overdue: dict[str, list[_Invoice]] = {}
    for invoice in b.invoices:
        if invoice.open > 0 and not invoice.disputed and invoice.due_date < b.as_of - timedelta(days=15):
            overdue.setdefault(invoice.customer.customer_id, []).append(invoice)
    return overdue


# ------------------------------------------------------------------------------------------------- the wire
def _wire(b: _Builder, people: list[Customer]) -> list[Message]:
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

    order: list[_Event] = list(events)
    # Out of order: the payments module publishes at once, invoices go out in a nightly batch.
    position = {id(e): n for n, e in enumerate(order)}
    issued = {(e.tenant, e.data["invoice_id"]): e for e in events if e.event_type == "invoice.issued"}
    allocated = [e for e in events if e.event_type == "payment.received" and e.data.get("allocations")]
    early: list[_Event] = []
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

    messages = [Message(_encode(e.envelope()), e.event_type, e.event_id, "applied", note=e.note) for e in order]

    # Redeliveries: the same message (same event_id) a second time, a little later.
    for original in rng.sample(range(len(order)), max(3, len(order) // 80)):
        event = order[original]
        copy = Message(_encode(event.envelope()), event.event_type, event.event_id, "duplicate", note="redelivered")
        _insert_after(messages, event.event_id, copy, rng.randint(1, 400))
    # Re-sent invoices: same content, new event_id (the ERP re-exported them).
    invoices = [e for e in order if e.event_type == "invoice.issued"]
    for number, event in enumerate(rng.sample(invoices, max(2, len(invoices) // 200)), start=1):
        envelope = {**event.envelope(), "event_id": f"{event.event_id}-resend{number}"}
        copy = Message(_encode(envelope), event.event_type, envelope["event_id"], "duplicate", note="re-sent")
        _insert_after(messages, event.event_id, copy, rng.randint(50, 1500))

    for after, message in _invalid(b, order, by_id):
        if after:
            _insert_after(messages, after, message, rng.randint(1, 200))
        else:
            messages.insert(rng.randrange(len(messages)), message)
    return messages


def _due_date_notices(b: _Builder, by_id: dict[str, Customer]) -> None:
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


def _invalid(b: _Builder, order: list[_Event], by_id: dict[str, Customer]) -> Iterable[tuple[str | None, Message]]:
    """A handful of messages the ingest must dead-letter, each with the reason an integrator would need."""
    rng = b.rng
    invoices = [e for e in order if e.event_type == "invoice.issued"]
    payments = [e for e in order if e.event_type == "payment.received" and e.tenant == "acme-fr"]
    eur = [e for e in invoices if e.data["currency"] == "EUR"]
    usd = [e for e in invoices if e.data["currency"] == "USD"]

    def bad(template: _Event, suffix: str, data: dict[str, Any], **envelope: Any) -> dict[str, Any]:
        return {**template.envelope(), "event_id": f"{template.event_id}-{suffix}", "data": data, **envelope}

    def msg(body: bytes, raw: dict[str, Any] | None, kind: str, note: str) -> Message:
        event_type = str(raw["event_type"]) if raw else "?"
        event_id = str(raw["event_id"]) if raw else None
        return Message(body, event_type, event_id, "rejected", kind=kind, note=f"invalid: {note}")

    invoice = rng.choice(invoices)
    text = _encode(invoice.envelope()).decode()
    yield None, msg(text[: len(text) // 2].encode(), None, "not_json", "truncated JSON")
    yield None, msg(b"FA2026-00042;C-0042;1250,00;EUR;2026-10-15", None, "not_json", "a CSV row, not JSON")

    payment = rng.choice(payments)
    raw = bad(payment, "float", {**payment.data, "amount": "@@FLOAT@@"})
    body = _encode(raw).replace(b'"@@FLOAT@@"', payment.data["amount"].encode())
    yield None, msg(body, raw, "schema", "amount as a JSON number")

    raw = bad(invoice, "paid", {"invoice_id": invoice.data["invoice_id"]}, event_type="invoice.paid")
    yield None, msg(_encode(raw), raw, "unknown_event_type", "event type not in the contract")
    raw = bad(invoice, "ship", {"order_id": "CMD-88812", "carrier": "Geodis"}, event_type="order.shipped")
    yield None, msg(_encode(raw), raw, "unknown_event_type", "event type not in the contract")

    template = rng.choice(eur)
    raw = bad(template, "euro", {**template.data, "invoice_id": template.data["invoice_id"] + "-X", "currency": "EURO"})
    yield None, msg(_encode(raw), raw, "schema", "unknown currency")

    template = rng.choice(eur)
    wrong = {**template.data, "invoice_id": template.data["invoice_id"] + "-D", "due_date": "2026-01-01"}
    wrong["issue_date"] = "2026-02-01"
    raw = bad(template, "dates", wrong)
    yield None, msg(_encode(raw), raw, "schema", "due date before issue date")

    template = rng.choice(payments)
    raw = bad(template, "tz", {**template.data, "payment_id": template.data["payment_id"] + "-TZ"})
    raw["occurred_at"] = raw["occurred_at"].replace("T", " ").removesuffix("Z")
    yield None, msg(_encode(raw), raw, "schema", "timestamp without time zone")

    template = rng.choice(payments)
    over = {**template.data, "payment_id": template.data["payment_id"] + "-OV"}
    over["allocations"] = [{"invoice_id": invoices[0].data["invoice_id"], "amount": "999999.00"}]
    raw = bad(template, "over", over)
    yield None, msg(_encode(raw), raw, "schema", "allocations exceed the payment")

    customer = by_id[rng.choice(eur).customer_id]
    template = next(e for e in order if e.customer_id == customer.customer_id)
    profile = {**_profile(rng, customer), "emails": ["compta(at)example.fr"]}
    raw = bad(template, "mail", profile, event_type="customer.upserted")
    yield None, msg(_encode(raw), raw, "schema", "malformed e-mail address")

    # Business rules: valid on their own, wrong against what the ledger already holds.
    for template in rng.sample(eur, 2):
        changed = {**template.data, "amount": str(Decimal(template.data["amount"]) + Decimal("100.00"))}
        raw = bad(template, "reissue", changed)
        yield template.event_id, msg(_encode(raw), raw, "business_rule", "invoice re-issued with another amount")
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
        yield template.event_id, msg(_encode(raw), raw, "business_rule", "EUR payment allocated to a USD invoice")


def _insert_after(messages: list[Message], event_id: str, message: Message, distance: int) -> None:
    at = next(n for n, m in enumerate(messages) if m.event_id == event_id and m.expect == "applied")
    messages.insert(min(len(messages), at + distance), message)


# ------------------------------------------------------------------------------------------------- helpers
def _encode(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pick(rng: random.Random, weighted: tuple[tuple[Behaviour, int], ...]) -> Behaviour:
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def _due(issued: date, terms: str) -> date:
    if terms == "45EOM":
        return _month_end(issued + timedelta(days=45))  # "45 jours fin de mois"
    return issued + timedelta(days=int(terms))


def _month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def _months_before(day: date, months: int) -> date:
    month = day.month - months
    year = day.year + (month - 1) // 12
    month = (month - 1) % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    words = "".join(ch if ch.isalnum() else " " for ch in ascii_text).split()
    return "-".join(w for w in words if w not in ("sarl", "sas", "sa", "eurl", "ltd", "plc", "llp", "inc", "llc"))
