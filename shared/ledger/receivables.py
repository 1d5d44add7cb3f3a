"""The receivables part of a customer's state: profile, invoices, payments, credit notes and their allocation.

The fold of the ERP's events (typed by :mod:`shared.contracts.erp`), pure Python. :meth:`Receivables.check` says
whether an event is a duplicate of what is held or against a business rule; :meth:`Receivables.apply` folds it in,
adding to a :class:`Touched` the invoices and credits it changed.

Out-of-order input is normal. A payment, credit note, cancellation or dispute may arrive before the invoice it names:
the money waits as credit earmarked for that invoice and the flags wait in the state, both applied when the invoice
arrives. Allocations, once made, stay (as in any sub-ledger); what is order-independent is the balance per currency:
the sum of what was invoiced and not cancelled, less every payment and credit note, less what settled claims. Where
the latest statement wins (the profile, an invoice's dispute), "latest" is the capped ``occurred_at``
:mod:`shared.ledger.state` explains.

Free credit also settles the claims owed besides principal (late interest, indemnities): :meth:`Receivables.settle`
hands it to the claims part the state composes (:mod:`shared.ledger.claims`), before principal or after it as the
policy's rule says.

Folding one event costs the same however long the stream is: the fold keeps indexes beside its fields, the open
invoices of each currency in allocation order (due date, issue date, id; all of them, and those not disputed), the
credits of each currency that may hold free money, and the credits earmarked for each invoice not yet known. They
are derived from the fields (built again when a state is loaded from its snapshot, never saved), kept up to date
where the fields change, and give exactly what sorting every open invoice and scanning every credit gave.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

import orjson

from shared.contracts import erp
from shared.contracts.events import Event, data_of

ZERO = Decimal(0)
Age = tuple[date, date, str]  # an invoice's place in the allocation order: due date, issue date, id


@dataclass(frozen=True, slots=True)
class Check:
    verdict: Literal["new", "duplicate", "rejected"]
    reason: str = ""


NEW = Check("new")


@dataclass
class Touched:
    """What one fold changed, for the projections: invoices by id, credits by key."""

    invoices: set[str] = field(default_factory=set)
    credits: set[str] = field(default_factory=set)


@dataclass
class Invoice:
    invoice_id: str
    number: str
    issue_date: date
    due_date: date
    currency: str
    amount: Decimal
    outstanding: Decimal
    status: Literal["open", "paid", "cancelled"] = "open"
    allocations: dict[str, Decimal] = field(default_factory=dict)  # credit key -> amount applied

    @property
    def is_open(self) -> bool:
        return self.status == "open"


@dataclass
class Credit:
    """Money on the customer's side: a payment or a credit note, and where it went."""

    key: str  # "payment:<id>" or "credit_note:<id>"
    currency: str
    amount: Decimal
    on: date
    free: Decimal  # unallocated, available for the oldest open invoices
    earmarks: dict[str, Decimal] = field(default_factory=dict)  # waiting for an invoice not yet known
    applied: dict[str, Decimal] = field(default_factory=dict)  # invoice_id -> amount

    @property
    def kind(self) -> str:
        return self.key.split(":", 1)[0]


class ClaimsSink(Protocol):
    """Where free credit goes besides principal: :class:`shared.ledger.claims.Claims` (:meth:`Receivables.settle`)."""

    @property
    def claims_first(self) -> bool: ...

    def absorb(
        self, receivables: Receivables, credits: list[Credit], currency: str, touched: Touched, *, own: bool = False
    ) -> None: ...


@dataclass
class Receivables:
    profile: dict[str, Any] | None = None  # the customer.upserted data in force
    profile_at: str | None = None
    invoices: dict[str, Invoice] = field(default_factory=dict)
    credits: dict[str, Credit] = field(default_factory=dict)
    cancelled: dict[str, str] = field(default_factory=dict)  # invoice_id -> reason (also before issue)
    disputes: dict[str, str] = field(default_factory=dict)  # invoice_id -> reason, while unresolved
    # invoice_id -> [occurred_at, "disputed" | "resolved"] of its latest dispute event: the latest one decides,
    # whatever order they arrive in.
    dispute_latest: dict[str, list[str]] = field(default_factory=dict)
    due_date_passed: dict[str, str] = field(default_factory=dict)  # invoice_id -> due date reported by ERP
    promises: dict[str, dict[str, Any]] = field(default_factory=dict)  # promise_id -> promise_to_pay.recorded data
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)  # plan_id -> payment_plan.agreed data
    fingerprints: dict[str, str] = field(default_factory=dict)  # business key -> content fingerprint
    promise_recorded: dict[str, str] = field(default_factory=dict)  # promise_id -> occurred_at of its record
    # The claims owed besides principal, set by the state that composes both; not part of this part's own state.
    claims: ClaimsSink | None = field(default=None, compare=False, repr=False)
    # The indexes (see the module's doc): currency -> ages of its open invoices, sorted; currency -> keys of the
    # credits that may hold free money (checked, and dropped if not, when read); invoice id -> credits earmarked.
    _open: dict[str, list[Age]] = field(default_factory=dict, init=False, compare=False, repr=False)
    _undisputed: dict[str, list[Age]] = field(default_factory=dict, init=False, compare=False, repr=False)  # of those
    _may_be_free: dict[str, set[str]] = field(default_factory=dict, init=False, compare=False, repr=False)
    _earmarked: dict[str, list[str]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for invoice in self.invoices.values():
            if invoice.is_open:
                self._opened(invoice)
        for credit in self.credits.values():
            self._may_hold_free(credit)
            for invoice_id in credit.earmarks:
                self._earmarked.setdefault(invoice_id, []).append(credit.key)

    # ----------------------------------------------------------------------------------------------- deciding
    def check(self, event: Event) -> Check:
        """Is this ERP event new, a duplicate of what is held, or against a business rule?"""
        key = _business_key(event)
        if key is not None and key in self.fingerprints:
            if self.fingerprints[key] == _fingerprint(event):
                return Check("duplicate", f"{key} already recorded with the same content")
            return Check("rejected", self._conflict_reason(event, key))
        match event:
            case erp.PaymentReceived():
                for allocation in event.allocations:
                    invoice = self.invoices.get(allocation.invoice_id)
                    if invoice is not None and invoice.currency != event.currency:
                        return Check(
                            "rejected",
                            f"payment {event.payment_id} in {event.currency} is allocated to invoice "
                            f"{invoice.invoice_id} in {invoice.currency}",
                        )
            case erp.CreditNoteIssued(invoice_id=str(invoice_id)) if invoice_id:
                invoice = self.invoices.get(invoice_id)
                if invoice is not None and invoice.currency != event.currency:
                    return Check(
                        "rejected",
                        f"credit note {event.credit_note_id} in {event.currency} names invoice "
                        f"{invoice.invoice_id} in {invoice.currency}",
                    )
            case erp.InvoiceCancelled() if event.invoice_id in self.cancelled:
                return Check("duplicate", f"invoice {event.invoice_id} is already cancelled")
            case erp.InvoiceDueDatePassed() if event.invoice_id in self.due_date_passed:
                return Check("duplicate", f"due date of invoice {event.invoice_id} already recorded as passed")
            case erp.InvoiceDisputed() if event.invoice_id in self.disputes:
                return Check("duplicate", f"invoice {event.invoice_id} is already disputed")
            case erp.InvoiceDisputeResolved() if event.invoice_id not in self.disputes:
                latest = self.dispute_latest.get(event.invoice_id)
                if latest is not None and latest[1] == "resolved":
                    return Check("duplicate", f"invoice {event.invoice_id} has no open dispute")
            case erp.CustomerUpserted() if self.profile == data_of(event):
                return Check("duplicate", "customer profile unchanged")
        return NEW

    def _conflict_reason(self, event: Event, key: str) -> str:
        if isinstance(event, erp.InvoiceIssued):
            known = self.invoices[event.invoice_id]
            return (
                f"{key} was already issued with different content (number {known.number}, amount {known.amount} "
                f"{known.currency}, due {known.due_date}); correct an invoice with a credit note or a cancellation"
            )
        return f"{key} was already recorded with different content; an id must not be reused"

    # ----------------------------------------------------------------------------------------------- applying
    def apply(self, event: Event, occurred_at: str, touched: Touched) -> None:
        """Fold one accepted event in (a no-op for an event that is not the ERP's); ``occurred_at`` is capped."""
        key = _business_key(event)
        if key is not None:
            self.fingerprints[key] = _fingerprint(event)
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event, occurred_at, touched)

    def cap(self, event: Event, recorded_at: str) -> None:
        """Cap at ``recorded_at`` the stored instant this event is compared with (a no-op on a state folded capped)."""
        if isinstance(event, erp.CustomerUpserted | erp.InvoiceIssued) and self.profile_at:
            self.profile_at = earlier(self.profile_at, recorded_at)
        if isinstance(event, erp.InvoiceDisputed | erp.InvoiceDisputeResolved):
            latest = self.dispute_latest.get(event.invoice_id)
            if latest:
                latest[0] = earlier(latest[0], recorded_at)

    # ----------------------------------------------------------------------------------------------- reading
    def balances(self) -> dict[str, Decimal]:
        """Per currency: open invoices' outstanding less credit not yet applied (negative = in credit)."""
        result: dict[str, Decimal] = {}
        for invoice in self.invoices.values():
            if invoice.is_open:
                result[invoice.currency] = result.get(invoice.currency, ZERO) + invoice.outstanding
        for credit in self.credits.values():
            waiting = credit.free + sum(credit.earmarks.values(), ZERO)
            if waiting or credit.currency not in result:
                result[credit.currency] = result.get(credit.currency, ZERO) - waiting
        return result

    def unallocated(self) -> dict[str, Decimal]:
        result: dict[str, Decimal] = {}
        for credit in self.credits.values():
            waiting = credit.free + sum(credit.earmarks.values(), ZERO)
            if waiting:
                result[credit.currency] = result.get(credit.currency, ZERO) + waiting
        return result

    def open_invoices(self) -> list[Invoice]:
        """The open invoices, oldest first (due date, issue date, id): the order money is allocated in."""
        lists = [ages for ages in self._open.values() if ages]
        ages = lists[0] if len(lists) == 1 else heapq.merge(*lists)
        return [self.invoices[age[2]] for age in ages]

    def overdue(self, as_of: date) -> dict[str, Decimal]:
        result: dict[str, Decimal] = {}
        for invoice in self.open_invoices():
            if invoice.due_date < as_of:
                result[invoice.currency] = result.get(invoice.currency, ZERO) + invoice.outstanding
        return result

    # ----------------------------------------------------------------------------------------------- allocation
    def _allocate(self, credit: Credit, invoice: Invoice, wanted: Decimal, touched: Touched) -> None:
        """Apply up to ``wanted`` of the credit to the invoice; what the invoice cannot take stays free."""
        touched.credits.add(credit.key)
        applied = min(wanted, invoice.outstanding)
        if applied > 0:
            invoice.outstanding -= applied
            invoice.allocations[credit.key] = invoice.allocations.get(credit.key, ZERO) + applied
            credit.applied[invoice.invoice_id] = credit.applied.get(invoice.invoice_id, ZERO) + applied
            if invoice.outstanding == 0:
                invoice.status = "paid"
                self._closed(invoice)
        self.give_back(credit, wanted - applied)

    def give_back(self, credit: Credit, amount: Decimal) -> None:
        """Make ``amount`` of the credit free again (every increase of free money goes through here)."""
        credit.free += amount
        self._may_hold_free(credit)

    def _may_hold_free(self, credit: Credit) -> None:
        if credit.free > 0:
            self._may_be_free.setdefault(credit.currency, set()).add(credit.key)

    def _opened(self, invoice: Invoice) -> None:
        bisect.insort(self._open.setdefault(invoice.currency, []), _age(invoice))
        if invoice.invoice_id not in self.disputes:
            bisect.insort(self._undisputed.setdefault(invoice.currency, []), _age(invoice))

    def _closed(self, invoice: Invoice) -> None:
        """The invoice is no longer open (paid, cancelled, or replaced): out of the open indexes."""
        _take_out(self._open, invoice)
        _take_out(self._undisputed, invoice)

    def _disputed(self, invoice_id: str, reason: str) -> None:
        self.disputes[invoice_id] = reason
        invoice = self.invoices.get(invoice_id)
        if invoice is not None:
            _take_out(self._undisputed, invoice)

    def _undisputed_again(self, invoice_id: str) -> None:
        if self.disputes.pop(invoice_id, None) is None:
            return
        invoice = self.invoices.get(invoice_id)
        if invoice is not None and invoice.is_open:
            bisect.insort(self._undisputed.setdefault(invoice.currency, []), _age(invoice))

    def _free_credits(self, currency: str) -> list[Credit]:
        """The credits of the currency holding free money, oldest first."""
        keys = self._may_be_free.get(currency)
        if not keys:
            return []
        found = []
        for key in list(keys):
            credit = self.credits.get(key)
            if credit is not None and credit.currency == currency and credit.free > 0:
                found.append(credit)
            else:
                keys.discard(key)
        return sorted(found, key=_credit_age)

    def settle(self, currency: str, touched: Touched) -> None:
        """Apply free credit, oldest first, to the oldest open undisputed invoices of the currency, and to the claims
        owed besides principal: before principal under ``claims_first``, after it otherwise."""
        self._settle(currency, touched)

    def _settle(self, currency: str, touched: Touched) -> None:
        credits = self._free_credits(currency)
        if not credits:
            return
        if self.claims is not None:
            # What a payment leaves over after the invoices it names goes to their claims first, whatever the rule:
            # the customer paid what a notice demanded for them. Under claims_first, then to every other claim.
            self.claims.absorb(self, credits, currency, touched, own=True)
            if self.claims.claims_first:
                self.claims.absorb(self, credits, currency, touched)
        # The open undisputed invoices of the currency, oldest first; paying one takes it out at this position.
        ages = self._undisputed.get(currency, [])
        position = first = 0  # first: the oldest credit with free money left (free money only decreases here)
        while position < len(ages):
            while first < len(credits) and credits[first].free <= 0:
                first += 1
            if first == len(credits):
                break
            invoice = self.invoices[ages[position][2]]
            if invoice.outstanding <= 0:
                position += 1
                continue
            for credit in credits[first:]:
                if credit.free <= 0:
                    continue
                take = min(credit.free, invoice.outstanding)
                credit.free -= take
                self._allocate(credit, invoice, take, touched)
                touched.invoices.add(invoice.invoice_id)
                if not invoice.is_open:
                    break
            if invoice.is_open:
                position += 1
        if self.claims is not None:
            self.claims.absorb(self, credits, currency, touched)


# --------------------------------------------------------------------------------------------------- instants
def earlier(first: str, second: str) -> str:
    """The earlier of two ISO 8601 instants (compared as instants, not as text)."""
    if not first:
        return second
    return first if not later(first, second) else second


def later(first: str, second: str) -> bool:
    """Whether the instant ``first`` is after ``second`` (whatever spelling of UTC either was written with)."""
    return datetime.fromisoformat(first) > datetime.fromisoformat(second)


# --------------------------------------------------------------------------------------------------- handlers
def _on_customer(r: Receivables, event: erp.CustomerUpserted, occurred_at: str, touched: Touched) -> None:
    # The most recent statement of the customer wins, whatever order the messages arrived in.
    if r.profile_at is None or not later(r.profile_at, occurred_at):
        r.profile = data_of(event)
        r.profile_at = occurred_at


def _on_invoice(r: Receivables, event: erp.InvoiceIssued, occurred_at: str, touched: Touched) -> None:
    if event.customer is not None and r.profile is None:
        r.profile = data_of(event.customer)
        r.profile_at = occurred_at
    invoice = Invoice(
        invoice_id=event.invoice_id,
        number=event.number,
        issue_date=event.issue_date,
        due_date=event.due_date,
        currency=event.currency,
        amount=event.amount,
        outstanding=event.amount,
    )
    replaced = r.invoices.get(invoice.invoice_id)
    if replaced is not None:
        r._closed(replaced)
    r.invoices[invoice.invoice_id] = invoice
    touched.invoices.add(invoice.invoice_id)
    if invoice.invoice_id in r.cancelled:
        invoice.status = "cancelled"
        invoice.outstanding = ZERO
    else:
        r._opened(invoice)
    keys = r._earmarked.pop(invoice.invoice_id, [])
    waiting = {key: r.credits[key] for key in keys if invoice.invoice_id in r.credits[key].earmarks}
    for credit in sorted(waiting.values(), key=_credit_age):
        earmarked = credit.earmarks.pop(invoice.invoice_id)
        touched.credits.add(credit.key)
        if invoice.is_open and credit.currency == invoice.currency:
            r._allocate(credit, invoice, earmarked, touched)
        else:
            r.give_back(credit, earmarked)
    r._settle(invoice.currency, touched)


def _on_payment(r: Receivables, event: erp.PaymentReceived, occurred_at: str, touched: Touched) -> None:
    targets = [(a.invoice_id, a.amount) for a in event.allocations]
    _credit(r, f"payment:{event.payment_id}", event.currency, event.amount, event.received_on, targets, touched)


def _on_credit_note(r: Receivables, event: erp.CreditNoteIssued, occurred_at: str, touched: Touched) -> None:
    targets = [(event.invoice_id, event.amount)] if event.invoice_id else []
    _credit(r, f"credit_note:{event.credit_note_id}", event.currency, event.amount, event.issued_on, targets, touched)


def _credit(
    r: Receivables,
    key: str,
    currency: str,
    amount: Decimal,
    on: date,
    targets: list[tuple[str, Decimal]],
    touched: Touched,
) -> None:
    """Money on the customer's side: to the invoices it names (earmarked while unknown), the rest to the oldest."""
    credit = Credit(key=key, currency=currency, amount=amount, on=on, free=amount)
    r.credits[credit.key] = credit
    r._may_hold_free(credit)
    touched.credits.add(credit.key)
    for invoice_id, wanted in targets:
        credit.free -= wanted
        invoice = r.invoices.get(invoice_id)
        if invoice is None and invoice_id not in r.cancelled:
            if invoice_id not in credit.earmarks:
                r._earmarked.setdefault(invoice_id, []).append(credit.key)
            credit.earmarks[invoice_id] = credit.earmarks.get(invoice_id, ZERO) + wanted
        elif invoice is not None and invoice.is_open and invoice.currency == credit.currency:
            r._allocate(credit, invoice, wanted, touched)
            touched.invoices.add(invoice_id)
        else:
            r.give_back(credit, wanted)
    r._settle(credit.currency, touched)


def _on_cancelled(r: Receivables, event: erp.InvoiceCancelled, occurred_at: str, touched: Touched) -> None:
    invoice_id = event.invoice_id
    r.cancelled[invoice_id] = event.reason or ""
    invoice = r.invoices.get(invoice_id)
    if invoice is None:
        return
    for credit_key, amount in invoice.allocations.items():
        credit = r.credits[credit_key]
        touched.credits.add(credit_key)
        credit.applied.pop(invoice_id, None)
        r.give_back(credit, amount)
    invoice.allocations = {}
    invoice.outstanding = ZERO
    if invoice.is_open:
        r._closed(invoice)
    invoice.status = "cancelled"
    touched.invoices.add(invoice_id)
    r._settle(invoice.currency, touched)


def _latest_dispute_event(r: Receivables, invoice_id: str, occurred_at: str, kind: str) -> bool:
    """Record a dispute event; True if it is the latest of its invoice, the one that decides."""
    latest = r.dispute_latest.get(invoice_id)
    if latest is not None and later(latest[0], occurred_at):
        return False
    r.dispute_latest[invoice_id] = [occurred_at, kind]
    return True


def _on_disputed(r: Receivables, event: erp.InvoiceDisputed, occurred_at: str, touched: Touched) -> None:
    if _latest_dispute_event(r, event.invoice_id, occurred_at, "disputed"):
        r._disputed(event.invoice_id, event.reason)
        touched.invoices.add(event.invoice_id)


def _on_dispute_resolved(r: Receivables, event: erp.InvoiceDisputeResolved, occurred_at: str, touched: Touched) -> None:
    if not _latest_dispute_event(r, event.invoice_id, occurred_at, "resolved"):
        return
    r._undisputed_again(event.invoice_id)
    touched.invoices.add(event.invoice_id)
    invoice = r.invoices.get(event.invoice_id)
    if invoice is not None:
        r._settle(invoice.currency, touched)


def _on_due_date_passed(r: Receivables, event: erp.InvoiceDueDatePassed, occurred_at: str, touched: Touched) -> None:
    r.due_date_passed[event.invoice_id] = event.due_date.isoformat()


def _on_promise(r: Receivables, event: erp.PromiseToPayRecorded, occurred_at: str, touched: Touched) -> None:
    r.promises[event.promise_id] = data_of(event)
    r.promise_recorded[event.promise_id] = occurred_at


def _on_plan(r: Receivables, event: erp.PaymentPlanAgreed, occurred_at: str, touched: Touched) -> None:
    r.plans[event.plan_id] = data_of(event)


_Handler = Callable[[Receivables, Any, str, Touched], None]
_HANDLERS: dict[type, _Handler] = {
    erp.CustomerUpserted: _on_customer,
    erp.InvoiceIssued: _on_invoice,
    erp.PaymentReceived: _on_payment,
    erp.CreditNoteIssued: _on_credit_note,
    erp.InvoiceCancelled: _on_cancelled,
    erp.InvoiceDisputed: _on_disputed,
    erp.InvoiceDisputeResolved: _on_dispute_resolved,
    erp.InvoiceDueDatePassed: _on_due_date_passed,
    erp.PromiseToPayRecorded: _on_promise,
    erp.PaymentPlanAgreed: _on_plan,
}


def _take_out(index: dict[str, list[Age]], invoice: Invoice) -> None:
    ages, age = index.get(invoice.currency, []), _age(invoice)
    at = bisect.bisect_left(ages, age)
    if at < len(ages) and ages[at] == age:
        del ages[at]


def _age(invoice: Invoice) -> Age:
    return (invoice.due_date, invoice.issue_date, invoice.invoice_id)


def _credit_age(credit: Credit) -> tuple[date, str]:
    return (credit.on, credit.key)


# --------------------------------------------------------------------------------------------------- identity
_ID_FIELDS: dict[type, tuple[str, str]] = {
    erp.InvoiceIssued: ("invoice", "invoice_id"),
    erp.PaymentReceived: ("payment", "payment_id"),
    erp.CreditNoteIssued: ("credit_note", "credit_note_id"),
    erp.PromiseToPayRecorded: ("promise", "promise_id"),
    erp.PaymentPlanAgreed: ("plan", "plan_id"),
}


def _business_key(event: Event) -> str | None:
    spec = _ID_FIELDS.get(type(event))
    return None if spec is None else f"{spec[0]} {getattr(event, spec[1])}"


def _fingerprint(event: Event) -> str:
    content = {k: v for k, v in data_of(event).items() if k != "customer"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
