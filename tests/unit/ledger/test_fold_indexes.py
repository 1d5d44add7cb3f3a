"""The fold's indexes change nothing it computes: the same figures, to the cent, as sorting and scanning everything.

The reference below is the fold as it was before it kept indexes: every payment sorted the open invoices and scanned
every credit, every invoice scanned every credit for its earmarks, every settlement scanned every claim. It lives
here only, as the oracle: random streams of invoices, payments, credit notes, allocations, disputes, cancellations,
claims (interest, fixed interest, fees, waivers, claiming levels, under either allocation rule), in any order, must
fold into byte-identical snapshots (same open items, same allocations in the same order) and the same figures.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contracts import erp
from shared.contracts.events import Event, data_of
from shared.ledger.claims import KINDS, Claim, Claims
from shared.ledger.receivables import (
    Invoice,
    Receivables,
    Touched,
    _age,
    _business_key,
    _credit_age,
    _fingerprint,
)
from shared.ledger.state import CustomerState
from tests.factories import CUSTOMER, TENANT, Ev, Feed, assert_consistent, fold, invoice, payment
from tests.unit.ledger.test_claims import claiming, fee, interest, with_claims

PROPERTY = settings(max_examples=400, deadline=None)


# ---------------------------------------------------------------------------------------------------- the reference
class SortingReceivables(Receivables):
    """The receivables fold as it was: sort and scan on every settlement."""

    def apply(self, event: Event, occurred_at: str, touched: Touched) -> None:
        if not isinstance(event, erp.InvoiceIssued):
            super().apply(event, occurred_at, touched)
            return
        key = _business_key(event)
        assert key is not None
        self.fingerprints[key] = _fingerprint(event)
        _scanning_on_invoice(self, event, occurred_at, touched)

    def open_invoices(self) -> list[Invoice]:
        return sorted((i for i in self.invoices.values() if i.is_open), key=_age)

    def _settle(self, currency: str, touched: Touched) -> None:
        credits = sorted((c for c in self.credits.values() if c.currency == currency and c.free > 0), key=_credit_age)
        if not credits:
            return
        if self.claims is not None:
            self.claims.absorb(self, credits, currency, touched, own=True)
            if self.claims.claims_first:
                self.claims.absorb(self, credits, currency, touched)
        invoices = [
            i
            for i in self.open_invoices()
            if i.currency == currency and i.invoice_id not in self.disputes and i.outstanding > 0
        ]
        for invoice_ in invoices:
            for credit in credits:
                if credit.free <= 0:
                    continue
                take = min(credit.free, invoice_.outstanding)
                credit.free -= take
                self._allocate(credit, invoice_, take, touched)
                touched.invoices.add(invoice_.invoice_id)
                if not invoice_.is_open:
                    break
        if self.claims is not None:
            self.claims.absorb(self, credits, currency, touched)


def _scanning_on_invoice(r: Receivables, event: erp.InvoiceIssued, occurred_at: str, touched: Touched) -> None:
    if event.customer is not None and r.profile is None:
        r.profile = data_of(event.customer)
        r.profile_at = occurred_at
    new = Invoice(
        invoice_id=event.invoice_id,
        number=event.number,
        issue_date=event.issue_date,
        due_date=event.due_date,
        currency=event.currency,
        amount=event.amount,
        outstanding=event.amount,
    )
    r.invoices[new.invoice_id] = new
    touched.invoices.add(new.invoice_id)
    if new.invoice_id in r.cancelled:
        new.status = "cancelled"
        new.outstanding = Decimal(0)
    waiting = (c for c in r.credits.values() if new.invoice_id in c.earmarks)
    for credit in sorted(waiting, key=_credit_age):
        earmarked = credit.earmarks.pop(new.invoice_id)
        touched.credits.add(credit.key)
        if new.is_open and credit.currency == new.currency:
            r._allocate(credit, new, earmarked, touched)
        else:
            credit.free += earmarked
    r._settle(new.currency, touched)


class ScanningClaims(Claims):
    """The claims fold as it was: every claim scanned on every settlement."""

    def _payable(self, receivables: Receivables, currency: str) -> list[Claim]:
        found: list[tuple[tuple[date, date, str], int, Claim]] = []
        for invoice_id, by_kind in self.claims.items():
            invoice_ = receivables.invoices.get(invoice_id)
            if invoice_ is None or invoice_.status == "cancelled" or invoice_id in receivables.disputes:
                continue
            for rank, kind in enumerate(KINDS):
                claim = by_kind.get(kind)
                if claim is not None and claim.currency == currency and claim.claimed and claim.owed > 0:
                    found.append(((invoice_.due_date, invoice_.issue_date, invoice_id), rank, claim))
        return [claim for _, _, claim in sorted(found, key=lambda item: (item[0], item[1]))]


def reference_fold(history: list[Ev]) -> CustomerState:
    receivables, claims = SortingReceivables(), ScanningClaims()
    feed = Feed(CustomerState(tenant=TENANT, customer_id=CUSTOMER, receivables=receivables, claims=claims))
    feed.deliver(history)
    return feed.state


# ---------------------------------------------------------------------------------------------------- comparing
def figures(state: CustomerState) -> dict[str, Any]:
    """Everything a reader takes from a fold, in the fold's own order (a snapshot's bytes keep dict order)."""
    return {
        "snapshot": orjson.dumps(state.to_json()).decode(),
        "open": [i.invoice_id for i in state.open_invoices()],
        "balances": state.balances(),
        "unallocated": state.unallocated(),
        "claims_owed": state.claims_owed(),
        "claims": [(c.invoice_id, c.kind, c.charged, c.allocated, c.waived, c.owed) for c in state.claims.all()],
        "overdue": state.overdue(date(2026, 4, 1)),
    }


@st.composite
def streams(draw: st.DrawFn) -> list[Ev]:
    """A history with claims, its claim events under a random allocation rule, delivered in any order, some twice."""
    history = draw(with_claims())
    ruled = []
    for ev in history:
        if ev.event_type in ("interest.computed", "claim.fixed", "fee.charged"):
            rule = draw(st.sampled_from([None, "principal_first", "claims_first"]))
            if rule is not None:
                ev = Ev(ev.event_type, {**ev.data, "allocation": rule}, ev.event_id, ev.occurred_at, ev.metadata)
        ruled.append(ev)
    again = draw(st.lists(st.sampled_from(ruled), max_size=4)) if ruled else []
    return list(draw(st.permutations([*ruled, *again])))


@PROPERTY
@given(streams())
def test_the_indexed_fold_gives_the_figures_of_the_sorting_fold_to_the_cent(history: list[Ev]) -> None:
    # Given any stream of a customer's receivables and claims, in any order
    # When it is folded with the indexes and with the old sorting and scanning
    indexed, reference = fold(history), reference_fold(history)
    # Then everything read from the two is the same: snapshot bytes, open items and their order, every figure
    assert figures(indexed) == figures(reference)
    assert_consistent(indexed)


@PROPERTY
@given(streams(), st.data())
def test_a_state_loaded_from_its_snapshot_midway_folds_on_to_the_same_figures(
    history: list[Ev], data: st.DataObject
) -> None:
    # Given a stream folded up to some event, saved as a snapshot (the indexes are not in it) and loaded again
    cut = data.draw(st.integers(min_value=0, max_value=len(history)), label="cut")
    first = Feed(CustomerState(tenant=TENANT, customer_id=CUSTOMER))
    first.deliver(history[:cut])
    loaded = CustomerState.from_json(json.loads(json.dumps(first.state.to_json())))
    # When the rest of the stream is folded into the loaded state
    rest = Feed(loaded, seen=set(first.seen))
    rest.deliver(history[cut:])
    # Then it is the state a fold of the whole stream gives, figure for figure
    assert figures(rest.state) == figures(fold(history))


def test_a_long_history_of_paid_invoices_leaves_only_the_open_ones_in_the_allocation_order() -> None:
    # Given 300 invoices, most paid by payments naming them, a few by unallocated money, oldest first
    history: list[Ev] = []
    for n in range(300):
        day = date(2026, 1, 1).toordinal() + n // 3
        issued = date.fromordinal(day).isoformat()
        due = date.fromordinal(day + 30 - n % 7).isoformat()
        history.append(invoice(f"INV-{n:03d}", "100.00", issue_date=issued, due_date=due))
        if n % 10:
            history.append(payment(f"P-{n}", "100.00", received_on=issued, allocations={f"INV-{n:03d}": "100.00"}))
    history.append(payment("P-free", "250.00", received_on="2026-05-01"))
    indexed, reference = fold(history), reference_fold(history)
    # Then the two folds agree, and what is open is what was neither named by a payment nor reached by the free money
    assert figures(indexed) == figures(reference)
    assert len(indexed.open_invoices()) == 30 - 2


@PROPERTY
@given(streams(), st.data())
def test_a_copy_of_a_state_is_equal_and_folds_on_apart_from_it(history: list[Ev], data: st.DataObject) -> None:
    # Given a state folded up to some event, and a copy of it (what the engine folds its own decisions into)
    cut = data.draw(st.integers(min_value=0, max_value=len(history)), label="cut")
    original = Feed(CustomerState(tenant=TENANT, customer_id=CUSTOMER))
    original.deliver(history[:cut])
    before = figures(original.state)
    copied = copy.deepcopy(original.state)
    # Then the copy is the same state, indexes included
    assert copied == original.state and figures(copied) == before
    assert copied.receivables.claims is copied.claims
    # And folding the rest into the copy gives the fold of the whole stream, and leaves the original as it was
    rest = Feed(copied, seen=set(original.seen))
    rest.deliver(history[cut:])
    assert figures(rest.state) == figures(fold(history))
    assert figures(original.state) == before


def test_a_snapshot_written_before_claims_existed_loads_with_its_claims_payable() -> None:
    # Given a snapshot written before relance kept claims: its claims come from its escalations, indexed as they load
    history = [
        invoice("INV-1", "1000.00", issue_date="2026-02-01", due_date="2026-03-02"),
        fee("INV-1"),
        interest("INV-1", "6.66"),
        claiming("INV-1"),
    ]
    raw = json.loads(json.dumps(fold(history).to_json()))
    old = {k: v for k, v in raw.items() if k not in ("claims", "claims_allocation")}
    loaded = Feed(CustomerState.from_json(old), seen={ev.event_id for ev in history})
    # When a payment names the invoice and pays its claims too
    paid = payment("P1", "1046.66", received_on="2026-03-25", allocations={"INV-1": "1000.00"})
    loaded.deliver([paid])
    # Then the surplus settles the claims, as in a fold of the whole stream (the derived claims in their own order)
    whole = fold([*history, paid])
    assert {k: v for k, v in figures(loaded.state).items() if k != "snapshot"} == {
        k: v for k, v in figures(whole).items() if k != "snapshot"
    }
    assert loaded.state.to_json() == whole.to_json() and loaded.state.claims_owed() == {}
