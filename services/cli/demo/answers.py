"""What the demo's customers and collectors do in answer to relance: pay a formal notice in full, waive a claim.

The sample (:mod:`services.cli.demo.generator`) is written before the run, so it cannot know which invoices will get a
formal notice. :class:`Answers` reads the ledger's log after each simulated day, as the notifier reads its commands,
and acts on what it finds:

* **A notice paid in full.** Some customers (:data:`ANSWER_SHARE`, chosen by the seed) answer a formal notice by paying
  exactly the total it demands, a few days later: the principal, interest and indemnity of its ``lines`` plus the
  ``claims`` it lists, in its currency, in one transfer. The ERP does not know relance's claims, so it allocates the
  transfer to the invoices' principal and leaves the surplus unallocated; relance's allocation rule decides what the
  surplus settles (under the shipped ``principal_first``, the customer's other open principal first, invoices not
  yet due included, then the claims). Some of them (:data:`CLEAR_SHARE`) clear the rest of their account in the same
  transfer, so that nothing but the claims is left for the surplus. Those invoices are then paid: the sample's own
  later payments of them are withheld (never published), and the demo checks the ingest against the messages
  actually published. A notice whose invoices moved
  meanwhile (a payment, a credit note, a dispute) is not answered; nor is one whose invoices the sample pays later
  together with other invoices (the customer pays as the sample says, principal only).
* **A claim waived.** A collector waives the indemnity of a long-standing customer (punctual or late by habit) who
  paid an invoice a few days late (at most :data:`WAIVE_MAX_DAYS_LATE`), for a handful of invoices chosen by the seed,
  through :func:`services.cli.claims.record_waiver`, the code ``relance claims waive`` runs, with a reason and the
  tenant's credit manager as author.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from services.cli.claims import WaiverRefused, record_waiver
from services.cli.demo.sample import Customer, Message, Sample, encode_envelope, stamp
from shared.contracts import events
from shared.ledger.claims import INDEMNITY
from shared.ledger.records import LOG_START, Cursor, RecordedEvent
from shared.ledger.store import Ledger

ANSWER_SHARE = 35  # percent of the customers sent a formal notice who pay exactly what it demands
CLEAR_SHARE = 40  # percent of those answers that also clear the rest of the account in the same transfer
ANSWER_DAYS = (3, 8)  # the transfer arrives this many days after the notice (inclusive range)
FORMAL_NOTICE = "formal_notice"
PAYMENT = "payment.received"
WAIVE_MAX_DAYS_LATE = 10
WAIVE_SHARE = 50  # percent of the eligible invoices whose indemnity the collector waives
WAIVE_EVERY = 30  # at most one waiver per this many customers (a handful)
LONG_STANDING = ("punctual", "late")
AUTHORS = {"acme-fr": "Claire Dubois, credit manager", "acme-uk": "Emma Clarke, credit controller"}
ANSWERED_AT = time(8, 30)  # UTC: before the day's ERP messages are consumed


@dataclass(frozen=True, slots=True)
class Demand:
    """What one formal notice demanded, read from its ``reminder.requested`` event."""

    tenant: str
    customer_id: str
    reminder_id: str
    day: date
    currency: str
    principal: dict[str, Decimal]  # invoice id -> the outstanding principal demanded
    total: Decimal  # principal + interest + indemnity of its lines, + its claims, in its currency
    rest: dict[str, Decimal] = field(default_factory=dict)  # the account's other open principal, when paid with it

    @property
    def surplus(self) -> Decimal:
        """What the ERP leaves unallocated: the interest, indemnities and claims the notice demanded."""
        return self.total - sum(self.principal.values(), Decimal(0))

    @property
    def paying(self) -> dict[str, Decimal]:
        """The principal the transfer pays, per invoice: what the notice demanded, and the rest when cleared."""
        return {**self.principal, **self.rest}

    @property
    def amount(self) -> Decimal:
        return self.total + sum(self.rest.values(), Decimal(0))


@dataclass(frozen=True, slots=True)
class Waived:
    tenant: str
    customer_id: str
    invoice_id: str
    amount: Decimal
    currency: str
    reason: str


@dataclass
class Answers:
    """The run's answers: fed the log after each day (:meth:`read_log`), asked each morning for the day's payments."""

    sample: Sample
    ledger: Ledger
    delivered: list[date]  # the day each sample message is delivered (see escalation.delivery_days)
    cursor: Cursor = LOG_START
    scheduled: dict[date, list[Demand]] = field(default_factory=dict)
    published: list[Message] = field(default_factory=list)  # the answers' payments, in the order published
    answered: list[Demand] = field(default_factory=list)
    withheld: set[int] = field(default_factory=set)  # sample messages (index) the customer no longer sends
    waived: list[Waived] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # waivers the ledger refused: a surprise
    _payments: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    _customers: dict[tuple[str, str], Customer] = field(default_factory=dict)
    _considered: set[tuple[str, str]] = field(default_factory=set)  # invoices already considered for a waiver

    def __post_init__(self) -> None:
        self._customers = {(c.tenant, c.customer_id): c for c in self.sample.customers}
        for seq, message in enumerate(self.sample.messages):
            if message.event_type == PAYMENT and message.expect != "rejected":
                envelope = json.loads(message.body)
                key = (envelope["tenant"], envelope["customer_id"])
                self._payments.setdefault(key, []).append((seq, envelope["data"]))

    @property
    def seed(self) -> int:
        return self.sample.seed

    def keeps(self, seq: int) -> bool:
        """Whether the sample message ``seq`` is still sent (not withheld because its invoices were paid)."""
        return seq not in self.withheld

    # ---------------------------------------------------------------------------------------------- the morning
    def payments_on(self, day: date) -> list[Message]:
        """The transfers answering a formal notice that arrive on ``day``, to publish before the day's messages."""
        messages = []
        for planned in self.scheduled.pop(day, []):
            demand = self._as_paid(planned)
            if demand is None:
                continue
            withheld = self._withheld_by(demand, day)
            if withheld is None:
                continue
            self.withheld |= withheld
            self.answered.append(demand)
            message = payment_message(demand, day, len(self.published) + 1)
            self.published.append(message)
            messages.append(message)
        return messages

    def _as_paid(self, demand: Demand) -> Demand | None:
        """The demand as the customer pays it today (with the rest of the account when it clears it), or None when
        its invoices moved since the notice (paid, credited, disputed, cancelled): the customer pays as the sample
        says."""
        state = self.ledger.state(demand.tenant, demand.customer_id)
        for invoice_id, principal in demand.principal.items():
            invoice = state.invoices.get(invoice_id)
            if invoice is None or not invoice.is_open or invoice_id in state.disputes:
                return None
            if invoice.outstanding != principal:
                return None
        if not clears(self.seed, demand.reminder_id):
            return demand
        rest = {
            i.invoice_id: i.outstanding
            for i in state.open_invoices()
            if i.currency == demand.currency
            and i.invoice_id not in demand.principal
            and i.invoice_id not in state.disputes
            and i.outstanding > 0
        }
        return replace(demand, rest=rest)

    def _withheld_by(self, demand: Demand, day: date) -> set[int] | None:
        """The sample's later payments the answer replaces; None if one of them also pays another invoice."""
        paid = set(demand.paying)
        amounts = set(demand.paying.values()) | {sum(demand.paying.values(), Decimal(0))}
        withheld: set[int] = set()
        for seq, data in self._payments.get((demand.tenant, demand.customer_id), []):
            if self.delivered[seq] < day or seq in self.withheld:
                continue
            targets = {a["invoice_id"] for a in data.get("allocations", [])}
            if targets & paid:
                if targets - paid:
                    return None
                withheld.add(seq)
            elif not targets and Decimal(data["amount"]) in amounts:
                withheld.add(seq)  # no remittance advice, the amount of what the notice demanded: the same invoices
        return withheld

    # ---------------------------------------------------------------------------------------------- the evening
    def read_log(self, now: datetime) -> None:
        """Read what the ledger recorded since the last call: schedule answers to formal notices, waive claims."""
        paying: dict[tuple[str, str], date] = {}
        while True:
            found, self.cursor = self.ledger.read_all(self.cursor, 1000)
            if not found:
                break
            for event in found:
                if event.event_type == events.ReminderRequested.TYPE and event.data["level"] == FORMAL_NOTICE:
                    self._notice(event)
                elif event.event_type == PAYMENT:
                    key = (event.tenant, event.customer_id)
                    received = date.fromisoformat(event.data["received_on"])
                    paying[key] = max(paying.get(key, received), received)
        for (tenant, customer_id), received in sorted(paying.items()):
            self._waive(tenant, customer_id, received, now)

    def _notice(self, event: RecordedEvent) -> None:
        if not answers(self.seed, event.tenant, event.customer_id):
            return
        demand = demanded(event.tenant, event.customer_id, event.data)
        if demand is None:
            return
        on = demand.day + timedelta(days=answer_delay(self.seed, demand.reminder_id))
        if on <= self.sample.as_of:
            self.scheduled.setdefault(on, []).append(demand)

    def _waive(self, tenant: str, customer_id: str, received: date, now: datetime) -> None:
        customer = self._customers.get((tenant, customer_id))
        if customer is None or customer.behaviour not in LONG_STANDING:
            return
        limit = max(3, len(self.sample.customers) // WAIVE_EVERY)
        state = self.ledger.state(tenant, customer_id)
        for invoice in sorted(state.invoices.values(), key=lambda i: i.invoice_id):
            if len(self.waived) >= limit:
                return
            key = (tenant, invoice.invoice_id)
            claim = state.claims.get(invoice.invoice_id, INDEMNITY)
            if invoice.status != "paid" or key in self._considered or claim is None or claim.owed <= 0:
                continue
            self._considered.add(key)
            late = (received - invoice.due_date).days
            if not 1 <= late <= WAIVE_MAX_DAYS_LATE or not waives(self.seed, invoice.invoice_id):
                continue
            reason = waiver_reason(late)
            try:
                found = record_waiver(
                    self.ledger,
                    tenant,
                    customer_id,
                    invoice.invoice_id,
                    INDEMNITY,
                    reason,
                    AUTHORS.get(tenant, "credit manager"),
                    occurred_at=now,
                    source="demo",
                )
            except WaiverRefused as exc:
                self.refused.append(f"{tenant}/{customer_id} {invoice.invoice_id}: {exc}")
                continue
            event = found.event
            self.waived.append(Waived(tenant, customer_id, invoice.invoice_id, event.amount, event.currency, reason))
            state = self.ledger.state(tenant, customer_id)

    def problems(self) -> list[str]:
        return [f"waiver refused: {p}" for p in self.refused]


# ---------------------------------------------------------------------------------------------------- pure parts
def answers(seed: int, tenant: str, customer_id: str) -> bool:
    """Whether this customer pays a formal notice in full (the same customers for the same seed)."""
    return _draw(seed, "answer", tenant, customer_id) < ANSWER_SHARE


def clears(seed: int, reminder_id: str) -> bool:
    """Whether the answer to this notice also pays the rest of the account (invoices not yet due included)."""
    return _draw(seed, "clear", reminder_id) < CLEAR_SHARE


def answer_delay(seed: int, reminder_id: str) -> int:
    low, high = ANSWER_DAYS
    return low + _draw(seed, "delay", reminder_id) % (high - low + 1)


def waives(seed: int, invoice_id: str) -> bool:
    return _draw(seed, "waive", invoice_id) < WAIVE_SHARE


def waiver_reason(days_late: int) -> str:
    days = "1 day" if days_late == 1 else f"{days_late} days"
    return f"long-standing customer who paid {days} late: indemnity waived as a commercial gesture"


def _draw(seed: int, *parts: str) -> int:
    """0-99, from the seed and the parts alone (not from the run's order of events)."""
    key = "\x1f".join((str(seed), *parts)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 100


def demanded(tenant: str, customer_id: str, data: dict[str, Any]) -> Demand | None:
    """What a ``reminder.requested`` demands in its currency (None when it demands no principal)."""
    notice = events.parse(events.ReminderRequested.TYPE, data)
    assert isinstance(notice, events.ReminderRequested)
    currency = notice.currency
    principal = {line.invoice_id: line.outstanding for line in notice.lines if line.outstanding > 0}
    if not principal:
        return None
    total = sum(principal.values(), Decimal(0))
    for line in notice.lines:
        if line.invoice_id in principal:
            total += line.interest
            if line.fee_currency in (None, currency):
                total += line.fee
    total += sum((c.amount for c in notice.claims or [] if c.currency == currency), Decimal(0))
    day = date.fromisoformat(str(data["as_of"])[:10])
    return Demand(tenant, customer_id, notice.reminder_id, day, currency, principal, total)


def payment_message(demand: Demand, day: date, number: int) -> Message:
    """The transfer as the ERP publishes it: the total demanded (and the rest of the account's principal when it clears
    it), allocated to the principal, the surplus left unallocated."""
    moment = datetime.combine(day, ANSWERED_AT, tzinfo=UTC)
    event_id = f"{demand.tenant}-{day:%Y%m%d}-answer{number:04d}"
    data: dict[str, Any] = {
        "payment_id": f"PAY-{demand.customer_id}-MED-{day:%Y%m%d}",
        "amount": str(demand.amount),
        "currency": demand.currency,
        "received_on": day.isoformat(),
        "allocations": [{"invoice_id": i, "amount": str(a)} for i, a in sorted(demand.paying.items())],
    }
    envelope = {
        "event_id": event_id,
        "event_type": PAYMENT,
        "tenant": demand.tenant,
        "customer_id": demand.customer_id,
        "occurred_at": stamp(moment),
        "data": data,
    }
    note = f"answer: pays formal notice {demand.reminder_id} in full" + (
        " and the rest of the account" if demand.rest else ""
    )
    return Message(encode_envelope(envelope), PAYMENT, event_id, "applied", note=note)
