"""Escalation glue: load customers' states, let the pure engine decide, append its decisions, set the next timers.

:func:`evaluate_many` is the one place where the engine meets the ledger; :func:`evaluate` is its batch of one (the
CLI, the replay and tests). Everything it needs comes in as parameters (the ledger, the policy books, the engine's
functions, the timers), so tests can pass fakes and the workers build the real ones once, in their composition root.

Batches: the states of many customers are read in one round trip, the engine decides for each in memory, the
decisions of all of them are appended in one transaction, and their timers in one more. The per-stream guarantees are
those of one customer at a time:

Concurrency: a customer's decisions are derived from its stream at version *v* and appended with expected versions
*v*, *v+1*, … so they land all together on exactly the state they were derived from, or not at all. When another
writer appended meanwhile (a payment, or another worker's decisions), that customer's stream is read again and the
engine decides again for it alone; the other customers' decisions of the batch are recorded all the same. Decisions
have deterministic ids, so a decision another worker already recorded is a duplicate the ledger ignores: however
many workers evaluate a customer at once, each decision is recorded once.

Time is an input. An evaluation fired by a timer, or one that decides anything, first appends an
``escalation.clock_ticked`` event ``{as_of, trigger}`` (its id derived from the customer, the instant and the stream
version) in the same transaction as the decisions, so a replay of the log can drive the engine with the recorded
instants and get the same decisions, whatever the wall clock says.

One customer's failure is that customer's alone: a state that does not load, an engine that raises, decisions the
ledger refuses make a :class:`Failure` for that customer (the batch is loaded or recorded again customer by
customer to find which), and the others are evaluated. A sweep may skip the customers for whom nothing changed since
their last evaluation: the exact rule is :mod:`services.escalation.evaluations`'.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog
from sqlalchemy.exc import DBAPIError

from services.escalation.errors import EscalationError as EscalationError  # the service's root, importable here
from services.escalation.evaluations import Evaluations, Seen
from services.escalation.model import Decision, Policy
from services.escalation.policy import PolicyBook
from services.escalation.timers import Due, Timers
from shared.contracts import events
from shared.contracts.events import instant_text
from shared.ledger.hashing import utc
from shared.ledger.state import CustomerState
from shared.ledger.store import Incoming, Ledger, LedgerConflict, LedgerUnavailable, Outcome, StreamKey

if TYPE_CHECKING:
    from services.escalation.interest import RateTable

log = structlog.get_logger()

CLOCK_TICKED = events.ClockTicked.TYPE
Trigger = Literal["timer", "ledger", "manual"]
DecideFn = Callable[[CustomerState, Policy, datetime, Any], list[Decision]]
NextDueFn = Callable[[CustomerState, Policy, datetime, Any], "datetime | None"]
# No customer's fault: the database is down, or a stream kept moving. Raised as they are, never a customer's failure.
OUTAGES = (LedgerUnavailable, LedgerConflict, DBAPIError)


class PolicySource(Protocol):
    """What evaluation needs of a policy book: the policy that applies to a customer."""

    def for_customer(self, profile: dict[str, Any] | None) -> Policy: ...


PolicyBooks = Callable[[str], PolicySource]  # each tenant's book


@dataclass(frozen=True, slots=True)
class Rules:
    """The engine's functions and the data they read besides state and policy (the reference rate table)."""

    decide: DecideFn
    next_due: NextDueFn
    rates: Any = None
    # A digest of the rate table and the engine's code (:func:`rules_basis`); None (fakes): never skip a customer.
    basis: str | None = None


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    tenant: str
    customer_id: str
    as_of: datetime
    applied: tuple[Decision, ...] = ()  # decisions appended by this evaluation
    duplicates: int = 0  # decisions already in the log (recorded by another worker or an earlier run)
    ticked: bool = False  # whether this evaluation appended its clock_ticked event
    next_due: datetime | None = None
    version: int = 0  # the stream's version after the evaluation
    attempts: int = 1
    policy_version: str = ""
    rejected: tuple[str, ...] = field(default=())  # reasons, should the ledger refuse a decision
    unchanged: bool = False  # skipped: nothing changed since the last evaluation (services.escalation.evaluations)


@dataclass(frozen=True, slots=True)
class Failure:
    """A customer whose evaluation failed, and why (the exception's type and message; the exception itself)."""

    tenant: str
    customer_id: str
    reason: str
    error: BaseException | None = field(default=None, compare=False, repr=False)


def tick_event_id(tenant: str, customer_id: str, as_of: datetime, version: int) -> str:
    """The same customer, at the same instant, seen at the same stream version, always gets the same tick id.

    The version matters: two evaluations at one instant around an ERP event (a timer just before an invoice is
    appended, the log follower just after) decide differently, and each decision must follow a tick of its own for a
    replay to reproduce it. Repeated triggers on the same state still share one tick.
    """
    # The key spells the instant as it always did (an offset, not Z): the ids of ticks already recorded stay the same.
    key = f"{tenant}\x00{customer_id}\x00{utc(as_of).isoformat()}\x00{version}"
    return f"tick-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def evaluate(
    ledger: Ledger,
    policies: PolicySource,
    tenant: str,
    customer_id: str,
    as_of: datetime,
    *,
    rules: Rules,
    timers: Timers | None = None,
    trigger: Trigger = "manual",
    max_attempts: int = 20,
) -> EvaluationResult:
    """Decide for one customer at ``as_of``, append the decisions once, and set the customer's next timer.

    The batch path (:func:`evaluate_many`) for a batch of one, never skipping; the customer's failure is raised.
    """
    (result,) = evaluate_many(
        ledger,
        lambda _tenant: policies,
        [(tenant, customer_id)],
        as_of,
        rules=rules,
        timers=timers,
        trigger=trigger,
        max_attempts=max_attempts,
    )
    if isinstance(result, Failure):
        assert result.error is not None
        raise result.error
    return result


def evaluate_many(
    ledger: Ledger,
    books: PolicyBooks,
    keys: Sequence[StreamKey],
    as_of: datetime,
    *,
    rules: Rules,
    timers: Timers | None = None,
    trigger: Trigger = "manual",
    skip_unchanged: bool = False,
    max_attempts: int = 20,
) -> list[EvaluationResult | Failure]:
    """Decide for many customers at ``as_of``: one result per customer, in the order of ``keys``.

    Their states are loaded together (:meth:`Ledger.states`), the engine decides for each in memory, and the
    decisions of all of them are appended in one transaction, each customer's with its own expected versions; a
    customer whose stream moved meanwhile is read and decided again alone, the others' decisions staying recorded.
    Then the next due instants are set as timers (with ``timers``), with the evaluation records
    (:mod:`services.escalation.evaluations`), in one transaction. With ``skip_unchanged``, the customers the skip rule
    lets pass are not loaded or decided (``EvaluationResult.unchanged``).

    A customer whose state does not load, whose evaluation raises, or whose decisions the ledger refuses gets a
    :class:`Failure` (with the exception) and loses its evaluation record; the others go on. An outage, or a stream
    that kept moving for ``max_attempts`` rounds, is raised once the others' timers are set.
    """
    as_of = utc(as_of)
    batch = _Batch(ledger, books, as_of, rules, trigger)
    keys = list(dict.fromkeys(keys))
    seen = Evaluations(ledger.engine) if timers is not None else None
    if skip_unchanged and seen is not None:
        batch.skip(seen, keys)
    pending = [key for key in keys if key not in batch.results]
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        pending = batch.attempt(pending, attempt)
    batch.finish(timers, seen)
    if pending:
        raise LedgerConflict(f"{len(pending)} stream(s) kept moving during {max_attempts} evaluations: {pending[:5]}")
    return [batch.results[key] for key in keys]


def basis_of(rules: Rules, policies: PolicySource) -> str | None:
    """A digest of what the decisions depend on besides a customer's state and the instant, None if unknown.

    The rules' basis (rate table and engine code: :func:`rules_basis`) and the tenant's policy book: every policy's
    name and version (the hash of its content), the default and the segments. A policy source that is not a
    :class:`~services.escalation.policy.PolicyBook` (a test's fake) has no basis: its customers are never skipped.
    """
    if rules.basis is None or not isinstance(policies, PolicyBook):
        return None
    book = [
        policies.default,
        sorted(policies.segments.items()),
        sorted((name, policy.version) for name, policy in policies.policies.items()),
    ]
    return hashlib.sha256(f"{rules.basis}\x00{book!r}".encode()).hexdigest()


def rules_basis(rates: RateTable | None) -> str:
    """A digest of the rate table's rates and of the escalation package's code (the engine and what it reads)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\x00" + path.read_bytes())
    if rates is not None:
        for name in rates.tables():
            for semester, rate in rates.semesters(name).items():
                digest.update(f"{name},{semester.isoformat()},{rate}\n".encode())
    return digest.hexdigest()


@dataclass
class _Plan:
    """One customer's evaluation in a batch: the state it read, the policy, what the engine decided, what to append.

    ``state`` is shared with the ledger's writer (:meth:`Ledger.states`), which folds the appended events into it:
    once the items are recorded, only ``version`` (the one read) still says what the decisions were taken from.
    """

    state: CustomerState
    version: int
    policy: Policy
    decisions: list[Decision]
    fresh: list[Decision]
    tick_id: str
    items: list[Incoming]
    attempt: int


class _Batch:
    """The customers of one :func:`evaluate_many` call, and what became of each."""

    def __init__(self, ledger: Ledger, books: PolicyBooks, as_of: datetime, rules: Rules, trigger: Trigger) -> None:
        self.ledger = ledger
        self.books = books
        self.as_of = as_of
        self.rules = rules
        self.trigger = trigger
        self.results: dict[StreamKey, EvaluationResult | Failure] = {}
        self.done: dict[StreamKey, tuple[_Plan, int]] = {}  # evaluated: the plan and the version its appends left
        self._bases: dict[str, str | None] = {}

    def basis(self, tenant: str) -> str | None:
        if tenant not in self._bases:
            self._bases[tenant] = basis_of(self.rules, self.books(tenant))
        return self._bases[tenant]

    def skip(self, seen: Evaluations, keys: list[StreamKey]) -> None:
        by_tenant: dict[str, list[str]] = {}
        for tenant, customer_id in keys:
            by_tenant.setdefault(tenant, []).append(customer_id)
        for tenant, customer_ids in by_tenant.items():
            basis = self.basis(tenant)
            if basis is None:
                continue
            for customer_id, row in seen.unchanged(tenant, customer_ids, self.as_of, basis).items():
                self.results[(tenant, customer_id)] = EvaluationResult(
                    tenant=tenant,
                    customer_id=customer_id,
                    as_of=self.as_of,
                    next_due=row.next_due,
                    version=row.version,
                    attempts=0,
                    unchanged=True,
                )

    def attempt(self, keys: list[StreamKey], attempt: int) -> list[StreamKey]:
        """Load, decide and append for these customers; returns those whose stream moved meanwhile."""
        plans = [plan for plan in (self._plan(key, state, attempt) for key, state in self._states(keys)) if plan]
        self._known(plans)
        outcomes = self._record(plans)
        moved: list[StreamKey] = []
        for plan in plans:
            key = (plan.state.tenant, plan.state.customer_id)
            got = outcomes.get(key)
            if got is None:
                continue  # a failure, already in the results
            if any(outcome.status == "conflict" for outcome in got):
                log.info("escalation.retry_conflict", tenant=key[0], customer=key[1], attempt=attempt)
                moved.append(key)
                continue
            self._applied(plan, got)
        return moved

    def _states(self, keys: list[StreamKey]) -> list[tuple[StreamKey, CustomerState]]:
        """The customers' states, loaded together; should that fail, one by one so the failure is the customer's."""
        try:
            states = self.ledger.states(keys)
            return [(key, states[key]) for key in keys]
        except OUTAGES:
            raise
        except Exception:
            if len(keys) == 1:
                self._fail(keys[0])
                return []
            return [pair for key in keys for pair in self._states([key])]

    def _plan(self, key: StreamKey, state: CustomerState, attempt: int) -> _Plan | None:
        try:
            policy = self.books(key[0]).for_customer(state.profile)
            decisions = list(self.rules.decide(state, policy, self.as_of, self.rules.rates))
        except OUTAGES:
            raise
        except Exception:
            self._fail(key)
            return None
        tick_id = tick_event_id(key[0], key[1], self.as_of, state.version)
        return _Plan(state, state.version, policy, decisions, [], tick_id, [], attempt)

    def _known(self, plans: list[_Plan]) -> None:
        """Which decisions (and ticks) the log already holds, one query per tenant; then what each plan appends."""
        wanted: dict[str, list[str]] = {}
        for plan in plans:
            if plan.decisions or self.trigger == "timer":
                ids = [plan.tick_id, *(d.event_id for d in plan.decisions)]
                wanted.setdefault(plan.state.tenant, []).extend(ids)
        known = {
            (tenant, event_id)
            for tenant, ids in wanted.items()
            for event_id in self.ledger.known_event_ids(tenant, ids)
        }
        for plan in plans:
            tenant = plan.state.tenant
            plan.fresh = [d for d in plan.decisions if (tenant, d.event_id) not in known]
            with_tick = bool(plan.fresh or self.trigger == "timer") and (tenant, plan.tick_id) not in known
            tick = plan.tick_id if with_tick else None
            plan.items = _items(plan.state, plan.policy, plan.fresh, self.as_of, self.trigger, tick)

    def _record(self, plans: list[_Plan]) -> dict[StreamKey, list[Outcome]]:
        """Append every plan's items in one transaction; should the ledger refuse it, each customer's alone."""
        items = [item for plan in plans for item in plan.items]
        try:
            recorded = self.ledger.record(items) if items else []
        except OUTAGES:
            raise
        except Exception:
            if len(plans) == 1:
                self._fail((plans[0].state.tenant, plans[0].state.customer_id))
                return {}
            return {key: got for plan in plans for key, got in self._record([plan]).items()}
        outcomes = iter(recorded)
        return {(p.state.tenant, p.state.customer_id): [next(outcomes) for _ in p.items] for p in plans}

    def _applied(self, plan: _Plan, outcomes: list[Outcome]) -> None:
        state = plan.state
        tenant, customer_id = state.tenant, state.customer_id
        statuses = {item.event_id: outcome.status for item, outcome in zip(plan.items, outcomes, strict=True)}
        applied = tuple(d for d in plan.fresh if statuses.get(d.event_id) == "applied")
        fresh_duplicates = sum(1 for d in plan.fresh if statuses.get(d.event_id) == "duplicate")
        rejected = tuple(o.reason for o in outcomes if o.status == "rejected")
        for reason in rejected:
            log.error("escalation.decision_rejected", tenant=tenant, customer=customer_id, reason=reason)
        for decision in applied:
            log.info(
                decision.event_type,
                tenant=tenant,
                customer=customer_id,
                event_id=decision.event_id,
                as_of=instant_text(self.as_of),
                trigger=self.trigger,
            )
        self.results[(tenant, customer_id)] = EvaluationResult(
            tenant=tenant,
            customer_id=customer_id,
            as_of=self.as_of,
            applied=applied,
            duplicates=len(plan.decisions) - len(plan.fresh) + fresh_duplicates,
            ticked=statuses.get(plan.tick_id) == "applied",
            attempts=plan.attempt,
            policy_version=plan.policy.version,
            rejected=rejected,
        )
        appended = sum(1 for outcome in outcomes if outcome.status == "applied")
        self.done[(tenant, customer_id)] = (plan, plan.version + appended)

    def _fail(self, key: StreamKey) -> None:
        """The exception being handled is this customer's failure."""
        exc = sys.exc_info()[1]
        assert exc is not None
        self.results[key] = Failure(key[0], key[1], f"{type(exc).__name__}: {exc}", exc)

    def finish(self, timers: Timers | None, seen: Evaluations | None) -> None:
        """Work out each evaluated customer's next due instant from its state as it is now, and keep it."""
        wrote = [key for key, (plan, _) in self.done.items() if plan.items]
        states = self.ledger.states(wrote) if wrote else {}
        due: list[Due] = []
        records: list[Seen] = []
        for key, (plan, version) in self.done.items():
            state = states.get(key, plan.state)
            result = self.results[key]
            assert isinstance(result, EvaluationResult)
            try:
                next_due = self.rules.next_due(state, plan.policy, self.as_of, self.rules.rates)
            except OUTAGES:
                raise
            except Exception:
                self._fail(key)
                continue
            next_due = None if next_due is None else utc(next_due)
            self.results[key] = replace(result, next_due=next_due, version=state.version)
            due.append((key[0], key[1], next_due, state.version))
            basis = self.basis(key[0])
            if basis is not None and state.version == version and not result.rejected:
                records.append(Seen(key[0], key[1], state.version, self.as_of, next_due, basis))
        failed = [key for key, result in self.results.items() if isinstance(result, Failure)]
        if timers is None or not (due or failed):
            return
        now = datetime.now(UTC)
        with self.ledger.engine.begin() as conn:
            timers.set_many(conn, due, now)
            if seen is not None:
                seen.record(conn, records, now)
                seen.forget(conn, failed)


def _items(
    state: CustomerState,
    policy: Policy,
    decisions: list[Decision],
    as_of: datetime,
    trigger: Trigger,
    tick_id: str | None,
) -> list[Incoming]:
    """The clock tick (when wanted) followed by the decisions, as events of the customer's stream.

    They expect the versions v, v+1, … after the state's v: the batch lands on exactly the state it was decided
    from, or not at all.
    """
    metadata = {
        "as_of": instant_text(as_of),
        "trigger": trigger,
        "policy": policy.name,
        "policy_version": policy.version,
    }
    planned: list[tuple[str, events.RelanceEvent, dict[str, Any]]] = []
    if tick_id is not None:
        planned.append((tick_id, events.ClockTicked(as_of=as_of, trigger=trigger), metadata))
    clock = tick_id or tick_event_id(state.tenant, state.customer_id, as_of, state.version)
    planned.extend((d.event_id, d.event, {**metadata, "clock": clock}) for d in decisions)
    return [
        Incoming.of(
            event,
            stream=(state.tenant, state.customer_id),
            event_id=event_id,
            occurred_at=as_of,
            metadata=event_metadata,
            expected_version=state.version + offset,
        )
        for offset, (event_id, event, event_metadata) in enumerate(planned)
    ]


def decision_items(
    state: CustomerState,
    policy: Policy,
    decisions: list[Decision],
    as_of: datetime,
    trigger: Trigger,
    tick_id: str | None,
) -> list[Incoming]:
    """The events :func:`evaluate` records for these decisions (the tick first, when given): what a replay that
    records nothing (:mod:`services.escalation.replay`) chains after a recorded tick."""
    return _items(state, policy, decisions, as_of, trigger, tick_id)
