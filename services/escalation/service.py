"""Escalation glue: load a customer's state, let the pure engine decide, append its decisions, set the next timer.

:func:`evaluate` is the one place where the engine meets the ledger. Everything it needs comes in as parameters
(the ledger, the policy book, the engine's functions, the timers), so tests can pass fakes and the workers build
the real ones once, in their composition root.

Concurrency: the decisions are derived from the stream at version *v* and appended with expected versions *v*,
*v+1*, … in one transaction, so they land all together on exactly the state they were derived from, or not at
all. When another writer appended meanwhile (a payment, or another worker's decisions), the stream is read again
and the engine decides again. Decisions have deterministic ids, so a decision another worker already recorded is
a duplicate the ledger ignores: however many workers evaluate a customer at once, each decision is recorded once.

Time is an input. An evaluation fired by a timer, or one that decides anything, first appends an
``escalation.clock_ticked`` event ``{as_of, trigger}`` (its id derived from the customer and the instant) in the
same transaction as the decisions, so a replay of the log can drive the engine with the recorded instants and get
the same decisions, whatever the wall clock says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import structlog

from services.escalation.errors import EscalationError as EscalationError  # the service's root, importable here
from services.escalation.model import Decision, Policy
from services.escalation.timers import Timers
from shared.contracts import events
from shared.contracts.events import instant_text
from shared.ledger.hashing import utc
from shared.ledger.state import CustomerState
from shared.ledger.store import Incoming, Ledger, LedgerConflict

log = structlog.get_logger()

CLOCK_TICKED = events.ClockTicked.TYPE
Trigger = Literal["timer", "ledger", "manual"]
DecideFn = Callable[[CustomerState, Policy, datetime, Any], list[Decision]]
NextDueFn = Callable[[CustomerState, Policy, datetime, Any], "datetime | None"]


class PolicySource(Protocol):
    """What evaluation needs of a policy book: the policy that applies to a customer."""

    def for_customer(self, profile: dict[str, Any] | None) -> Policy: ...


@dataclass(frozen=True, slots=True)
class Rules:
    """The engine's functions and the data they read besides state and policy (the reference rate table)."""

    decide: DecideFn
    next_due: NextDueFn
    rates: Any = None


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
    """Decide for one customer at ``as_of``, append the decisions once, and set the customer's next timer."""
    as_of = utc(as_of)
    for attempt in range(1, max_attempts + 1):
        state = ledger.state(tenant, customer_id)
        policy = policies.for_customer(state.profile)
        decisions = list(rules.decide(state, policy, as_of, rules.rates))
        tick_id = tick_event_id(tenant, customer_id, as_of, state.version)
        known: set[str] = set()
        if decisions or trigger == "timer":
            known = ledger.known_event_ids(tenant, [tick_id, *(d.event_id for d in decisions)])
        fresh = [d for d in decisions if d.event_id not in known]
        with_tick = bool(fresh or trigger == "timer") and tick_id not in known
        chained = _items(state, policy, fresh, as_of, trigger, tick_id if with_tick else None)
        outcomes = ledger.record(chained) if chained else []
        if any(outcome.status == "conflict" for outcome in outcomes):
            log.info("escalation.retry_conflict", tenant=tenant, customer=customer_id, attempt=attempt)
            continue
        statuses = {item.event_id: outcome.status for item, outcome in zip(chained, outcomes, strict=True)}
        applied = tuple(d for d in fresh if statuses.get(d.event_id) == "applied")
        duplicates = len(decisions) - len(fresh) + sum(1 for d in fresh if statuses.get(d.event_id) == "duplicate")
        rejected = tuple(o.reason for o in outcomes if o.status == "rejected")
        for reason in rejected:
            log.error("escalation.decision_rejected", tenant=tenant, customer=customer_id, reason=reason)
        for decision in applied:
            log.info(
                decision.event_type,
                tenant=tenant,
                customer=customer_id,
                event_id=decision.event_id,
                as_of=instant_text(as_of),
                trigger=trigger,
            )
        ticked = statuses.get(tick_id) == "applied"
        return _finish(
            ledger, policies, rules, timers, tenant, customer_id, as_of, attempt, applied, duplicates, ticked, rejected
        )
    raise LedgerConflict(f"{tenant}/{customer_id}: the stream kept moving during {max_attempts} evaluations")


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


def _finish(
    ledger: Ledger,
    policies: PolicySource,
    rules: Rules,
    timers: Timers | None,
    tenant: str,
    customer_id: str,
    as_of: datetime,
    attempts: int,
    applied: tuple[Decision, ...],
    duplicates: int,
    ticked: bool,
    rejected: tuple[str, ...],
) -> EvaluationResult:
    """Work out the next due instant from the state as it is now, and keep it as the customer's timer."""
    state = ledger.state(tenant, customer_id)
    policy = policies.for_customer(state.profile)
    next_due = rules.next_due(state, policy, as_of, rules.rates)
    if next_due is not None:
        next_due = utc(next_due)
    if timers is not None:
        timers.set(tenant, customer_id, next_due, state.version, datetime.now(UTC))
    return EvaluationResult(
        tenant=tenant,
        customer_id=customer_id,
        as_of=as_of,
        applied=applied,
        duplicates=duplicates,
        ticked=ticked,
        next_due=next_due,
        version=state.version,
        attempts=attempts,
        policy_version=policy.version,
        rejected=rejected,
    )


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
