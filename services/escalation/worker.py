"""``relance worker escalation``: evaluate customers when a timer is due and when their ledger changed.

Each round:

1. **Timers.** Claim the timers due now (``FOR UPDATE SKIP LOCKED``, a batch at a time; see
   :mod:`services.escalation.timers`) and evaluate those customers together at the current instant, with trigger
   ``timer`` (:func:`~services.escalation.service.evaluate_many`): each firing is recorded as an
   ``escalation.clock_ticked`` event, then that customer's decisions, then the next timers are set.
2. **Ledger changes.** Follow the event log with :meth:`Ledger.read_all` (the transaction-id scheme: no event is
   ever skipped) from a cursor kept in the ``cursors`` table, and evaluate each customer an ERP event touched
   (invoice, payment, credit note, cancellation, dispute, promise, plan, customer update), the customers of a batch
   of events together. One worker follows the
   log at a time under a lease; the cursor is saved after the customers were evaluated, so a crash re-evaluates
   rather than misses (evaluation is idempotent).

Any number of workers may run: they take different timers, and the deterministic decision ids plus the expected
version on every append mean a decision is recorded once whoever takes it. No broker is involved: the trigger is the
log itself, and timers live in the database. A database outage is retried with backoff; SIGTERM or SIGINT ends the
worker after the batch of customers it is evaluating.

One customer's failure is that customer's alone (:func:`evaluate_guarded`), in a batch too: it is logged with the
customer and the reason, counted, and the others are evaluated; the worker looks at the failing customer again after
a lease, and ``relance clock tick`` says which customers failed and exits 1. An outage is not a customer's failure:
the round is retried (worker) or the command stops (``clock tick``).

At start-up and then once a day the worker checks the reference rate table and logs ``rates.missing_soon`` for a
semester beginning within :data:`~services.escalation.interest.RATES_WARNING_DAYS` days that has no rate, and
``rates.missing`` once such a semester has begun.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from services.escalation.cursor import CursorLease
from services.escalation.interest import RateTable, days_left, warn_missing_rates
from services.escalation.service import (
    EvaluationResult,
    Failure,
    PolicyBooks,
    Rules,
    Trigger,
    evaluate_many,
    rules_basis,
)
from services.escalation.timers import Timers
from shared.config import Settings
from shared.contracts.erp import EVENT_TYPES
from shared.contracts.events import ClaimWaived, CustomerPaused, CustomerResumed
from shared.ledger.store import Ledger, LedgerConflict, LedgerUnavailable, StreamKey
from shared.logging import DATABASE_AVAILABLE, DATABASE_UNAVAILABLE
from shared.observability.gauges import escalation_gauges
from shared.observability.metrics import EscalationMetrics
from shared.observability.telemetry import Telemetry
from shared.runtime import Backoff, first_line, run_worker, wait_beating

log = structlog.get_logger()

CURSOR_NAME = "escalation"
# What the ERP tells us (a promise, a dispute or a plan a person records is of those types too), and what people
# record that changes what the engine decides (a pause, its end, a waiver); the engine's own events never trigger one
TRIGGERS = frozenset({*EVENT_TYPES, CustomerPaused.TYPE, CustomerResumed.TYPE, ClaimWaived.TYPE})
Clock = Callable[[], datetime]
__all__ = ["EscalationWorker", "Failure", "PolicyBooks", "Summary", "evaluate_guarded", "tick"]


def system_clock() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Summary:
    """What a round, a worker or ``relance clock tick`` did."""

    customers: int = 0
    unchanged: int = 0  # of the customers, those a sweep skipped (nothing changed since their last evaluation)
    decisions: dict[str, int] = field(default_factory=dict)  # event type -> appended
    duplicates: int = 0
    ticks: int = 0
    timers_set: int = 0
    failures: int = 0
    failed: list[Failure] = field(default_factory=list)  # kept by ``clock tick`` only: a worker runs for months

    def add(self, result: EvaluationResult) -> None:
        self.customers += 1
        if result.unchanged:
            self.unchanged += 1
            return
        for decision in result.applied:
            self.decisions[decision.event_type] = self.decisions.get(decision.event_type, 0) + 1
        self.duplicates += result.duplicates
        self.ticks += int(result.ticked)
        self.timers_set += int(result.next_due is not None)


class EscalationWorker:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        policies: PolicyBooks,
        rules: Rules,
        stop: threading.Event,
        *,
        clock: Clock = system_clock,
        holder: str | None = None,
        telemetry: Telemetry[EscalationMetrics] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.policies = policies
        self.rules = rules
        self.stop = stop
        self.clock = clock
        self.timers = Timers(ledger.engine)
        self.lease = timedelta(seconds=settings.escalation_lease_seconds)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.cursor = CursorLease(ledger.engine, CURSOR_NAME, self.holder, self.lease)
        self.totals = Summary()
        self.rates_checked_on: date | None = None
        telemetry = telemetry or Telemetry.offline(EscalationMetrics())
        self.metrics = telemetry.metrics
        self.health = telemetry.health
        self.health.totals = self._heartbeat_totals

    def _heartbeat_totals(self) -> dict[str, int]:
        totals = self.totals
        return {
            "customers": totals.customers,
            "decisions": sum(totals.decisions.values()),
            "ticks": totals.ticks,
            "failures": totals.failures,
        }

    def run(self) -> int:
        log.info("escalation.worker_started", holder=self.holder, batch_size=self.settings.escalation_batch_size)
        backoff = Backoff(self.settings.retry_max_seconds)
        while not self.stop.is_set():
            self.health.beat()
            self.check_rates()
            try:
                busy = self.run_once()
                if backoff.attempts:
                    log.info(DATABASE_AVAILABLE, service="escalation", retries=backoff.attempts)
                backoff.reset()
            except (LedgerUnavailable, LedgerConflict, DBAPIError) as exc:
                delay = backoff.next()
                log.warning(DATABASE_UNAVAILABLE, service="escalation", error=first_line(exc), retry_in=round(delay, 2))
                wait_beating(self.stop, delay, self.health)
                continue
            if not busy:
                wait_beating(self.stop, self.settings.escalation_poll_ms / 1000, self.health)
        try:
            self.cursor.release()
        except DBAPIError as exc:  # the lease lapses by itself
            log.debug("escalation.release_failed", error=str(exc))
        log.info(
            "escalation.worker_stopped",
            customers=self.totals.customers,
            decisions=sum(self.totals.decisions.values()),
            ticks=self.totals.ticks,
        )
        return 0

    def check_rates(self) -> None:
        """Warn, once a day, of a semester without a reference rate (start-up counts as the first check)."""
        today = self.clock().date()
        if today == self.rates_checked_on:
            return
        self.rates_checked_on = today
        if isinstance(self.rules.rates, RateTable):
            warn_missing_rates(self.rules.rates, today)
            for table in self.rules.rates.tables():
                self.metrics.rate_days_left.labels(table).set(days_left(self.rules.rates, today, table))

    def run_once(self) -> int:
        """One round of timers then log; returns how much work it found (0: idle)."""
        return self.fire_due_timers() + self.follow_log()

    def fire_due_timers(self) -> int:
        now = self.clock()
        due = self.timers.claim_due(now, self.settings.escalation_batch_size, self.lease)
        if due and not self.stop.is_set():  # else the claimed timers fire again when their lease ends
            self._evaluate([(timer.tenant, timer.customer_id) for timer in due], now, "timer")
        return len(due)

    def follow_log(self) -> int:
        cursor = self.cursor.acquire(self.clock())
        if cursor is None:
            return 0  # another worker follows the log
        batch, after = self.ledger.read_all(cursor, self.settings.escalation_batch_size)
        if not batch:
            return 0
        touched = list(dict.fromkeys((e.tenant, e.customer_id) for e in batch if e.event_type in TRIGGERS))
        if self.stop.is_set():
            return len(batch)  # cursor not advanced: the next holder evaluates this batch again
        if touched:
            self._evaluate(touched, self.clock(), "ledger")
        if not self.cursor.advance(after, self.clock()):
            log.warning("escalation.cursor_lost", holder=self.holder)
        return len(batch)

    def _evaluate(self, keys: list[StreamKey], as_of: datetime, trigger: Trigger) -> None:
        started = time.monotonic()
        results = evaluate_guarded(
            self.ledger, self.policies, keys, as_of, rules=self.rules, timers=self.timers, trigger=trigger
        )
        self.metrics.batch(len(keys), time.monotonic() - started)
        failed = [(r.tenant, r.customer_id) for r in results if isinstance(r, Failure)]
        self.metrics.evaluations["failed"].inc(len(failed))
        self.metrics.evaluations["ok"].inc(len(results) - len(failed))
        if failed:
            # Look at the customers again after a lease: the cause may be gone by then (a fixed configuration).
            now = self.clock()
            with self.ledger.engine.begin() as conn:
                self.timers.retry_many(conn, failed, now + self.lease, now)
            self.totals.failures += len(failed)
        for result in results:
            if isinstance(result, Failure):
                continue
            self.totals.add(result)
            for decision in result.applied:
                self.metrics.decisions(decision.event_type)
            log.debug(
                "escalation.evaluated",
                tenant=result.tenant,
                customer=result.customer_id,
                trigger=trigger,
                applied=len(result.applied),
                next_due=result.next_due.isoformat() if result.next_due else None,
            )


def evaluate_guarded(
    ledger: Ledger,
    policies: PolicyBooks,
    keys: list[StreamKey],
    as_of: datetime,
    *,
    rules: Rules,
    timers: Timers,
    trigger: Trigger,
    skip_unchanged: bool = False,
) -> list[EvaluationResult | Failure]:
    """:func:`evaluate_many`, with each customer's failure logged (tenant, customer, reason) and returned, never raised.

    An outage (the database down, a stream that kept moving) is no customer's fault and is raised as it is.
    """
    results = evaluate_many(
        ledger, policies, keys, as_of, rules=rules, timers=timers, trigger=trigger, skip_unchanged=skip_unchanged
    )
    for failure in results:
        if isinstance(failure, Failure):
            # One customer's problem (corrupt data, a bug) must not stop everyone else's reminders.
            log.error(
                "escalation.evaluation_failed",
                tenant=failure.tenant,
                customer=failure.customer_id,
                trigger=trigger,
                as_of=as_of.isoformat(),
                error=failure.reason,
                exc_info=failure.error,
            )
    return results


def tick(
    ledger: Ledger,
    policies: PolicyBooks,
    rules: Rules,
    at: datetime,
    *,
    tenant: str | None = None,
    due_only: bool = False,
    batch_size: int = 200,
) -> Summary:
    """Evaluate every customer (or those whose timer is due) at ``at``: backfills, tests, ``relance clock tick``.

    Customers are evaluated ``batch_size`` at a time (:func:`evaluate_many`). A sweep of every customer skips those
    for whom nothing changed since their last evaluation (the rule: :mod:`services.escalation.evaluations`); they
    count in ``Summary.unchanged``. A customer whose evaluation fails is listed in ``Summary.failed`` and the others
    are evaluated all the same.
    """
    timers = Timers(ledger.engine)
    summary = Summary()
    if due_only:
        keys = [(t.tenant, t.customer_id) for t in timers.all(tenant) if t.due_at <= at]
    else:
        keys = ledger.streams(tenant)
    trigger: Trigger = "timer" if due_only else "manual"
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        results = evaluate_guarded(
            ledger, policies, chunk, at, rules=rules, timers=timers, trigger=trigger, skip_unchanged=not due_only
        )
        for result in results:
            if isinstance(result, Failure):
                summary.failures += 1
                summary.failed.append(result)
            else:
                summary.add(result)
    return summary


def run(settings: Settings, *, stop: threading.Event | None = None) -> int:
    """Run one escalation worker until SIGTERM/SIGINT (or until ``stop`` is set); returns the exit status."""

    telemetry = Telemetry.of(settings, EscalationMetrics(), broker=False)

    def start(engine: Engine, stop: threading.Event) -> int:
        if telemetry.side is not None:
            telemetry.refresh(escalation_gauges(telemetry.side, telemetry.metrics, CURSOR_NAME))
        books, rules = policy_books(settings), real_rules(settings)
        return EscalationWorker(settings, Ledger(engine), books, rules, stop, telemetry=telemetry).run()

    return run_worker(settings, "escalation", stop, start, telemetry)


# ---------------------------------------------------------------------------------------------------- composition
def policy_books(settings: Settings) -> PolicyBooks:
    """Each tenant's policy book, from ``RELANCE_POLICY_DIR`` or the shipped one (errors stop the start-up)."""
    from services.escalation.policy import PolicyLibrary

    return PolicyLibrary.load(settings.policy_dir).for_tenant


def real_rules(settings: Settings, rates: RateTable | None = None) -> Rules:
    """The policy engine and the reference rate table (``RELANCE_RATES_FILE`` extends the shipped one), or ``rates``."""
    from services.escalation import engine

    table = RateTable.default(settings.rates_file) if rates is None else rates
    return Rules(decide=engine.decide, next_due=engine.next_due, rates=table, basis=rules_basis(table))
