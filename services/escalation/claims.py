"""Claims in the engine: what the late interest and the fixed indemnity of each invoice are, and what a reminder asks.

The engine (:mod:`services.escalation.engine`) calls :class:`ClaimsView` at fixed points of an evaluation; the
fold of what it decides is :mod:`shared.ledger.claims`. The rules, in a credit manager's words:

* **Owed from the first day late, whatever the level.** The fixed indemnity is charged (``fee.charged``, once per
  invoice) the first evaluation after the invoice's due date, and for an invoice settled late that never had it. Late
  interest accrues from the day after the due date; its running total is recorded (``interest.computed``) whenever
  the invoice moves a level or a message lists it, and fixed for good (``claim.fixed``) once its principal is settled
  (paid, credited) after the due date: interest through the settlement day, the last day money reached it.
* **Claimed from the policy's level.** A level with ``charge_interest`` / ``charge_fee`` means "claimed from this
  level": until its invoice reaches such a level a claim is owed but not demanded. A reminder line's ``interest`` and
  ``fee`` are the claimed amounts still owed (never what was paid or waived); claims still owed and claimed on
  invoices whose principal is settled ride in the ``claims`` of the customer's next message in the invoice's currency.
* **Asked once.** Claims no message has asked for since their principal was settled are asked for by a *claims
  statement* (:meth:`ClaimsView.statement`, the engine's ``reminder.requested`` at the level
  :data:`~shared.contracts.events.CLAIMS_STATEMENT`) on the next contact day, unless a message of the currency goes
  that day anyway and carries them; once asked (the fold's ``Claim.asked``), a claim is never stated again.
* **Someone pursues or waives.** A claimed claim left owed once its invoice is settled gives one ``claim_owed`` task
  per invoice, from the folded state (after the fold let any free credit settle it).

The fixed indemnity's amount and currency come from :func:`fee_for` alone: the law of the policy decides them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from services.escalation.interest import (
    InterestResult,
    MissingReferenceRate,
    RateTable,
    late_interest,
    outstanding_timeline,
)
from services.escalation.law import fixed_fee
from services.escalation.model import Decision, Policy
from shared.contracts import events
from shared.ledger.claims import INDEMNITY, INTEREST, PRINCIPAL_FIRST, Claim
from shared.ledger.state import CustomerState, Invoice

ZERO = Decimal(0)
TASK = "claim_owed"  # a claimed claim left owed after its invoice's principal was settled


@dataclass(frozen=True, slots=True)
class Charge:
    """An event the engine is to decide: its model, the subject its id derives from, its fields."""

    model: type[events.RelanceEvent]
    subject: tuple[str, ...]
    fields: dict[str, Any]


def fee_for(policy: Policy, invoice: Invoice) -> tuple[Decimal, str] | None:
    """The fixed indemnity of a late invoice: amount and currency, or None when none.

    The one call of :func:`~services.escalation.law.fixed_fee`: the policy's law gives the fee's own currency
    (EUR 40 whatever the invoice's under French law, a sterling sum under English law).
    """
    fee = fixed_fee(policy, invoice)
    return None if fee is None else (fee.amount, fee.currency)


def allocation(policy: Policy) -> dict[str, str]:
    """The allocation rule as claim events carry it: written only when it is not the default."""
    rule = policy.claims_allocation
    return {} if rule == PRINCIPAL_FIRST else {"allocation": rule}


def settlement_day(state: CustomerState, invoice: Invoice) -> date | None:
    """The day a settled invoice's principal was settled: the last day money reached it (None while open)."""
    if invoice.status != "paid" or not invoice.allocations:
        return None
    return max(state.credits[key].on for key in invoice.allocations)


@dataclass
class ClaimsView:
    """The claims side of one evaluation: what it charged, and what its messages say about claims."""

    state: CustomerState
    policy: Policy
    today: date
    rates: RateTable | None
    task_id: Callable[[str, str], str]  # the engine's id of a task of a kind about an invoice
    decided: list[Decision] = field(default_factory=list)  # the evaluation's decisions so far (the engine's list)
    fees: dict[str, tuple[Decimal, str]] = field(default_factory=dict)  # invoice_id -> fee charged now
    settled_charged: set[str] = field(default_factory=set)  # settled invoices this evaluation charged claims on
    _folded: CustomerState | None = None  # the state with the evaluation's first decisions folded in ...
    _folded_count: int = 0  # ... this many of them

    # ----------------------------------------------------------------------------------------------- charging
    def charges(self, late: Iterable[Invoice]) -> list[Charge]:
        """The indemnity of every late invoice that has none yet (``late``: the open ones the engine may act on,
        past due), and for every invoice settled late the indemnity and its interest fixed."""
        found: list[Charge] = []
        for invoice in late:
            found += self._fee(invoice)
        for invoice in sorted(self.state.invoices.values(), key=lambda i: (i.due_date, i.invoice_id)):
            settled = settlement_day(self.state, invoice)
            if settled is None or settled <= invoice.due_date or invoice.invoice_id in self.state.disputes:
                continue
            charged = self._fee(invoice) + self._fixed(invoice, settled)
            if charged:
                self.settled_charged.add(invoice.invoice_id)
            found += charged
        return found

    def _fee(self, invoice: Invoice) -> list[Charge]:
        known = self.state.claims.get(invoice.invoice_id, INDEMNITY)
        record = self.state.escalations.get(invoice.invoice_id)
        if (known is not None and known.charged > 0) or (record is not None and record.fee is not None):
            return []
        fee = fee_for(self.policy, invoice)
        if fee is None or invoice.invoice_id in self.fees:
            return []
        self.fees[invoice.invoice_id] = fee
        amount, currency = fee
        fields = {"invoice_id": invoice.invoice_id, "currency": currency, "amount": amount}
        return [Charge(events.FeeCharged, (invoice.invoice_id,), fields | allocation(self.policy))]

    def _fixed(self, invoice: Invoice, settled: date) -> list[Charge]:
        known = self.state.claims.get(invoice.invoice_id, INTEREST)
        if known is not None and known.fixed:
            return []
        try:
            result = self.interest(invoice, settled)
        except MissingReferenceRate:
            return []  # fixed once the rate is in the table: relance never guesses a rate
        if result is None or (result[0] == 0 and known is None):
            return []
        amount, days = result
        fields = {
            "invoice_id": invoice.invoice_id,
            "currency": invoice.currency,
            "kind": INTEREST,
            "amount": amount,
            "through": settled,
            "days": days,
        }
        return [Charge(events.ClaimFixed, (invoice.invoice_id,), fields | allocation(self.policy))]

    def interest(self, invoice: Invoice, through: date) -> tuple[Decimal, int] | None:
        """Late interest on the invoice through ``through`` and its days, None without the rates it needs
        (raises :class:`MissingReferenceRate` for a semester the table lacks)."""
        if self.rates is None and self.policy.interest.basis != "contractual":
            return None
        result = self._result(invoice, through)
        return result.amount, result.days

    def _result(self, invoice: Invoice, through: date) -> InterestResult:
        movements = [(self.state.credits[key].on, amount) for key, amount in invoice.allocations.items()]
        timeline = outstanding_timeline(invoice.amount, movements, min(invoice.issue_date, invoice.due_date))
        return late_interest(timeline, invoice.due_date, through, self.policy.interest, self.rates, invoice.currency)

    # ----------------------------------------------------------------------------------------------- messages
    def line(
        self, invoice: Invoice, actions: set[str], interest: Decimal | None
    ) -> tuple[Decimal, Decimal, dict[str, str]]:
        """A reminder line's ``interest`` and ``fee``: the claimed amounts still owed (``interest``: the figure of
        this evaluation, if it computed one), and ``fee_currency`` when the fee is in another currency."""
        owed_interest = ZERO
        claim = self.state.claims.get(invoice.invoice_id, INTEREST)
        if "charge_interest" in actions:
            figure = interest if interest is not None else (claim.charged if claim is not None else ZERO)
            taken = ZERO if claim is None else claim.allocated + claim.waived
            owed_interest = max(ZERO, figure - taken)
        owed_fee = ZERO
        extra: dict[str, str] = {}
        fee = self.state.claims.get(invoice.invoice_id, INDEMNITY)
        if "charge_fee" in actions:
            charged, currency = self.fees.get(invoice.invoice_id) or (
                (fee.charged, fee.currency) if fee is not None else (ZERO, invoice.currency)
            )
            taken = ZERO if fee is None else fee.allocated + fee.waived
            owed_fee = max(ZERO, charged - taken)
            if owed_fee and currency != invoice.currency:
                extra["fee_currency"] = currency
        return owed_interest, owed_fee, extra

    def settled_state(self) -> CustomerState:
        """The state the messages' claims are read from: with the claims this evaluation charged on settled invoices
        (their interest fixed, their indemnity) folded in, so that a message asks for the figures as fixed."""
        if not self.settled_charged:
            return self.state
        if self._folded is None:
            self._folded = _folded(self.state, self.decided)
            self._folded_count = len(self.decided)
        return self._folded

    def _all_folded(self, decided: list[Decision]) -> CustomerState:
        """The state with every one of ``decided`` folded in, for :meth:`tasks`, the last reader: the copy
        :meth:`settled_state` made of the evaluation's first decisions takes the ones decided since (folding the
        rest after the first ones is folding them all), and is its no more."""
        folded = self._folded
        if folded is None or decided is not self.decided:
            return _folded(self.state, decided)
        for decision in decided[self._folded_count :]:
            folded.apply(decision.event, None, decision.event_id, recorded_at=None)
        self._folded, self._folded_count = None, 0
        return folded

    def claim_lines(self, currency: str, unasked: bool = False) -> list[events.ClaimLine]:
        """The claims a message in ``currency`` carries: claimed and still owed, on invoices of that currency whose
        principal is settled, oldest invoice first (``unasked``: only those no message asked for yet, the interest
        once fixed)."""
        state = self.settled_state()
        lines = []
        for invoice in _settled(state, currency):
            paid_on = settlement_day(state, invoice)
            when = (
                {} if paid_on is None else {"paid_on": paid_on, "days_late": max(0, (paid_on - invoice.due_date).days)}
            )
            for claim in state.claims.of_invoice(invoice.invoice_id):
                if unasked and (claim.asked or (claim.kind == INTEREST and not claim.fixed)):
                    continue
                if claim.claimed and claim.owed > 0:
                    lines.append(
                        events.ClaimLine(
                            invoice_id=invoice.invoice_id,
                            number=invoice.number,
                            kind=claim.kind,  # type: ignore[arg-type]
                            currency=claim.currency,
                            amount=claim.owed,
                            **when,
                        )
                    )
        return lines

    def unasked(self) -> list[str]:
        """The currencies with claims a claims statement is to ask for: claimed, owed, on invoices settled, and
        listed by no message since (the fold's ``asked``)."""
        currencies = sorted({i.currency for i in self.state.invoices.values()})
        return [c for c in currencies if self._worth_a_letter(self.claim_lines(c, unasked=True))]

    def _worth_a_letter(self, lines: list[events.ClaimLine]) -> bool:
        """Whether the claims reach the policy's minimum amount in some currency: below it no statement goes (a
        letter for a few cents of interest accrued between a notice and its payment), and they stay owed, shown,
        waivable, and carried by the customer's next message."""
        sums: dict[str, Decimal] = {}
        for line in lines:
            sums[line.currency] = sums.get(line.currency, ZERO) + line.amount
        return any(total > 0 and total >= self.policy.minimum_overdue.get(c, ZERO) for c, total in sums.items())

    def statement(self, currency: str) -> tuple[list[events.ClaimLine], events.ReminderTotals, list[InterestResult]]:
        """A claims statement in ``currency``: the claims no message asked for yet, their totals (``claims`` in the
        currency), and the interest computations they come from (for the rates the letter states)."""
        lines = self.claim_lines(currency, unasked=True)
        summed = sum((line.amount for line in lines if line.currency == currency), ZERO)
        totals = events.ReminderTotals(outstanding=ZERO, interest=ZERO, fees=ZERO, claims=summed)
        results = []
        state = self.settled_state()
        for invoice_id in dict.fromkeys(line.invoice_id for line in lines if line.kind == INTEREST):
            invoice = state.invoices[invoice_id]
            settled = settlement_day(state, invoice)
            if settled is None or (self.rates is None and self.policy.interest.basis != "contractual"):
                continue
            try:
                results.append(self._result(invoice, settled))
            except MissingReferenceRate:
                continue  # the figure was fixed with the rate; a table that lost it only leaves the rate unstated
        return lines, totals, results

    def message(
        self, currency: str, totals: events.ReminderTotals
    ) -> tuple[dict[str, list[events.ClaimLine]], events.ReminderTotals]:
        """The ``claims`` field of a message in ``currency`` (empty when none) and its totals with ``claims``."""
        lines = self.claim_lines(currency)
        if not lines:
            return {}, totals
        summed = sum((line.amount for line in lines if line.currency == currency), ZERO)
        with_claims = events.ReminderTotals(
            outstanding=totals.outstanding, interest=totals.interest, fees=totals.fees, claims=summed
        )
        return {"claims": lines}, with_claims

    # ----------------------------------------------------------------------------------------------- tasks
    def tasks(self, decided: list[Decision]) -> list[Charge]:
        """One ``claim_owed`` task per settled invoice left owing claimed claims, after the evaluation's own
        decisions (``decided``): when it charged claims on a settled invoice, they are folded into a copy of the
        state first, so that free credit the fold would let settle them counts."""
        state = self._all_folded(decided) if self.settled_charged else self.state
        found = []
        for invoice, owed in self._untasked(state):
            what = " and ".join(f"{c.kind} {c.owed} {c.currency}" for c in owed)
            note = (
                f"invoice {invoice.number} is settled but {what} claimed on it is still owed: pursue it, or waive it "
                "with a reason (relance claims waive)"
            )
            fields = {
                "task_id": self.task_id(TASK, invoice.invoice_id),
                "kind": TASK,
                "due_on": self.today,
                "invoice_ids": [invoice.invoice_id],
                "currency": invoice.currency,
                "amount_at_risk": sum((c.owed for c in owed if c.currency == invoice.currency), ZERO),
                "note": note,
            }
            found.append(Charge(events.TaskCreated, (TASK, invoice.invoice_id), fields))
        return found

    def upcoming(self) -> list[date]:
        """Tomorrow, when a task of :meth:`tasks` is still to be created (the claim became owed after this
        evaluation's decisions were folded, so the next evaluation creates it)."""
        return [self.today + timedelta(days=1)] if self._untasked(self.state) else []

    def _untasked(self, state: CustomerState) -> list[tuple[Invoice, list[Claim]]]:
        """The settled invoices left owing claimed claims that have no ``claim_owed`` task yet."""
        found = []
        for currency in sorted({i.currency for i in state.invoices.values()}):
            for invoice in _settled(state, currency):
                owed = [c for c in state.claims.of_invoice(invoice.invoice_id) if c.claimed and c.owed > 0]
                if owed and self.task_id(TASK, invoice.invoice_id) not in state.tasks:
                    found.append((invoice, owed))
        return found


def _folded(state: CustomerState, decided: Iterable[Decision]) -> CustomerState:
    """A copy of the state with the decisions folded in (sharing what only the ERP's events change)."""
    folded = state.decisions_copy()
    for decision in decided:
        folded.apply(decision.event, None, decision.event_id, recorded_at=None)
    return folded


def _settled(state: CustomerState, currency: str) -> list[Invoice]:
    """The invoices of ``currency`` whose principal is settled, undisputed, with claims, oldest first (the others
    have no claim to list or to pursue)."""
    invoices = state.invoices
    return sorted(
        (
            i
            for invoice_id in state.claims.claims
            if (i := invoices.get(invoice_id)) is not None
            and i.currency == currency
            and i.status == "paid"
            and invoice_id not in state.disputes
        ),
        key=lambda i: (i.due_date, i.issue_date, i.invoice_id),
    )


def owed_claims(state: CustomerState, invoice_ids: Iterable[str]) -> dict[str, Decimal]:
    """Per invoice: the claimed claims still owed on it (in the invoice's currency), those owing something."""
    found: dict[str, Decimal] = {}
    for invoice_id in invoice_ids:
        invoice = state.invoices.get(invoice_id)
        owed = sum(
            (
                c.owed
                for c in state.claims.of_invoice(invoice_id)
                if c.claimed and invoice is not None and c.currency == invoice.currency
            ),
            ZERO,
        )
        if owed > 0:
            found[invoice_id] = owed
    return found
