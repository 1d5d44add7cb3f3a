"""The aged balance: what customers owe on a day, by how long it has been due, per currency.

For each open invoice of a customer's state as of the day D, its outstanding principal goes to one bucket by the
days past its due date, ``D - due_date``: **not yet due** (0 or less: due today is not late), **1-30**, **31-60**,
**61-90**, **> 90**. Apart from those buckets:

* **disputed** — the outstanding of the invoices under an open dispute: not in the buckets (nobody chases them
  while the dispute stands), in their own column;
* **unapplied credit** — payments and credit notes not allocated to any invoice (free, or earmarked for an invoice
  not yet known): shown apart and subtracted in the net;
* **interest** and **fees** — the claims still owed besides principal (late interest, the fixed indemnity), in the
  claim's currency, never mixed into principal.

``principal = sum of the buckets``; ``net = principal + disputed - unapplied credit``, which is the customer's
balance in that currency (:meth:`CustomerState.balances`). Rows are per customer, segment or currency, and always per
currency; each currency has its totals row. Nothing is summed across currencies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

from shared.ledger.claims import INDEMNITY, INTEREST
from shared.ledger.state import CustomerState

ZERO = Decimal(0)
BUCKETS = ("not yet due", "1-30 days", "31-60 days", "61-90 days", "> 90 days")
BUCKET_KEYS = ("not_due", "days_1_30", "days_31_60", "days_61_90", "days_over_90")
By = Literal["customer", "segment", "currency"]
GROUPINGS: tuple[By, ...] = ("customer", "segment", "currency")
NO_SEGMENT = "(no segment)"


def bucket_of(days_past_due: int) -> int:
    """The bucket of an invoice ``days_past_due`` days past its due date (0 or less: not yet due)."""
    if days_past_due <= 0:
        return 0
    if days_past_due <= 30:
        return 1
    if days_past_due <= 60:
        return 2
    if days_past_due <= 90:
        return 3
    return 4


@dataclass
class AgedRow:
    """One line of the aged balance: a customer, segment or currency, in one currency."""

    key: str  # customer id, segment, or the currency
    name: str  # customer's name, the segment, or the currency
    currency: str
    buckets: list[Decimal] = field(default_factory=lambda: [ZERO] * len(BUCKETS))
    disputed: Decimal = ZERO
    unapplied: Decimal = ZERO
    interest: Decimal = ZERO
    fees: Decimal = ZERO
    customers: set[str] = field(default_factory=set)

    @property
    def principal(self) -> Decimal:
        return sum(self.buckets, ZERO)

    @property
    def overdue(self) -> Decimal:
        return sum(self.buckets[1:], ZERO)

    @property
    def net(self) -> Decimal:
        return self.principal + self.disputed - self.unapplied

    @property
    def claims(self) -> Decimal:
        return self.interest + self.fees

    def empty(self) -> bool:
        return not (any(self.buckets) or self.disputed or self.unapplied or self.interest or self.fees)

    def add(self, other: AgedRow) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.disputed += other.disputed
        self.unapplied += other.unapplied
        self.interest += other.interest
        self.fees += other.fees
        self.customers |= other.customers


@dataclass
class AgedBalance:
    """A tenant's aged balance as of a day: rows sorted by currency then net (largest first), totals per currency."""

    tenant: str
    as_of: date
    by: By
    rows: list[AgedRow]
    totals: dict[str, AgedRow]  # currency -> its totals row

    def currencies(self) -> list[str]:
        return sorted(self.totals)


def customer_rows(state: CustomerState, as_of: date) -> dict[str, AgedRow]:
    """One customer's aged balance as of ``as_of``, per currency (only currencies with something to show)."""
    name = str((state.profile or {}).get("name") or state.customer_id)
    rows: dict[str, AgedRow] = {}

    def row(currency: str) -> AgedRow:
        found = rows.get(currency)
        if found is None:
            found = rows[currency] = AgedRow(state.customer_id, name, currency, customers={state.customer_id})
        return found

    for invoice in state.open_invoices():
        if invoice.outstanding == 0:
            continue
        line = row(invoice.currency)
        if invoice.invoice_id in state.disputes:
            line.disputed += invoice.outstanding
        else:
            line.buckets[bucket_of((as_of - invoice.due_date).days)] += invoice.outstanding
    for currency, amount in state.unallocated().items():
        row(currency).unapplied += amount
    for claim in state.claims.all():
        if claim.owed <= 0:
            continue
        if claim.kind == INTEREST:
            row(claim.currency).interest += claim.owed
        elif claim.kind == INDEMNITY:
            row(claim.currency).fees += claim.owed
    return {currency: line for currency, line in rows.items() if not line.empty()}


def segment_of(state: CustomerState) -> str:
    return str((state.profile or {}).get("segment") or NO_SEGMENT)


def aged_balance(tenant: str, states: Iterable[CustomerState], as_of: date, by: By = "customer") -> AgedBalance:
    """The aged balance of ``tenant`` from its customers' states as of ``as_of`` (folded at the end of that day)."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}: one of {', '.join(GROUPINGS)}")
    grouped: dict[tuple[str, str], AgedRow] = {}
    totals: dict[str, AgedRow] = {}
    for state in states:
        if state.tenant != tenant:
            raise ValueError(f"state of tenant {state.tenant!r} given to the aged balance of {tenant!r}")
        for currency, line in customer_rows(state, as_of).items():
            if by == "customer":
                key, name = line.key, line.name
            elif by == "segment":
                key = name = segment_of(state)
            else:
                key = name = currency
            target = grouped.get((key, currency))
            if target is None:
                target = grouped[(key, currency)] = AgedRow(key, name, currency)
            target.add(line)
            total = totals.get(currency)
            if total is None:
                total = totals[currency] = AgedRow("total", "total", currency)
            total.add(line)
    rows = sorted(grouped.values(), key=lambda r: (r.currency, -r.net, r.key))
    return AgedBalance(tenant, as_of, by, rows, totals)
