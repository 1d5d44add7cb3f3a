"""Evaluating customers in batches: the same decisions, ids and versions as one customer at a time, a stream that moved
decided again alone, one customer's failure kept to that customer.

Real databases, both engines where the behaviour is the same. The reference for "the same decisions" is
:func:`one_at_a_time`, the evaluation of a single customer written out plainly (state, decide, known ids, append
with expected versions, next timer from the state after), run on a second database fed the same events.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from services.escalation.model import Decision, Policy
from services.escalation.policy import PolicyLibrary
from services.escalation.service import Failure, PolicyBooks, Rules, Trigger, evaluate_many, tick_event_id
from services.escalation.timers import Timers
from services.escalation.worker import real_rules, tick
from shared.config import load_settings
from shared.contracts.events import ClockTicked, instant_text
from shared.ledger.db import make_engine
from shared.ledger.migrate import upgrade
from shared.ledger.state import CustomerState
from shared.ledger.store import Incoming, Ledger
from tests.factories import TENANT, Ev, customer, dispute, incoming, invoice, payment, promise
from tests.integration.escalation.test_worker import FAKE, FIRES_AT, books, fake_decide, fake_next_due, issue

pytestmark = pytest.mark.integration

SHIPPED = PolicyLibrary.load(None).for_tenant
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday; the shipped rate table covers the first half of 2026


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def two_engines(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[Engine, Engine]]:
    """Two fresh databases of the same kind: one for the batch path, one for the reference."""
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path / f'{name}.db'}" for name in ("batch", "reference")]
        for url in urls:
            upgrade(url)
    else:
        make: Callable[[], str] = request.getfixturevalue("make_pg_database")
        urls = [make(), make()]
    engines = tuple(make_engine(url) for url in urls)
    yield engines[0], engines[1]
    for engine in engines:
        engine.dispose()


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = make_engine(ledger_url)
    yield engine
    engine.dispose()


# ---------------------------------------------------------------------------------------------------- the reference
def one_at_a_time(
    ledger: Ledger, policies: PolicyBooks, rules: Rules, key: tuple[str, str], as_of: datetime, trigger: Trigger
) -> None:
    """One customer's evaluation as relance made it before batches: the reference the batch path must match."""
    tenant, customer_id = key
    state = ledger.state(tenant, customer_id)
    policy = policies(tenant).for_customer(state.profile)
    decisions = rules.decide(state, policy, as_of, rules.rates)
    tick_id = tick_event_id(tenant, customer_id, as_of, state.version)
    asked = decisions or trigger == "timer"
    known = ledger.known_event_ids(tenant, [tick_id, *(d.event_id for d in decisions)]) if asked else set()
    fresh = [d for d in decisions if d.event_id not in known]
    metadata = {
        "as_of": instant_text(as_of),
        "trigger": trigger,
        "policy": policy.name,
        "policy_version": policy.version,
    }
    planned: list[tuple[str, Any, dict[str, Any]]] = []
    if (fresh or trigger == "timer") and tick_id not in known:
        planned.append((tick_id, ClockTicked(as_of=as_of, trigger=trigger), metadata))
    planned += [(d.event_id, d.event, {**metadata, "clock": tick_id}) for d in fresh]
    items = [
        Incoming.of(e, stream=key, event_id=i, occurred_at=as_of, metadata=m, expected_version=state.version + n)
        for n, (i, e, m) in enumerate(planned)
    ]
    assert all(outcome.status == "applied" for outcome in ledger.record(items))
    after = ledger.state(tenant, customer_id)
    due = rules.next_due(after, policy, as_of, rules.rates)
    Timers(ledger.engine).set(tenant, customer_id, due, after.version, datetime.now(UTC))


def generated_customers(count: int, seed: int) -> list[Incoming]:
    """Customers with invoices at every distance from their due date, some paid (in part), disputed or promised."""
    rng = random.Random(seed)
    items: list[Incoming] = []
    for n in range(count):
        who = f"C-{n:03d}"
        evs: list[Ev] = [customer(f"Client {n}", emails=[f"c{n}@example.fr"]).with_id(f"cust-{n}")]
        for k in range(rng.randrange(1, 5)):
            due = START.date() + timedelta(days=rng.randrange(-70, 12))
            invoice_id = f"I-{n}-{k}"
            amount = f"{rng.randrange(30, 4000)}.00"
            evs.append(invoice(invoice_id, amount, issue_date=due - timedelta(days=30), due_date=due))
            luck = rng.random()
            if luck < 0.15:
                paid_on = min(due + timedelta(days=rng.randrange(0, 20)), START.date())
                evs.append(payment(f"P-{invoice_id}", amount, received_on=paid_on, allocations={invoice_id: amount}))
            elif luck < 0.25:
                evs.append(payment(f"P-{invoice_id}", "20.00", received_on=due, allocations={invoice_id: "20.00"}))
            elif luck < 0.33:
                evs.append(dispute(invoice_id))
            elif luck < 0.38:
                promised = (START.date() + timedelta(days=rng.randrange(1, 9))).isoformat()
                evs.append(promise(f"PR-{invoice_id}", promised, amount, [invoice_id]))
        items += [
            incoming(ev.with_id(f"{who}-{ev.event_id}").at(START - timedelta(days=1)), customer_id=who) for ev in evs
        ]
    return items


def recorded(ledger: Ledger, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    """Each stream's events as decided (not when they were written: no recorded_at, hence no hash)."""
    return {
        key: [
            (e.version, e.event_id, e.event_type, e.data, e.metadata, e.occurred_at) for e in ledger.read_stream(*key)
        ]
        for key in keys
    }


# ---------------------------------------------------------------------------------------------------- sameness
def test_batches_decide_what_one_customer_at_a_time_decided(two_engines: tuple[Engine, Engine]) -> None:
    batch_engine, reference_engine = two_engines
    batched, reference = Ledger(batch_engine), Ledger(reference_engine)
    rules = real_rules(load_settings())
    # Given the same generated customers in two ledgers
    history = generated_customers(36, seed=5)
    for ledger in (batched, reference):
        assert {o.status for o in ledger.record(history)} == {"applied"}
    keys = batched.streams(TENANT)
    # When the clock is ticked at the same instants, in batches of 7 on one and one customer at a time on the other
    # (the same instant twice, a later hour, the next days; and the timers due one morning, fired)
    instants = [START, START, START + timedelta(hours=3), START + timedelta(days=1), START + timedelta(days=9)]
    for at in instants:
        summary = tick(batched, SHIPPED, rules, at, batch_size=7)
        assert summary.failures == 0
        for key in keys:
            one_at_a_time(reference, SHIPPED, rules, key, at, "manual")
    morning = START + timedelta(days=16)
    due = [(t.tenant, t.customer_id) for t in Timers(reference_engine).all() if t.due_at <= morning]
    assert due and tick(batched, SHIPPED, rules, morning, due_only=True, batch_size=7).failures == 0
    for key in due:
        one_at_a_time(reference, SHIPPED, rules, key, morning, "timer")
    # Then every stream holds the same events, with the same ids, at the same versions, and the same timers are set
    assert recorded(batched, keys) == recorded(reference, keys)
    timers_of = {
        engine: {(t.customer_id, t.due_at, t.version) for t in Timers(engine).all()}
        for engine in (batch_engine, reference_engine)
    }
    assert timers_of[batch_engine] == timers_of[reference_engine]
    # (and the sweeps had plenty to decide, and skipped the customers for whom nothing had changed)
    assert sum(len(events) for events in recorded(batched, keys).values()) > 3 * len(history)
    assert tick(batched, SHIPPED, rules, START + timedelta(days=9), batch_size=7).unchanged > 0
    assert batched.verify().ok


# ---------------------------------------------------------------------------------------------------- concurrency
def test_a_stream_that_moved_is_decided_again_alone_and_the_others_land(engine: Engine) -> None:
    ledger = Ledger(engine)
    for who in ("C-1", "C-2", "C-3"):
        issue(ledger, who, "INV-1")
    seen: list[tuple[str, int]] = []

    def decide_while_c2_pays(state: CustomerState, policy: Policy, as_of: datetime, rates: Any) -> list[Decision]:
        # The first time C-2 is decided, the ERP's payment lands between reading its state and appending
        seen.append((state.customer_id, state.version))
        if seen.count(("C-2", 1)) == 1 and state.customer_id == "C-2":
            pay = payment("P-1", "120.00", allocations={"INV-1": "120.00"})
            Ledger(engine).record([incoming(pay, customer_id="C-2")])
        return fake_decide(state, policy, as_of, rates)

    rules = Rules(decide=decide_while_c2_pays, next_due=fake_next_due)
    keys = [(TENANT, c) for c in ("C-1", "C-2", "C-3")]
    # When the three late customers are evaluated in one batch
    results = evaluate_many(ledger, books, keys, FIRES_AT, rules=rules, timers=Timers(engine))
    # Then C-1 and C-3 got their reminder from the first round, and only C-2 was read and decided again
    attempts = {r.customer_id: r.attempts for r in results if not isinstance(r, Failure)}
    assert attempts == {"C-1": 1, "C-2": 2, "C-3": 1}
    assert seen == [("C-1", 1), ("C-2", 1), ("C-3", 1), ("C-2", 2)]
    for who in ("C-1", "C-3"):
        assert [e.event_type for e in ledger.read_stream(TENANT, who)][1:] == [
            "escalation.clock_ticked",
            "reminder.requested",
        ]
    # And the paid customer is reminded of nothing
    assert [e.event_type for e in ledger.read_stream(TENANT, "C-2")] == ["invoice.issued", "payment.received"]


# ---------------------------------------------------------------------------------------------------- failures
def test_a_customer_whose_engine_fails_does_not_stop_the_batch(engine: Engine) -> None:
    ledger = Ledger(engine)
    for who in ("C-1", "C-BAD", "C-3"):
        issue(ledger, who, "INV-1")

    def decide_or_fail(state: CustomerState, policy: Policy, as_of: datetime, rates: Any) -> list[Decision]:
        if state.customer_id == "C-BAD":
            raise LookupError("no reference rate for the semester")
        return fake_decide(state, policy, as_of, rates)

    keys = [(TENANT, c) for c in ("C-1", "C-BAD", "C-3")]
    rules = Rules(decide=decide_or_fail, next_due=fake_next_due)
    # When the batch is evaluated
    results = evaluate_many(ledger, books, keys, FIRES_AT, rules=rules, timers=Timers(engine))
    # Then the failing customer has its failure, with the exception, and the others their reminders
    failure = results[1]
    assert isinstance(failure, Failure) and failure.reason == "LookupError: no reference rate for the semester"
    assert isinstance(failure.error, LookupError)
    for who in ("C-1", "C-3"):
        assert "reminder.requested" in [e.event_type for e in ledger.read_stream(TENANT, who)]


def test_a_customer_whose_state_does_not_load_or_whose_decision_is_refused_does_not_stop_the_batch(
    pg_url: str,
) -> None:
    engine = make_engine(pg_url)
    ledger = Ledger(engine)
    for who in ("C-1", "C-SNAP", "C-NUL", "C-4"):
        issue(ledger, who, "INV-1")
    # Given a snapshot damaged by hand, and a customer whose decision PostgreSQL refuses (a NUL in its JSON)
    with engine.begin() as conn:
        conn.execute(text("UPDATE customer_state SET state = CAST('{\"x\": 1}' AS json) WHERE customer_id = 'C-SNAP'"))

    def decide_with_a_nul(state: CustomerState, policy: Policy, as_of: datetime, rates: Any) -> list[Decision]:
        decisions = fake_decide(state, policy, as_of, rates)
        if state.customer_id != "C-NUL":
            return decisions
        return [Decision(d.event_id, d.event.model_copy(update={"template": "reminder\x00"})) for d in decisions]

    keys = [(TENANT, c) for c in ("C-1", "C-SNAP", "C-NUL", "C-4")]
    rules = Rules(decide=decide_with_a_nul, next_due=fake_next_due)
    # When they are evaluated in one batch (in a fresh process: nothing cached)
    results = evaluate_many(Ledger(engine), books, keys, FIRES_AT, rules=rules, timers=Timers(engine))
    # Then the two customers have their failures, and the others their reminders, recorded together
    failed = {r.customer_id: r.reason.split(":")[0] for r in results if isinstance(r, Failure)}
    assert failed == {"C-SNAP": "KeyError", "C-NUL": "LedgerRefused"}
    for who in ("C-1", "C-4"):
        assert "reminder.requested" in [e.event_type for e in ledger.read_stream(TENANT, who)]
    assert [e.event_type for e in ledger.read_stream(TENANT, "C-NUL")] == ["invoice.issued"]
    engine.dispose()


# ---------------------------------------------------------------------------------------------------- skipping
def late(ledger: Ledger, who: str = "C-1") -> None:
    profile = customer(f"{who} SARL", emails=[f"{who.lower()}@example.fr"]).with_id(f"cust-{who}")
    bill = invoice("INV-1", "900.00", issue_date="2026-01-10", due_date="2026-02-09").with_id(f"inv-{who}")
    ledger.record([incoming(profile, customer_id=who), incoming(bill, customer_id=who)])


def sweep(ledger: Ledger, at: datetime, *, rules: Rules | None = None, policies: PolicyBooks = SHIPPED) -> Any:
    return tick(ledger, policies, rules or real_rules(load_settings()), at)


def test_a_sweep_skips_the_customers_whose_state_and_next_step_did_not_change(engine: Engine) -> None:
    ledger = Ledger(engine)
    late(ledger)
    # Given a sweep that decided the customer's catch-up
    first = sweep(ledger, START)
    assert sum(first.decisions.values()) > 0 and first.unchanged == 0
    timer = Timers(engine).get(TENANT, "C-1")
    assert timer is not None and timer.due_at > START + timedelta(hours=1)
    versions = len(ledger.read_stream(TENANT, "C-1"))
    # When the clock is ticked again at the same instant, and later before the next step
    for at in (START, START + timedelta(hours=1)):
        again = sweep(ledger, at)
        # Then the customer is skipped, and nothing is appended
        assert (again.customers, again.unchanged, sum(again.decisions.values())) == (1, 1, 0)
    assert len(ledger.read_stream(TENANT, "C-1")) == versions


def _pay(ledger: Ledger, engine: Engine) -> dict[str, Any]:
    ledger.record([incoming(payment("P-1", "100.00", received_on="2026-03-01"), customer_id="C-1")])
    return {}


def _backfill(ledger: Ledger, engine: Engine) -> dict[str, Any]:
    return {"at": START - timedelta(days=1)}


def _next_step(ledger: Ledger, engine: Engine) -> dict[str, Any]:
    timer = Timers(engine).get(TENANT, "C-1")
    assert timer is not None
    return {"at": timer.due_at}


def _timer_by_hand(ledger: Ledger, engine: Engine) -> dict[str, Any]:
    Timers(engine).retry_at(TENANT, "C-1", START + timedelta(minutes=30), START)
    return {"at": START + timedelta(hours=1)}


def _another_policy_book(ledger: Ledger, engine: Engine) -> dict[str, Any]:
    from dataclasses import replace

    from services.escalation.policy import PolicyBook

    book = SHIPPED(TENANT)
    assert isinstance(book, PolicyBook)
    changed = {name: replace(p, version=f"{p.version}-edited") for name, p in book.policies.items()}
    edited = replace(book, policies=changed)
    return {"policies": lambda tenant: edited}


def _another_rate_table(ledger: Ledger, engine: Engine) -> dict[str, Any]:
    from decimal import Decimal

    from services.escalation.interest import RateTable

    shipped = RateTable.default()
    ecb = {**shipped.semesters("ecb"), date(2026, 1, 1): Decimal("2.15") + Decimal("0.01")}
    series = {name: shipped.semesters(name) for name in shipped.tables() if name != "ecb"}
    return {"rules": real_rules(load_settings(), RateTable(ecb, series=series))}


def _another_engine(ledger: Ledger, engine: Engine) -> dict[str, Any]:
    from dataclasses import replace

    return {"rules": replace(real_rules(load_settings()), basis="the engine of another release")}


@pytest.mark.parametrize(
    "change",
    [_pay, _backfill, _next_step, _timer_by_hand, _another_policy_book, _another_rate_table, _another_engine],
    ids=["ERP event", "earlier instant", "next step due", "timer changed", "policy book", "rate table", "engine"],
)
def test_a_sweep_decides_a_customer_again_when_anything_it_depends_on_changed(
    engine: Engine, change: Callable[[Ledger, Engine], dict[str, Any]]
) -> None:
    ledger = Ledger(engine)
    late(ledger)
    sweep(ledger, START)
    # When the stream, the instant, the timer, the policy book, the rate table or the engine changes
    options = {"at": START + timedelta(hours=1), **change(ledger, engine)}
    again = sweep(ledger, options.pop("at"), **options)
    # Then the customer is decided again (what it decides is the engine's business)
    assert (again.customers, again.unchanged, again.failures) == (1, 0, 0)


def test_the_next_step_is_decided_when_it_falls_due(engine: Engine) -> None:
    ledger = Ledger(engine)
    late(ledger)
    sweep(ledger, START)
    timer = Timers(engine).get(TENANT, "C-1")
    assert timer is not None
    # When a sweep runs at the instant the next step falls due
    reached = sweep(ledger, timer.due_at)
    # Then that step's decisions are recorded
    assert reached.unchanged == 0 and reached.decisions.get("escalation.level_reached", 0) >= 1


def test_a_customer_whose_evaluation_failed_is_decided_again_by_the_next_sweep(engine: Engine) -> None:
    ledger = Ledger(engine)
    late(ledger)
    good = real_rules(load_settings())
    sweep(ledger, START, rules=good)

    def fail(state: CustomerState, policy: Policy, as_of: datetime, rates: Any) -> list[Decision]:
        raise LookupError("no reference rate")

    from dataclasses import replace

    # Given a sweep whose evaluation of the customer failed (skipping off: another instant)
    failed = sweep(ledger, START + timedelta(minutes=1), rules=replace(good, decide=fail, basis="failing"))
    assert failed.failures == 1
    # When the next sweep runs with the rules that worked before, at an instant they would have skipped
    again = sweep(ledger, START + timedelta(hours=1), rules=good)
    # Then the customer is decided again
    assert (again.unchanged, again.failures) == (0, 0)


def test_customers_of_a_fake_policy_source_are_never_skipped(engine: Engine) -> None:
    ledger = Ledger(engine)
    issue(ledger, "C-1", "INV-1")
    for _ in range(2):
        summary = tick(ledger, books, FAKE, FIRES_AT)
        assert summary.unchanged == 0
