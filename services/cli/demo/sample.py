"""The demo sample's data model: the messages and customers it is made of, and the builder that records facts.

Also the small date and text functions the steps of the generator share. The builder holds the one seeded random
generator; these functions draw only from the generator they are given.
"""

from __future__ import annotations

import calendar
import json
import random
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

AS_OF = date(2026, 11, 20)
CENT = Decimal("0.01")

Behaviour = Literal["punctual", "late", "partial", "slow", "never"]
Expect = Literal["applied", "duplicate", "rejected"]


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


@dataclass
class PendingEvent:
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
            "occurred_at": stamp(self.at),
            "data": self.data,
        }


@dataclass
class InvoiceDraft:
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
class Builder:
    rng: random.Random
    as_of: date
    start: date
    events: list[PendingEvent] = field(default_factory=list)
    invoices: list[InvoiceDraft] = field(default_factory=list)
    _seq: int = 0
    _numbers: Counter[str] = field(default_factory=Counter)

    def add(
        self, at: datetime, customer: Customer, event_type: str, data: dict[str, Any], note: str = ""
    ) -> PendingEvent | None:
        if at.date() > self.as_of:
            return None  # has not happened yet
        self._seq += 1
        event = PendingEvent(at, self._seq, customer.tenant, customer.customer_id, event_type, data, note=note)
        self.events.append(event)
        return event

    def moment(self, day: date, first_hour: int = 7, last_hour: int = 19) -> datetime:
        clock = time(self.rng.randint(first_hour, last_hour - 1), self.rng.randint(0, 59), self.rng.randint(0, 59))
        return datetime.combine(day, clock, tzinfo=UTC)

    def number(self, prefix: str, year: int) -> str:
        self._numbers[f"{prefix}{year}"] += 1
        return f"{prefix}{year}-{self._numbers[f'{prefix}{year}']:05d}"


def encode_envelope(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pick(rng: random.Random, weighted: tuple[tuple[Behaviour, int], ...]) -> Behaviour:
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def due_on(issued: date, terms: str) -> date:
    if terms == "45EOM":
        return month_end(issued + timedelta(days=45))  # "45 jours fin de mois"
    return issued + timedelta(days=int(terms))


def month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def months_before(day: date, months: int) -> date:
    month = day.month - months
    year = day.year + (month - 1) // 12
    month = (month - 1) % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    words = "".join(ch if ch.isalnum() else " " for ch in ascii_text).split()
    return "-".join(w for w in words if w not in ("sarl", "sas", "sa", "eurl", "ltd", "plc", "llp", "inc", "llc"))
