"""What the demo prints: receivables, aged balance and top overdue accounts read from the projected ledger.

The figures come from :class:`~shared.ledger.state.CustomerState` (``balances()``, ``overdue()``, open invoices) as
of a fixed date, so the same sample always prints the same numbers whatever the wall clock says. Money stays
``Decimal`` from the ledger to the screen and is printed with its currency's minor unit.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TextIO

from services.reports.aging import BUCKETS, bucket_of
from shared.contracts.erp import minor_units
from shared.ledger.claims import Figures
from shared.ledger.state import CustomerState

ZERO = Decimal(0)


def money(amount: Decimal, currency: str | None = None, *, width: int = 0) -> str:
    """``1,234.50`` (or ``1,234.50 EUR``): the currency's decimals, thousands separated, never a float."""
    places = minor_units(currency) if currency else 2
    text = f"{amount.quantize(Decimal(1).scaleb(-places)):,}"
    if currency:
        text = f"{text} {currency}"
    return text.rjust(width)


@dataclass
class Receivables:
    """One tenant's book in one currency."""

    customers: int = 0
    open: Decimal = ZERO  # open invoices less unapplied credit
    overdue: Decimal = ZERO
    overdue_customers: int = 0
    disputed: Decimal = ZERO
    unapplied: Decimal = ZERO


@dataclass
class Debtor:
    tenant: str
    customer_id: str
    name: str
    currency: str
    overdue: Decimal
    oldest_days: int
    invoices: int
    flags: tuple[str, ...]


@dataclass
class Book:
    """Everything the summary shows about the ledger, computed as of one date."""

    as_of: date
    receivables: dict[tuple[str, str], Receivables] = field(default_factory=dict)
    aging: dict[str, list[Decimal]] = field(default_factory=dict)
    unapplied: dict[str, Decimal] = field(default_factory=dict)
    debtors: list[Debtor] = field(default_factory=list)
    customers_by_tenant: dict[str, int] = field(default_factory=dict)
    claims: dict[tuple[str, str], Figures] = field(default_factory=dict)  # (tenant, currency) -> claims summed
    claimed_owed: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # of which asked for already

    @classmethod
    def of(cls, states: Iterable[CustomerState], as_of: date) -> Book:
        book = cls(as_of=as_of)
        for state in states:
            book.customers_by_tenant[state.tenant] = book.customers_by_tenant.get(state.tenant, 0) + 1
            book._add(state)
        return book

    def _add(self, state: CustomerState) -> None:
        balances, overdue, unapplied = state.balances(), state.overdue(self.as_of), state.unallocated()
        for currency, figures in state.claims.figures().items():
            total = self.claims.setdefault((state.tenant, currency), Figures())
            total += figures
        for claim in state.claims.all():
            if claim.claimed and claim.owed > 0:
                key = (state.tenant, claim.currency)
                self.claimed_owed[key] = self.claimed_owed.get(key, ZERO) + claim.owed
        for currency, balance in balances.items():
            row = self.receivables.setdefault((state.tenant, currency), Receivables())
            row.customers += 1
            row.open += balance
            row.overdue += overdue.get(currency, ZERO)
            row.overdue_customers += 1 if overdue.get(currency, ZERO) > 0 else 0
            row.unapplied += unapplied.get(currency, ZERO)
            self.unapplied[currency] = self.unapplied.get(currency, ZERO) + unapplied.get(currency, ZERO)
        for invoice in state.open_invoices():
            days = (self.as_of - invoice.due_date).days
            self.aging.setdefault(invoice.currency, [ZERO] * len(BUCKETS))[bucket_of(days)] += invoice.outstanding
            if invoice.invoice_id in state.disputes:
                self.receivables[(state.tenant, invoice.currency)].disputed += invoice.outstanding
        name = str((state.profile or {}).get("name", state.customer_id))
        flags = tuple(
            label
            for label, present in (
                ("disputed", bool(state.disputes)),
                ("promise to pay", bool(state.promises)),
                ("payment plan", bool(state.plans)),
            )
            if present
        )
        for currency, amount in overdue.items():
            if amount <= 0:
                continue
            late = [i for i in state.open_invoices() if i.currency == currency and i.due_date < self.as_of]
            self.debtors.append(
                Debtor(
                    state.tenant,
                    state.customer_id,
                    name,
                    currency,
                    amount,
                    max((self.as_of - i.due_date).days for i in late),
                    len(late),
                    flags,
                )
            )

    def top_debtors(self, currency: str, count: int = 5) -> list[Debtor]:
        ranked = sorted(
            (d for d in self.debtors if d.currency == currency),
            key=lambda d: (-d.overdue, -d.oldest_days, d.tenant, d.customer_id),
        )
        return ranked[:count]

    def currencies(self) -> list[str]:
        return sorted({currency for _, currency in self.receivables})

    def problems(self) -> list[str]:
        """Cross-checks between the figures: they come from different reads of the same state and must agree."""
        problems = []
        for currency in self.currencies():
            buckets = self.aging.get(currency, [ZERO] * len(BUCKETS))
            net = sum((r.open for (_, c), r in self.receivables.items() if c == currency), ZERO)
            overdue = sum((r.overdue for (_, c), r in self.receivables.items() if c == currency), ZERO)
            if sum(buckets, ZERO) - self.unapplied.get(currency, ZERO) != net:
                problems.append(f"{currency}: aged balance less unapplied credit differs from the open amount")
            if sum(buckets[1:], ZERO) != overdue:
                problems.append(f"{currency}: overdue buckets differ from the overdue amount")
        return problems


# ------------------------------------------------------------------------------------------------- rendering
def table(headers: list[str], rows: list[list[str]], align: str = "", *, indent: str = "  ") -> list[str]:
    """Aligned columns; ``align`` has one letter per column, ``l`` or ``r`` (default: first left, others right)."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(cells: list[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return (indent + "  ".join(parts)).rstrip()

    return [line(headers), indent + "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def count(value: int) -> str:
    return f"{value:,}"


class Progress:
    """A progress line: redrawn in place on a terminal, a few plain lines otherwise (logs, CI, pipes)."""

    def __init__(self, label: str, total: int, out: TextIO | None = None, width: int = 30) -> None:
        self.label, self.total, self.out, self.width = label, max(total, 1), out or sys.stdout, width
        self.started = time.perf_counter()
        self.tty = self.out.isatty()
        self._next_mark = 25
        self._drawn = 0

    def update(self, done: int) -> None:
        percent = 100 * done // self.total
        if not self.tty and percent < self._next_mark and done < self.total:
            return
        while percent >= self._next_mark:
            self._next_mark += 25
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        line = f"  {self.label} [{bar}] {count(done)}/{count(self.total)} {percent:3d}%  {count(int(done / elapsed))}/s"
        if self.tty:
            padding = " " * max(0, self._drawn - len(line))  # a shorter line must erase the longer one
            self._drawn = len(line)
            self.out.write("\r" + line + padding + ("\n" if done >= self.total else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()
