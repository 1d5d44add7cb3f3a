"""The escalation domain's vocabulary: a dunning policy, and the decisions the engine takes under it.

Pure data (frozen dataclasses, Decimal, dates). A policy is loaded from YAML by :mod:`services.escalation.policy`;
its version is the SHA-256 of its canonical content, so every decision can name the exact rules it followed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from shared.contracts.events import RelanceEvent

Channel = Literal["email", "letter", "phone", "none"]
Action = Literal["charge_interest", "charge_fee", "block_credit", "hand_over"]
Law = Literal["fr", "eu", "uk"]  # the law late interest and fixed sums follow (services.escalation.law)
ACTIONS: tuple[Action, ...] = ("charge_interest", "charge_fee", "block_credit", "hand_over")


@dataclass(frozen=True, slots=True)
class Level:
    """One rung of the ladder: due ``offset_days`` after the due date (negative: before it)."""

    key: str  # stable identifier, e.g. "reminder-1"; decisions and templates refer to it
    offset_days: int
    channel: Channel
    template: str | None  # template name for the notifier; None with channel "none"
    actions: frozenset[Action] = frozenset()
    copy_channels: frozenset[Channel] = frozenset()  # also sent this way, e.g. an email copy of a formal-notice letter
    min_days_since_contact: int | None = None  # overrides the cadence's minimum interval when this level is pending

    @property
    def written(self) -> bool:
        return self.channel in ("email", "letter")

    @property
    def contacts(self) -> bool:
        """Whether reaching the level is something to tell the customer (a message or a call)."""
        return self.channel != "none"


@dataclass(frozen=True, slots=True)
class InterestRule:
    """Late interest: the reference rate of each day's semester plus ``margin`` points, or a fixed contractual rate."""

    basis: Literal["reference", "contractual"] = "reference"
    margin: Decimal = Decimal("10")  # percentage points over the reference rate (France: ECB + 10)
    rate: Decimal | None = None  # annual percent, with basis "contractual"
    reference: str = "ecb"  # the rate table of the reference rate: "ecb", or "boe" (English law)
    floor: bool = False  # French law, an agreed rate: never below 3 x the legal interest rate of the day's semester


@dataclass(frozen=True, slots=True)
class Cadence:
    """How often a customer may be contacted (a message in any currency or a call): contact days at least
    ``min_days_between_contacts`` apart, and at most ``max_contacts`` of them in any ``window_days`` days.

    The default, for a policy without a ``cadence`` section, only keeps the contact days apart by one day and sets
    no window: as permissive as the ladder was before cadence existed.
    """

    min_days_between_contacts: int = 1
    max_contacts: int | None = None
    window_days: int = 30


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    version: str  # SHA-256 (hex) of the canonical policy content
    levels: tuple[Level, ...]  # ordered by offset_days, strictly increasing
    minimum_overdue: dict[str, Decimal] = field(default_factory=dict)  # per currency: below it, nothing is sent
    grace_days: int = 0  # added to every offset after the due date
    business_days: bool = True  # a step falling on a weekend or holiday moves to the next business day
    holidays: frozenset[date] = frozenset()
    interest: InterestRule = InterestRule()
    fixed_fee: dict[str, Decimal] = field(default_factory=lambda: {"EUR": Decimal("40.00")})  # per late invoice
    promise_grace_days: int = 2  # a promise pauses its invoices until promised date + this
    block_over_credit_limit: bool = True  # block credit when the overdue amount exceeds the customer's limit
    language: str = "en"  # default language of reminders when the customer has none
    law: Law = "fr"  # decides the reference rate, the margin, the fixed sums and the legal mentions
    timezone: str = "UTC"  # the tenant's days are this zone's calendar days (an IANA name)
    send_hour: int = 0  # contacts are made from this local hour on
    cadence: Cadence = Cadence()
    # What money a payment leaves unallocated settles first: "principal_first" or "claims_first" (shared.ledger.claims)
    claims_allocation: Literal["principal_first", "claims_first"] = "principal_first"

    def level(self, key: str) -> Level:
        for level in self.levels:
            if level.key == key:
                return level
        raise KeyError(f"policy {self.name} has no level {key!r}")

    def index(self, key: str) -> int:
        return [level.key for level in self.levels].index(key)


@dataclass(frozen=True, slots=True)
class Decision:
    """An event the engine wants appended to the customer's stream.

    ``event_id`` is deterministic (derived from the customer, the subject and the step), so the same decision taken
    twice, by a redelivered trigger or by two workers at once, is a duplicate the ledger ignores.
    """

    event_id: str
    event: RelanceEvent

    @property
    def event_type(self) -> str:
        return self.event.TYPE

    @property
    def data(self) -> dict[str, Any]:
        """The event's data as the log stores it."""
        return self.event.data()
