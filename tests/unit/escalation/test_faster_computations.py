"""The engine's faster computations against the ones they replaced, kept here as references.

* A ladder (:func:`services.escalation.calendar.ladder`, remembered per anchor and policy) is the :func:`step_date`
  of every level, computed afresh.
* Late interest in integers (:func:`services.escalation.interest.late_interest`) is the same result, period for
  period and rounded, as the sum of one :class:`~fractions.Fraction` per span it replaced.
* A state's copy shares only immutable values: folding into the copy leaves the original as it was.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from services.escalation.calendar import french_holidays, ladder, step_date
from services.escalation.interest import (
    DAYS_IN_YEAR,
    InterestPeriod,
    InterestResult,
    RateTable,
    late_interest,
)
from services.escalation.model import InterestRule, Level, Policy
from services.escalation.worker import policy_books, real_rules
from shared.config import load_settings
from shared.contracts.erp import minor_units
from shared.contracts.events import parse
from shared.ledger.state import CustomerState
from shared.ledger.store import Incoming
from tests.benchmarks.ledgers import FIRST_DAY, receivables

PROPERTY = settings(max_examples=300, deadline=None)
HOLIDAYS = french_holidays(2025) | french_holidays(2026) | french_holidays(2027)
DAYS = st.dates(min_value=date(2025, 1, 1), max_value=date(2027, 6, 30))
MONEY = st.decimals(min_value=Decimal("-500"), max_value=Decimal("100000"), places=2)


# --------------------------------------------------------------------------------------------------- the ladder
@st.composite
def policies(draw: st.DrawFn) -> Policy:
    offsets = sorted(draw(st.sets(st.integers(min_value=-30, max_value=120), min_size=1, max_size=6)))
    levels = tuple(Level(f"l{k}", offset, "email", f"t{k}") for k, offset in enumerate(offsets))
    return Policy(
        name="p",
        version="v",
        levels=levels,
        grace_days=draw(st.integers(min_value=0, max_value=10)),
        business_days=draw(st.booleans()),
        holidays=draw(st.sampled_from([frozenset(), HOLIDAYS])),
    )


@PROPERTY
@given(policies(), DAYS)
def test_a_ladder_is_the_step_date_of_every_level(policy: Policy, anchor: date) -> None:
    assert list(ladder(anchor, policy)) == [step_date(anchor, level, policy) for level in policy.levels]
    assert ladder(anchor, policy) == ladder(anchor, replace(policy))  # remembered or not, the same days


def test_a_ladder_off_the_calendar_raises_as_step_date_does() -> None:
    policy = Policy(name="p", version="v", levels=(Level("l", 30, "email", "t"),))
    for _ in range(2):  # computed, then asked again: never remembered as a result
        try:
            ladder(date.max - timedelta(days=3), policy)
        except OverflowError:
            continue
        raise AssertionError("a step after 9999-12-31 must raise OverflowError")


# --------------------------------------------------------------------------------------------------- interest
def fraction_late_interest(
    timeline: list[tuple[date, Decimal]], due_date: date, through: date, rule: InterestRule, rates: RateTable
) -> InterestResult:
    """The reference: the spans of :func:`late_interest` (its own periods' days, bases and rates), each accrued as
    a Fraction, summed, and rounded through Fractions, as late interest was computed before."""
    spans = late_interest(timeline, due_date, through, rule, rates, "EUR").periods
    periods: list[InterestPeriod] = []
    exact = Fraction(0)
    for p in spans:
        accrued = Fraction(p.base) * Fraction(p.annual_rate) * p.days / (100 * DAYS_IN_YEAR)
        exact += accrued
        periods.append(replace(p, raw_amount=_fraction_quantize(accrued, Decimal("1e-10"))))
    unit = Decimal(1).scaleb(-minor_units("EUR"))
    return InterestResult("EUR", _fraction_quantize(exact, unit), tuple(periods), exact)


def _fraction_quantize(value: Fraction, unit: Decimal) -> Decimal:
    steps = value / Fraction(unit)
    sign = -1 if steps < 0 else 1
    whole, remainder = divmod(abs(steps.numerator), steps.denominator)
    if 2 * remainder >= steps.denominator:
        whole += 1
    return (Decimal(sign * whole) * unit).quantize(unit)


RULES = st.sampled_from(
    [
        InterestRule(),
        InterestRule(margin=Decimal("7.5")),
        InterestRule(basis="contractual", rate=Decimal("12.375")),
        InterestRule(basis="contractual", rate=Decimal("-1.5")),
    ]
)


@PROPERTY
@given(
    st.lists(st.tuples(st.integers(min_value=0, max_value=400), MONEY), max_size=6),
    MONEY,
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=700),
    RULES,
)
def test_interest_in_integers_is_the_fraction_sum(
    moves: list[tuple[int, Decimal]], amount: Decimal, days_to_due: int, days_late: int, rule: InterestRule
) -> None:
    issued = date(2023, 1, 2)
    due = issued + timedelta(days=days_to_due)
    timeline = [(issued, amount)] + [(issued + timedelta(days=d), a) for d, a in moves]
    rates = RateTable.default()
    through = due + timedelta(days=days_late)
    result = late_interest(timeline, due, through, rule, rates, "EUR")
    assert result == fraction_late_interest(timeline, due, through, rule, rates)
    assert [str(p.raw_amount) for p in result.periods] == [
        str(p.raw_amount) for p in fraction_late_interest(timeline, due, through, rule, rates).periods
    ]


# --------------------------------------------------------------------------------------------------- state copy
def test_a_copy_of_a_state_shares_nothing_that_folding_changes() -> None:
    state = CustomerState(tenant="t", customer_id="c")
    issued = {"invoice_id": "I-1", "number": "F-1", "issue_date": "2026-01-01", "due_date": "2026-01-31"}
    state.apply(parse("invoice.issued", issued | {"currency": "EUR", "amount": "100.00"}), recorded_at=None)
    before = copy.deepcopy(state)
    copied = copy.deepcopy(state)
    paid = {"payment_id": "P-1", "amount": "60.00", "currency": "EUR", "received_on": "2026-02-10"}
    copied.apply(
        parse("payment.received", paid | {"allocations": [{"invoice_id": "I-1", "amount": "60.00"}]}), recorded_at=None
    )
    assert state == before and copied != state
    assert state.invoices["I-1"].outstanding == Decimal("100.00")


def test_folding_decisions_into_a_decisions_copy_is_folding_them_into_a_deep_copy() -> None:
    settings = load_settings(database_url="postgresql://localhost/unused")
    books, rules = policy_books(settings), real_rules(settings)
    by_customer: dict[str, list[Incoming]] = {}
    for fact in receivables(12, 90, seed=3):
        by_customer.setdefault(fact.item.customer_id, []).append(fact.item)
    folded = 0
    for items in by_customer.values():
        state = CustomerState(tenant="t", customer_id=items[0].customer_id)
        for item in items:
            state.apply(parse(item.event_type, item.data), item.occurred_at, item.event_id, recorded_at=None)
        for days in (40, 80, 130, 170):
            as_of = datetime.combine(FIRST_DAY + timedelta(days=days), datetime.min.time(), tzinfo=UTC)
            decided = rules.decide(state, books("t").for_customer(state.profile), as_of, rules.rates)
            before, deep, sharing = copy.deepcopy(state), copy.deepcopy(state), state.decisions_copy()
            for decision in decided:
                for into in (deep, sharing):
                    into.apply(decision.event, None, decision.event_id, recorded_at=None)
            assert sharing == deep  # the same fold as into a copy sharing nothing ...
            assert state == before  # ... and the state it was copied from left as it was
            for decision in decided:
                state.apply(decision.event, None, decision.event_id, recorded_at=None)
            folded += len(decided)
    assert folded > 100
