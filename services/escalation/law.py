"""The law a policy follows (``law: fr | eu | uk``): its reference rate, its margin, its fixed sums, the rates stated.

* **fr** — French Code de commerce, L441-10 and D441-5. Interest at the ECB main refinancing rate + 10 points
  (the rate in force on 1 January for January-June, on 1 July for July-December). An agreed rate (a contractual rate,
  or a margin other than 10) may not be below three times the French legal interest rate ("taux de l'intérêt
  légal", the rate for creditors other than individuals, published per semester): a policy whose contractual rate is
  below the floor of the latest semester relance knows is refused at load, and on any day whose semester's floor is
  higher the floor applies instead. The fixed recovery indemnity is EUR 40 per late invoice, **in EUR whatever the
  invoice's currency** (the amount the decree sets; converting it would need an exchange rate relance does not have).
* **eu** — the minimum of Directive 2011/7/EU: the reference rate (the ECB's) + 8 points, and the fixed sum of the
  policy's ``fixed_fee`` in the invoice's currency (the national equivalent of EUR 40), else its EUR amount in EUR.
* **uk** — Late Payment of Commercial Debts (Interest) Act 1998: the Bank of England Bank Rate + 8 points, the rate
  in force on 31 December applying to January-June and the one in force on 30 June to July-December; a fixed sum per
  late invoice by the size of the debt (the invoice's amount): GBP 40 below 1,000, GBP 70 from 1,000 to 9,999.99,
  GBP 100 from 10,000. **A non-GBP invoice** gets GBP 40, the smallest fixed sum the Act grants whatever the size of
  the debt: its band depends on the debt's sterling value, which relance cannot know without an exchange rate, and
  the smallest sum never over-claims.

A policy stating its own ``interest.margin`` keeps it (a margin below the law's is warned about when the policy is
loaded); without one, the margin is the law's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from services.escalation.interest import BOE, ECB, InterestResult, round_half_up, semester_start
from services.escalation.model import Law, Policy
from shared.contracts import events

EUR_INDEMNITY = Decimal("40.00")  # D441-5 (France) and the Directive's minimum


@dataclass(frozen=True, slots=True)
class LawRules:
    key: Law
    title: str  # what a credit manager reads: the texts applied
    reference: str  # the rate table of the reference rate (services.escalation.interest.SERIES)
    margin: Decimal  # points over the reference rate, when the policy states none; also the minimum warned below
    floor: bool  # an agreed rate is floored at 3 x the French legal interest rate


LAWS: dict[str, LawRules] = {
    "fr": LawRules("fr", "French Code de commerce L441-10 and D441-5", ECB, Decimal("10"), True),
    "eu": LawRules("eu", "Directive 2011/7/EU (minimum)", ECB, Decimal("8"), False),
    "uk": LawRules("uk", "Late Payment of Commercial Debts (Interest) Act 1998", BOE, Decimal("8"), False),
}

UK_FIXED_SUMS: tuple[tuple[Decimal, Decimal], ...] = (  # (debt from, fixed sum) in GBP, highest band first
    (Decimal("10000"), Decimal("100.00")),
    (Decimal("1000"), Decimal("70.00")),
    (Decimal("0"), Decimal("40.00")),
)


class _Invoiced(Protocol):
    @property
    def amount(self) -> Decimal: ...

    @property
    def currency(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Fee:
    """A fixed sum owed for a late invoice, in its own currency (not always the invoice's)."""

    amount: Decimal
    currency: str


def rules(law: str) -> LawRules:
    return LAWS[law]


def fixed_fee(policy: Policy, invoice: _Invoiced) -> Fee | None:
    """The fixed sum owed once for ``invoice`` when it is late under the policy's law, or None when there is none.

    Not subject to VAT and not part of the interest base; due in full even on a partly paid invoice (CJEU C-585/20).
    """
    if policy.law == "uk":
        if invoice.currency != "GBP":
            return Fee(UK_FIXED_SUMS[-1][1], "GBP")
        return Fee(next(fee for floor, fee in UK_FIXED_SUMS if invoice.amount >= floor), "GBP")
    if policy.law == "eu" and invoice.currency in policy.fixed_fee:
        return Fee(round_half_up(policy.fixed_fee[invoice.currency], invoice.currency), invoice.currency)
    euros = policy.fixed_fee.get("EUR")
    return None if euros is None else Fee(round_half_up(euros, "EUR"), "EUR")


def foreign_fee(policy: Policy, invoice: _Invoiced, fee: Decimal) -> dict[str, str]:
    """``fee_currency`` for a reminder line whose fee is not in the invoice's currency (EUR 40 on a GBP invoice under
    French law), else nothing: the fee is then the line's currency, as it always was."""
    charged = fixed_fee(policy, invoice) if fee else None
    return {} if charged is None or charged.currency == invoice.currency else {"fee_currency": charged.currency}


def applied_rates(results: Iterable[InterestResult]) -> list[events.AppliedRate]:
    """The annual rates the interest of ``results`` was computed at, each from the first day it applied, oldest first.

    One entry per semester and rate for a reference rate (the rate changes with the semester), one per rate for an
    agreed rate; the same rate for several invoices is stated once, from the earliest of their days.
    """
    found: dict[tuple[Any, ...], date] = {}
    for result in results:
        for period in result.periods:
            if period.reference is None:
                key: tuple[Any, ...] = (None, None, None, period.annual_rate)
            else:
                key = (semester_start(period.start), period.reference, period.margin, period.annual_rate)
            found[key] = min(found.get(key, period.start), period.start)
    applied = []
    for (_, reference, margin, rate), since in sorted(found.items(), key=lambda item: (item[1], str(item[0][3]))):
        fields: dict[str, Any] = {"from_date": since, "rate": rate}
        if reference is not None:
            fields |= {"reference": reference, "margin": margin}
        applied.append(events.AppliedRate(**fields))
    return applied


def reminder_law(policy: Policy, results: Iterable[InterestResult]) -> dict[str, Any]:
    """The fields a reminder states its law with: ``law``, and ``rates`` when it states any interest."""
    rates = applied_rates(results)
    return {"law": policy.law, **({"rates": rates} if rates else {})}
