"""The cadence a credit manager checks before switching dunning on, measured from what the ledger recorded.

The figures are read from the events of every stream, never from the engine's code, so they say what the customers
were sent whatever version of relance decided it:

- **contact days**: a customer's local calendar days (the policy's ``timezone``, else UTC) with at least one written
  reminder (``reminder.requested``) or a ``phone_call`` task; how many fall in any rolling 30 days (the maximum and
  the 95th percentile over the customers contacted), and the fewest days between two contact days of a customer; a
  claims statement (``level`` ``claims``, no lines) is a contact day kept at the cadence's own interval, and demands
  no invoice at any level;
- **written levels per invoice**: how many messages demanded an invoice at each written level (the ``lines`` of a
  reminder; the lines it lists under ``also`` are not demanded);
- **softer lines**: a line (demanded or ``also``) at a level gentler, in the policy's ladder, than the firmest level
  the invoice had reached before (``escalation.level_reached``, the phone-call step included);
- **not yet due**: demanded lines, at a level that comes after the due date, for an invoice not yet due on the
  reminder's day (``days_late`` 0 and its due date on or after that day);
- **handed over**: demanded lines for an invoice already handed over (``collection.handed_over``, or for older logs
  the ``escalation.level_reached`` of a level whose actions include ``hand_over``), apart from the hand-over letter
  (the invoice's first line at that level, whenever the cadence lets it go);
- **claims** per currency: charged (the latest interest figure of each invoice, ``interest.computed`` or
  ``claim.fixed``, plus the fees charged), paid (``claim.settled``), waived (``claim.waived``), and still owed; from
  a ledger whose fold keeps the claims (:func:`claims_of_fold`), the fold's figures, payments allocated included.

:func:`breaches` then checks the policy's own rules: its cadence when it has one (``cadence.min_days_between_contacts``,
per-level ``min_days_since_contact``, ``cadence.max_contacts`` in ``cadence.window_days``), and always each written
level at most once per invoice, no softer line, no demand for an invoice not yet due or handed over.

Events are read as the log holds them (their recorded dicts): fields a newer relance adds are used when present, and
an older log without them is measured by what it has.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from itertools import pairwise
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from services.escalation.model import Policy
from services.escalation.policy import PolicyLibrary
from shared.ledger.store import Ledger

ZERO = Decimal(0)
FIGURE_WINDOW = 30  # the "any 30 days" a credit manager reads, whatever window the policy's cadence uses

LEVEL_REACHED = "escalation.level_reached"
REMINDER = "reminder.requested"
TASK = "task.created"
FEE = "fee.charged"
INTEREST = "interest.computed"
CLAIM_FIXED = "claim.fixed"
CLAIM_SETTLED = "claim.settled"
CLAIM_WAIVED = "claim.waived"
HANDED_OVER = "collection.handed_over"


class Recorded(Protocol):
    """What the measurement reads of a recorded event (a :class:`~shared.ledger.records.RecordedEvent` has it)."""

    @property
    def event_type(self) -> str: ...

    @property
    def data(self) -> dict[str, Any]: ...

    @property
    def occurred_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Fact:
    """An event as the log holds it, for measuring a list of events that is not (yet) in a ledger."""

    event_type: str
    data: dict[str, Any]
    occurred_at: datetime


# ------------------------------------------------------------------------------------------------- the rules
@dataclass(frozen=True, slots=True)
class Rules:
    """What one policy says about the shape of its dunning: the ladder's order and its cadence, if any."""

    ladder: tuple[str, ...]  # level keys, gentlest first
    written: frozenset[str]  # levels sent in writing (e-mail or letter)
    before_due: frozenset[str] = frozenset()  # levels due on or before the due date: a heads-up, not a demand
    hand_over: frozenset[str] = frozenset()  # levels whose actions hand the file over
    zone: tzinfo = UTC
    min_days_between_contacts: int | None = None
    min_days_since_contact: Mapping[str, int] = field(default_factory=dict)  # per level, overriding the above
    max_contacts: int | None = None
    window_days: int = FIGURE_WINDOW

    @classmethod
    def of(cls, policy: Policy) -> Rules:
        """The rules of a loaded policy; cadence and time zone when the policy has them."""
        levels = policy.levels
        overrides = {
            level.key: value
            for level in levels
            if isinstance(value := getattr(level, "min_days_since_contact", None), int)
        }
        return cls(
            ladder=tuple(level.key for level in levels),
            written=frozenset(level.key for level in levels if level.channel in ("email", "letter")),
            before_due=frozenset(level.key for level in levels if level.offset_days <= 0),
            hand_over=frozenset(level.key for level in levels if "hand_over" in level.actions),
            zone=_zone(getattr(policy, "timezone", None)),
            min_days_between_contacts=_cadence(policy, "min_days_between_contacts"),
            min_days_since_contact=overrides,
            max_contacts=_cadence(policy, "max_contacts"),
            window_days=_cadence(policy, "window_days") or FIGURE_WINDOW,
        )

    def rank(self, level: str) -> int | None:
        return self.ladder.index(level) if level in self.ladder else None

    def gap_required(self, level: str) -> int | None:
        return self.min_days_since_contact.get(level, self.min_days_between_contacts)


def _zone(value: object) -> tzinfo:
    if isinstance(value, tzinfo):
        return value
    if isinstance(value, str) and value:
        return ZoneInfo(value)
    return UTC


def _cadence(policy: Policy, name: str) -> int | None:
    """A cadence setting, on the policy's ``cadence`` (an object or a mapping) or on the policy itself."""
    cadence = getattr(policy, "cadence", None)
    for holder in (cadence, policy):
        value = holder.get(name) if isinstance(holder, Mapping) else getattr(holder, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def rules_of(library: PolicyLibrary) -> Callable[[str, str | None], Rules]:
    """The rules of the policy a tenant's decisions name (its book's default when they name none it has)."""
    cache: dict[tuple[str, str | None], Rules] = {}

    def rules(tenant: str, policy: str | None) -> Rules:
        key = (tenant, policy)
        if key not in cache:
            book = library.for_tenant(tenant)
            chosen = book.policies.get(policy) if policy else None
            cache[key] = Rules.of(chosen or book.policies[book.default])
        return cache[key]

    return rules


# ------------------------------------------------------------------------------------------------- the figures
@dataclass(frozen=True, slots=True)
class Example:
    """Where a figure or a breach can be seen: a customer, an invoice, a day."""

    tenant: str
    customer_id: str
    invoice_id: str
    day: date

    def __str__(self) -> str:
        invoice = f" invoice {self.invoice_id}" if self.invoice_id else ""
        return f"{self.tenant}/{self.customer_id}{invoice} on {self.day}"


@dataclass
class Written:
    """One written level: the messages that demanded an invoice at it, and how often an invoice was demanded."""

    messages: int = 0
    lines: int = 0
    customers: set[tuple[str, str]] = field(default_factory=set)
    per_invoice: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (tenant, customer, invoice)
    again: dict[tuple[str, str, str], date] = field(default_factory=dict)  # the day an invoice got it a second time

    @property
    def invoices(self) -> int:
        return len(self.per_invoice)

    @property
    def most(self) -> int:
        return max(self.per_invoice.values(), default=0)

    @property
    def repeated(self) -> int:
        """Invoices demanded at this level more than once."""
        return sum(1 for n in self.per_invoice.values() if n > 1)


@dataclass
class Claims:
    """One currency's claims: what was charged, paid and waived, and so what is still owed."""

    interest: Decimal = ZERO
    fees: Decimal = ZERO
    paid: Decimal = ZERO
    waived: Decimal = ZERO

    @property
    def charged(self) -> Decimal:
        return self.interest + self.fees

    @property
    def owed(self) -> Decimal:
        return self.charged - self.paid - self.waived


@dataclass
class Breach:
    """A rule of the policy broken: how many times, and one place to see it."""

    rule: str
    count: int
    example: Example

    def __str__(self) -> str:
        return f"{self.rule}: {self.count:,} (e.g. {self.example})"


@dataclass
class Customer:
    """One customer's contact days, with the levels and invoices of each."""

    tenant: str
    customer_id: str
    rules: Rules
    days: dict[date, set[str]] = field(default_factory=dict)  # contact day -> levels of that day's contacts
    invoices: dict[date, str] = field(default_factory=dict)  # contact day -> an invoice it was about

    def contact(self, day: date, level: str, invoice_ids: Sequence[str]) -> None:
        self.days.setdefault(day, set()).add(level)
        if invoice_ids:
            self.invoices.setdefault(day, invoice_ids[0])

    def example(self, day: date) -> Example:
        return Example(self.tenant, self.customer_id, self.invoices.get(day, ""), day)

    def most_in(self, window: int) -> tuple[int, date | None]:
        """The most contact days in any ``window`` consecutive days, and the first day of such a window."""
        days = sorted(self.days)
        best, start, last = 0, None, 0
        for first, day in enumerate(days):
            while last < len(days) and days[last] < day + timedelta(days=window):
                last += 1
            if last - first > best:
                best, start = last - first, day
        return best, start

    def gaps(self) -> list[tuple[int, date]]:
        """Days between each contact day and the previous one, with the later day."""
        days = sorted(self.days)
        return [((later - earlier).days, later) for earlier, later in pairwise(days)]


@dataclass
class Cadence:
    """Every figure, and every rule broken, over the streams measured."""

    customers: list[Customer] = field(default_factory=list)
    written: dict[str, Written] = field(default_factory=dict)  # level -> its messages
    ranks: dict[str, int] = field(default_factory=dict)  # written level -> its place in the ladder it was met in
    softer_lines: int = 0
    softer_messages: int = 0
    softer_example: Example | None = None
    not_yet_due: Counter[str] = field(default_factory=Counter)  # level -> demanded lines not yet due
    not_yet_due_example: Example | None = None
    handed_over_lines: int = 0
    handed_over_example: Example | None = None
    claims: dict[str, Claims] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------ contact days
    @property
    def contacted(self) -> list[Customer]:
        return [c for c in self.customers if c.days]

    def most_in_30_days(self) -> list[int]:
        return sorted(c.most_in(FIGURE_WINDOW)[0] for c in self.contacted)

    @property
    def contacts_max(self) -> int:
        return max(self.most_in_30_days(), default=0)

    @property
    def contacts_p95(self) -> int:
        return percentile(self.most_in_30_days(), 95)

    @property
    def contacted_twice(self) -> int:
        return sum(1 for c in self.contacted if len(c.days) > 1)

    @property
    def min_gap(self) -> int | None:
        gaps = [gap for c in self.contacted for gap, _ in c.gaps()]
        return min(gaps, default=None)

    def within(self, days: int) -> int:
        """Customers contacted on two days at most ``days`` apart."""
        return sum(1 for c in self.contacted if any(gap <= days for gap, _ in c.gaps()))

    def levels(self) -> list[str]:
        """The written levels met, gentlest first."""
        return sorted(self.written, key=lambda level: (self.ranks[level], level))

    # ------------------------------------------------------------------------------------ the rules
    def breaches(self) -> list[Breach]:
        """Each rule of the policies broken, with how many times and an example; empty when all hold."""
        found: list[Breach] = []
        too_close, too_many = self._cadence_breaches()
        found += [b for b in (too_close, too_many) if b is not None]
        for level in self.levels():
            written = self.written[level]
            if written.repeated:
                key = next(k for k, n in written.per_invoice.items() if n > 1)
                found.append(
                    Breach(
                        f"invoices sent {level} more than once",
                        written.repeated,
                        Example(*key, written.again[key]),
                    )
                )
        for rule, number, example in (
            ("lines softer than a level their invoice had reached", self.softer_lines, self.softer_example),
            ("demand lines for invoices not yet due", sum(self.not_yet_due.values()), self.not_yet_due_example),
            ("demand lines for invoices already handed over", self.handed_over_lines, self.handed_over_example),
        ):
            if number and example is not None:
                found.append(Breach(rule, number, example))
        return found

    def _cadence_breaches(self) -> tuple[Breach | None, Breach | None]:
        close, close_example = 0, None
        crowded, crowded_example = 0, None
        for customer in self.contacted:
            rules = customer.rules
            for gap, day in customer.gaps():
                required = [n for level in customer.days[day] if (n := rules.gap_required(level)) is not None]
                if required and gap < max(required):
                    close += 1
                    close_example = close_example or customer.example(day)
            if rules.max_contacts is not None:
                most, start = customer.most_in(rules.window_days)
                if most > rules.max_contacts and start is not None:
                    crowded += 1
                    crowded_example = crowded_example or customer.example(start)
        return (
            Breach("contact days closer than the policy's minimum interval", close, close_example)
            if close_example
            else None,
            Breach("customers with more contact days than the policy allows in its window", crowded, crowded_example)
            if crowded_example
            else None,
        )


def percentile(values: Sequence[int], percent: int) -> int:
    """The nearest-rank percentile of sorted ``values`` (0 when there are none)."""
    if not values:
        return 0
    rank = max(1, math.ceil(percent * len(values) / 100))
    return values[rank - 1]


# ------------------------------------------------------------------------------------------------- measuring
Stream = tuple[str, str, Sequence[Recorded]]
"""A customer's stream: tenant, customer id, its events in order."""


def measure(streams: Iterable[Stream], rules: Callable[[str, str | None], Rules]) -> Cadence:
    """The figures of every stream; ``rules(tenant, policy name)`` gives the rules its decisions followed."""
    cadence = Cadence()
    for tenant, customer_id, stream in streams:
        _measure_stream(cadence, tenant, customer_id, stream, rules(tenant, _policy_of(stream)))
    return cadence


def measure_ledger(ledger: Ledger, library: PolicyLibrary) -> Cadence:
    """The figures of every stream of a :class:`~shared.ledger.store.Ledger`, under its tenants' policies.

    The claims are the fold's when the customer state keeps them (what payments were allocated to is a derivation of
    the fold, not an event), else what the events say."""
    streams = ledger.streams()
    cadence = measure(
        ((tenant, customer_id, ledger.read_stream(tenant, customer_id)) for tenant, customer_id in streams),
        rules_of(library),
    )
    folded = claims_of_fold(ledger.state(tenant, customer_id) for tenant, customer_id in streams)
    if folded is not None:
        cadence.claims = folded
    return cadence


def claims_of_fold(states: Iterable[object]) -> dict[str, Claims] | None:
    """Per currency, the claims the fold keeps (``state.claims.all()``: each claim's ``charged``, ``allocated``,
    ``waived``; a void claim, of a cancelled invoice, left out); None when the state keeps none."""
    totals: dict[str, Claims] = {}
    for state in states:
        every = getattr(getattr(state, "claims", None), "all", None)
        if not callable(every):
            return None
        for claim in every():
            if getattr(claim, "void", False):
                continue
            row = _claims_row(totals, claim.currency)
            if claim.kind == "interest":
                row.interest += claim.charged
            else:
                row.fees += claim.charged
            row.paid += claim.allocated
            row.waived += claim.waived
    return totals


def _policy_of(stream: Sequence[Recorded]) -> str | None:
    """The policy the customer's latest decision followed."""
    for event in reversed(stream):
        policy = event.data.get("policy") if event.event_type in (REMINDER, LEVEL_REACHED, TASK) else None
        if isinstance(policy, str) and policy:
            return policy
    return None


def _measure_stream(cadence: Cadence, tenant: str, customer_id: str, stream: Sequence[Recorded], rules: Rules) -> None:
    customer = Customer(tenant, customer_id, rules)
    cadence.customers.append(customer)
    reached: dict[str, int] = {}  # invoice -> rank of the firmest level reached
    handed = _HandedOver()
    interest: dict[str, tuple[str, Decimal]] = {}  # invoice -> (currency, latest figure)
    fixed: set[str] = set()
    for event in stream:
        data, kind = event.data, event.event_type
        if kind == LEVEL_REACHED:
            rank = rules.rank(data["level"])
            invoice_id = data["invoice_id"]
            if rank is not None and rank > reached.get(invoice_id, -1):
                reached[invoice_id] = rank
            if "hand_over" in data.get("actions", ()) or data["level"] in rules.hand_over:
                handed.hand(invoice_id, _instant(event))
        elif kind == HANDED_OVER:
            for invoice_id in data.get("invoice_ids", ()):
                handed.hand(invoice_id, _instant(event))
        elif kind == REMINDER:
            _reminder(cadence, customer, event, reached, handed)
        elif kind == TASK and data.get("kind") == "phone_call":
            level = _phone_level(data, rules)
            customer.contact(_day(event, rules.zone), level, data.get("invoice_ids", []))
        elif kind == FEE:
            _claims(cadence, data["currency"]).fees += Decimal(data["amount"])
        elif kind == INTEREST and data["invoice_id"] not in fixed:
            interest[data["invoice_id"]] = (data["currency"], Decimal(data["amount"]))
        elif kind == CLAIM_FIXED:
            fixed.add(data["invoice_id"])
            interest[data["invoice_id"]] = (data["currency"], Decimal(data["amount"]))
        elif kind == CLAIM_SETTLED:
            _claims(cadence, data["currency"]).paid += Decimal(data["amount"])
        elif kind == CLAIM_WAIVED:
            _claims(cadence, data["currency"]).waived += Decimal(data["amount"])
    for currency, amount in interest.values():
        _claims(cadence, currency).interest += amount


def _reminder(
    cadence: Cadence,
    customer: Customer,
    event: Recorded,
    reached: dict[str, int],
    handed: _HandedOver,
) -> None:
    """One reminder's contact, and each of its lines: written level, tone, due, handed over."""
    data, rules = event.data, customer.rules
    level, day, decided = data["level"], _day(event, rules.zone), _instant(event)
    lines: list[dict[str, Any]] = data.get("lines") or [{"invoice_id": i} for i in data.get("invoice_ids", [])]
    customer.contact(day, level, [line["invoice_id"] for line in lines])
    seen_levels: set[str] = set()
    softer = 0
    for line, demanded in [*((line, True) for line in lines), *((line, False) for line in data.get("also") or [])]:
        invoice_id = line["invoice_id"]
        at = line.get("level") or (level if demanded else None)  # a line under `also` speaks at its own level only
        example = Example(customer.tenant, customer.customer_id, invoice_id, day)
        rank = rules.rank(at) if at else None
        if rank is not None and rank < reached.get(invoice_id, -1):
            softer += 1
            cadence.softer_example = cadence.softer_example or example
        if not demanded or at is None:
            continue
        if at in rules.written:
            written = _written(cadence, at, rules)
            key = (customer.tenant, customer.customer_id, invoice_id)
            written.lines += 1
            written.per_invoice[key] += 1
            if written.per_invoice[key] == 2:
                written.again[key] = day
            written.customers.add(key[:2])
            if at not in seen_levels:
                written.messages += 1
                seen_levels.add(at)
        if at not in rules.before_due and _not_yet_due(line, day):
            cadence.not_yet_due[at] += 1
            cadence.not_yet_due_example = cadence.not_yet_due_example or example
        if handed.demanded(invoice_id, at in rules.hand_over, decided):
            cadence.handed_over_lines += 1
            cadence.handed_over_example = cadence.handed_over_example or example
    cadence.softer_lines += softer
    cadence.softer_messages += 1 if softer else 0


@dataclass
class _HandedOver:
    """A customer's invoices handed over, and whether each was told so (its hand-over letter, once)."""

    invoices: set[str] = field(default_factory=set)
    told: set[str] = field(default_factory=set)
    letters: dict[str, datetime] = field(default_factory=dict)  # invoice -> when its latest hand-over line was decided

    def hand(self, invoice_id: str, decided: datetime) -> None:
        if invoice_id not in self.invoices:
            self.invoices.add(invoice_id)
            if self.letters.get(invoice_id) == decided:  # its letter came first in the same decision
                self.told.add(invoice_id)

    def demanded(self, invoice_id: str, letter: bool, decided: datetime) -> bool:
        """Whether a demanded line is about an invoice already handed over, the letter that tells it apart."""
        if letter:
            self.letters[invoice_id] = decided
        if invoice_id not in self.invoices:
            return False
        if letter and invoice_id not in self.told:
            self.told.add(invoice_id)
            return False
        return True


def _not_yet_due(line: dict[str, Any], day: date) -> bool:
    if "due_date" not in line:
        return False
    return int(line.get("days_late", 0)) == 0 and date.fromisoformat(line["due_date"]) >= day


def _phone_level(data: dict[str, Any], rules: Rules) -> str:
    """The level a call task is for: its ``level``, else ``level <key>`` in its note, else ``phone_call``."""
    level = data.get("level")
    if isinstance(level, str) and level:
        return level
    note = str(data.get("note", ""))
    if note.startswith("level ") and note[6:] in rules.ladder:
        return note[6:]
    return "phone_call"


def _written(cadence: Cadence, level: str, rules: Rules) -> Written:
    if level not in cadence.written:
        cadence.written[level] = Written()
        cadence.ranks[level] = rules.ladder.index(level)
    return cadence.written[level]


def _claims(cadence: Cadence, currency: str) -> Claims:
    return _claims_row(cadence.claims, currency)


def _claims_row(claims: dict[str, Claims], currency: str) -> Claims:
    return claims.setdefault(currency, Claims())


def _instant(event: Recorded) -> datetime:
    """The instant a decision was taken for: its ``as_of``, else when it occurred."""
    as_of = event.data.get("as_of")
    if isinstance(as_of, str) and as_of:
        return datetime.fromisoformat(as_of.replace("Z", "+00:00"))
    return event.occurred_at


def _day(event: Recorded, zone: tzinfo) -> date:
    """The local calendar day of a decision: its instant in the policy's zone."""
    return _instant(event).astimezone(zone).date()
