"""The claims part of a customer's state: late interest and the fixed indemnity as amounts the customer owes.

Pure Python, folded from relance's own events. Per invoice and kind (``interest``, ``indemnity``) a :class:`Claim`
keeps what was charged (interest: the latest ``interest.computed`` figure, replaced for good by ``claim.fixed`` once
the principal is settled; indemnity: the ``fee.charged`` amount), the money allocated to it, by credit, and what was
waived (``claim.waived``, with reason and author). ``owed = charged - allocated - waived``. A claim is *claimed* once
its invoice reached a level whose actions claim it (``charge_interest``, ``charge_fee``): reminders demand only
claimed claims; an unclaimed one is owed all the same, shown, and can be waived. A claim is *asked* once a message
listed it in its ``claims`` (its principal settled): the engine's claims statement asks for a claim once, never again.

**Allocation of money to claims is a derivation of the fold, not a decision.** The ERP's explicit allocations to
invoices always stand (its books own the principal). Money a payment or credit note leaves unallocated ("free"
credit) goes, by the rule the latest claim event carried (``allocation``, absent meaning ``principal_first``):

* Under either rule, what a payment leaves over after the invoices the ERP allocated it to goes first to the owed
  claims of those same invoices: the surplus of a customer who pays exactly the total a formal notice demanded
  settles the claims it was asked for, never another invoice's principal.
* ``principal_first`` (the default): then to the customer's open principal, oldest invoice first, as the receivables
  fold always did, then to the other owed claims of its currency, oldest invoice first (interest before indemnity),
  and only then is it free for an invoice issued later. The ERP's balance per invoice stays equal to relance's for
  the invoices the ERP allocated money to.
* ``claims_first``: then to every owed claim before open principal (Code civil art. 1343-1: payment goes to interest
  first).

Only claimed claims take money, of undisputed, uncancelled invoices: relance does not take a payment for something it
never asked for. Free credit meets claims whenever either appears: when a payment or credit note arrives, when an
invoice is issued, cancelled or its dispute resolved (the receivables fold settles free credit then, and calls
:meth:`Claims.absorb`), and when a claim grows or becomes claimed. So the outcome follows the order of the events in
the stream alone, never the moment the engine evaluates: a payment the engine has not seen yet cannot lose a claim to
the next invoice. ``ledger show`` lists, for every claim, the credits that settled it.

A claim whose figure falls below what was allocated to it (a payment dated back lowers the interest) gives the excess
back to the credits it came from, newest first, which then settle again; a cancelled invoice's claims are void and
give back all their money.

The claims money may go to are found through an index of the claimed claims that may be owed, per currency (built
again when a state is loaded, never saved; a claim is added whenever it changes, dropped once it is owed nothing),
so settling costs the same however many claims the customer's history holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from shared.contracts import erp, events
from shared.contracts.events import Event

if TYPE_CHECKING:
    from shared.ledger.receivables import Credit, Receivables, Touched

ZERO = Decimal(0)
INTEREST = "interest"
INDEMNITY = "indemnity"
KINDS = (INTEREST, INDEMNITY)  # also the order in which money settles an invoice's claims
PRINCIPAL_FIRST = "principal_first"
CLAIMS_FIRST = "claims_first"
CLAIMING_ACTIONS = {"charge_interest": INTEREST, "charge_fee": INDEMNITY}  # a level's action -> the claim it claims


@dataclass
class Claim:
    """One claim of one invoice."""

    invoice_id: str
    kind: str  # INTEREST or INDEMNITY
    currency: str  # the claim's own currency (the law may set the indemnity's apart from the invoice's)
    charged: Decimal = ZERO
    through: date | None = None  # interest: the last day the figure accrues
    fixed: bool = False  # interest fixed for good at the settlement of the principal
    claimed: bool = False  # the customer was asked for it (its invoice reached a claiming level)
    void: bool = False  # the invoice was cancelled
    settled: dict[str, Decimal] = field(default_factory=dict)  # credit key -> amount allocated to this claim
    waived: Decimal = ZERO
    waivers: list[dict[str, str]] = field(default_factory=list)  # {amount, reason, author}, oldest first
    asked: str | None = None  # the first message that listed it in its ``claims`` (its principal then settled)

    @property
    def allocated(self) -> Decimal:
        return sum(self.settled.values(), ZERO)

    @property
    def owed(self) -> Decimal:
        remaining = self.charged - self.allocated - self.waived
        return ZERO if self.void or remaining < 0 else remaining


@dataclass
class Figures:
    """Claims of one currency, summed: charged = paid + waived + owed (unless a waiver exceeded what was left)."""

    charged: Decimal = ZERO
    paid: Decimal = ZERO
    waived: Decimal = ZERO
    owed: Decimal = ZERO

    def __iadd__(self, other: Figures) -> Figures:
        self.charged += other.charged
        self.paid += other.paid
        self.waived += other.waived
        self.owed += other.owed
        return self


@dataclass
class Claims:
    claims: dict[str, dict[str, Claim]] = field(default_factory=dict)  # invoice_id -> kind -> claim
    allocation: str = PRINCIPAL_FIRST  # the rule the latest claim event carried
    # currency -> (invoice_id, kind) of the claimed claims that may be owed (see the module's doc)
    _may_be_owed: dict[str, set[tuple[str, str]]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        """Build the index again from the claims (after they were set other than by :meth:`apply`)."""
        self._may_be_owed = {}
        for by_kind in self.claims.values():
            for claim in by_kind.values():
                self._may_be_payable(claim)

    def _may_be_payable(self, claim: Claim) -> None:
        if claim.claimed and claim.owed > 0:
            self._may_be_owed.setdefault(claim.currency, set()).add((claim.invoice_id, claim.kind))

    # ----------------------------------------------------------------------------------------------- reading
    def get(self, invoice_id: str, kind: str) -> Claim | None:
        return self.claims.get(invoice_id, {}).get(kind)

    def of_invoice(self, invoice_id: str) -> list[Claim]:
        by_kind = self.claims.get(invoice_id, {})
        return [by_kind[k] for k in KINDS if k in by_kind]

    def all(self) -> list[Claim]:
        return [c for invoice_id in sorted(self.claims) for c in self.of_invoice(invoice_id)]

    def owed(self) -> dict[str, Decimal]:
        """Per currency: what the customer owes in claims (claimed or not), apart from principal."""
        result: dict[str, Decimal] = {}
        for claim in self.all():
            if claim.owed > 0:
                result[claim.currency] = result.get(claim.currency, ZERO) + claim.owed
        return result

    def figures(self) -> dict[str, Figures]:
        """Per currency: what was charged, paid, waived and is still owed in claims (a report's line)."""
        result: dict[str, Figures] = {}
        for claim in self.all():
            if claim.void:
                continue
            figures = result.setdefault(claim.currency, Figures())
            figures += Figures(charged=claim.charged, paid=claim.allocated, waived=claim.waived, owed=claim.owed)
        return result

    @property
    def claims_first(self) -> bool:
        return self.allocation == CLAIMS_FIRST

    # ----------------------------------------------------------------------------------------------- applying
    def apply(self, event: Event, receivables: Receivables, touched: Touched) -> None:
        """Fold one accepted event in (after the receivables part folded it); a no-op for the others."""
        match event:
            case events.InterestComputed():
                self._rule(event.allocation)
                claim = self.entry(event.invoice_id, INTEREST, event.currency)
                if not claim.fixed:
                    claim.charged, claim.through = event.amount, event.through
                self._changed(claim, receivables, touched)
            case events.ClaimFixed():
                self._rule(event.allocation)
                claim = self.entry(event.invoice_id, INTEREST, event.currency)
                claim.charged, claim.through, claim.fixed = event.amount, event.through, True
                self._changed(claim, receivables, touched)
            case events.FeeCharged():
                self._rule(event.allocation)
                claim = self.entry(event.invoice_id, INDEMNITY, event.currency)
                claim.currency, claim.charged = event.currency, event.amount
                self._changed(claim, receivables, touched)
            case events.ClaimWaived():
                claim = self.entry(event.invoice_id, event.kind, event.currency)
                claim.waived += event.amount
                waiver = {"amount": str(event.amount), "reason": event.reason, "author": event.author}
                claim.waivers.append(waiver)
                self._changed(claim, receivables, touched)
            case events.LevelReached():
                for action, kind in CLAIMING_ACTIONS.items():
                    if action in event.actions:
                        claim = self.entry(event.invoice_id, kind, event.currency)
                        claim.claimed = True
                        self._changed(claim, receivables, touched)
            case erp.InvoiceCancelled():
                for claim in self.of_invoice(event.invoice_id):
                    self._changed(claim, receivables, touched)
            case events.ReminderRequested():
                for line in event.claims or []:
                    asked = self.get(line.invoice_id, line.kind)
                    if asked is not None and asked.asked is None:
                        asked.asked = event.reminder_id
                        touched.invoices.add(line.invoice_id)

    def _rule(self, allocation: str | None) -> None:
        self.allocation = allocation or PRINCIPAL_FIRST

    def entry(self, invoice_id: str, kind: str, currency: str) -> Claim:
        """The claim of that invoice and kind, created empty when there is none yet."""
        by_kind = self.claims.setdefault(invoice_id, {})
        claim = by_kind.get(kind)
        if claim is None:
            claim = by_kind[kind] = Claim(invoice_id, kind, currency)
        return claim

    def _changed(self, claim: Claim, receivables: Receivables, touched: Touched) -> None:
        """A claim's figure, status or waiver changed: give back what it holds beyond its due, then settle again."""
        touched.invoices.add(claim.invoice_id)
        claim.void = claim.invoice_id in receivables.cancelled
        keep = ZERO if claim.void else max(ZERO, claim.charged - claim.waived)
        excess = claim.allocated - keep
        for key in reversed(list(claim.settled)):
            if excess <= 0:
                break
            back = min(excess, claim.settled[key])
            claim.settled[key] -= back
            if claim.settled[key] == 0:
                del claim.settled[key]
            receivables.give_back(receivables.credits[key], back)
            touched.credits.add(key)
            excess -= back
        self._may_be_payable(claim)
        receivables.settle(claim.currency, touched)

    # ----------------------------------------------------------------------------------------------- allocation
    def absorb(
        self, receivables: Receivables, credits: list[Credit], currency: str, touched: Touched, *, own: bool = False
    ) -> None:
        """Let the free part of ``credits`` (oldest first) settle the owed, claimed claims of ``currency``; with
        ``own``, only the claims of the invoices each credit was applied to."""
        if not any(c.free > 0 for c in credits):
            return
        for claim in self._payable(receivables, currency):
            for credit in credits:
                if own and claim.invoice_id not in credit.applied:
                    continue
                owed = claim.owed
                if owed <= 0:
                    break
                take = min(owed, credit.free)
                if take <= 0:
                    continue
                credit.free -= take
                claim.settled[credit.key] = claim.settled.get(credit.key, ZERO) + take
                touched.credits.add(credit.key)
                touched.invoices.add(claim.invoice_id)

    def _payable(self, receivables: Receivables, currency: str) -> list[Claim]:
        """The claims money may settle, oldest invoice first, interest before indemnity."""
        keys = self._may_be_owed.get(currency)
        if not keys:
            return []
        found: list[tuple[tuple[date, date, str], int, Claim]] = []
        for key in list(keys):
            invoice_id, kind = key
            claim = self.get(invoice_id, kind)
            if claim is None or kind not in KINDS or claim.currency != currency or not claim.claimed or claim.owed <= 0:
                keys.discard(key)  # owed nothing (until it changes, which adds it again)
                continue
            invoice = receivables.invoices.get(invoice_id)
            if invoice is None or invoice.status == "cancelled" or invoice_id in receivables.disputes:
                continue
            found.append(((invoice.due_date, invoice.issue_date, invoice_id), KINDS.index(kind), claim))
        return [claim for _, _, claim in sorted(found, key=lambda item: (item[0], item[1]))]
