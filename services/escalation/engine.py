"""The dunning engine: what should happen to a customer now, as a pure function of (state, policy, as-of instant).

:func:`decide` returns the decisions due at ``as_of`` as events for the customer's stream; :func:`next_due` says when
the next one will be, for a durable timer. Neither does any I/O, reads the clock or keeps anything between calls: a
replay of the same ledger under the same policy at the same instants yields the same decisions, with the same ids.

Deciding twice is harmless. Every decision's ``event_id`` derives from the tenant, the customer and the decision's
subject (an invoice and a level, a reminder's invoices, a block episode, a promise), never from the time of the
evaluation or the policy version, so a redelivered trigger or a second worker produces a duplicate that the ledger
ignores, and a changed policy cannot send a level again. Once the decisions are folded into the state
(:mod:`shared.ledger.state`), deciding again finds nothing new.

The rules, in the order a credit manager would apply them. An invoice *reaches* its levels by the calendar; what
the customer is *told* is kept apart (the fold's notices and contacts, read by :mod:`services.escalation.contacts`):
a level reached and not yet told is a pending contact.

* **The ladder.** Level ``k`` of an invoice falls due on ``step_date(anchor, level)``: the anchor is the due date
  (a payment plan's first unpaid instalment for the invoices it covers), plus the policy's grace days after the due
  date, moved to the next business day. Levels before the due date (negative offsets: courtesy notices) are only ever
  sent before it.
  ``escalation.level_reached`` is decided on the step's day and the level's actions (interest, fee, credit block,
  hand-over) apply then, whether or not the customer can be told that day.
* **Catch-up without a flood.** An invoice moves straight to the highest level due now; the levels passed over
  (worker down, invoice recorded late) are listed as ``skipped`` and their actions (interest, fee, credit block)
  still apply, but no message is sent for them: only the firmest level with a channel is told.
* **Leaving the ladder.** A settled, cancelled or disputed invoice has no step and is never in a reminder. Disputes
  pause only the disputed invoice.
* **Re-anchoring.** When something happens to an invoice after its current level was reached, the ladder restarts
  from it instead of catching up: after a partial payment or credit note the next level comes the ladder's own
  interval after that payment; after a pause ends (dispute resolved, promise past its grace) the next level is due
  at once, and the ones after it keep the ladder's spacing.
* **Promises.** A promise to pay pauses the invoices it names (all open invoices of its currency when it names none)
  from its record until the promised date plus ``promise_grace_days``. On the promised date a ``check_promise`` task
  is created unless the promise is already kept; the day after the grace, an unkept promise gives a
  ``promise_broken`` task and the next level. A promise is kept when the payments and credit notes dated from its
  record to the end of its grace add up to the promised amount, or when nothing it covers is still open.
* **The customer's pause** (``customer.paused``, :func:`shared.ledger.tasks.paused_on`). While it holds, nothing
  contacts or sanctions the customer: no level, reminder, claims statement, fee, interest figure, credit block,
  hand-over or task (a block that no longer holds is still lifted). The timer is set for the day after its
  ``until``; then, or when it is resumed, the ladder resumes like after a promise: the next level is due at once for
  the invoices issued before its end, and the ones after it keep the ladder's spacing.
* **Payment plans.** The invoices of a plan are due on the first instalment not yet covered by what was paid on them
  since (plan total less what they still owe); an instalment unpaid past its date escalates from the invoice's
  current level onwards.
* **What is pending.** An invoice's pending level is the firmest level with a channel (``email``, ``letter``,
  ``phone``; ``none`` tells nothing) it has reached, when firmer than every level already told for it (written or by
  phone). A courtesy notice (negative offset) is pending only before the due date, any other level only after it
  (a plan's instalment moves it). Paused and held invoices have nothing pending.
* **Cadence.** The customer is contacted (a reminder in any currency, or a ``phone_call`` task) only on a day the
  policy's cadence allows: at least ``min_days_between_contacts`` days after its last contact day (the firmest
  pending level's ``min_days_since_contact`` instead, when it has one), at most ``max_contacts`` contact days in any
  ``window_days`` days, and from the local ``send_hour``. A day that already is a contact day stays open. What waits
  merges into the next allowed contact, each invoice then told the level it has reached by then.
* **The message.** On a contact day, per currency: the invoices pending at a ``phone`` level make one
  ``phone_call`` task; the written ones one reminder (at most one per currency and day), at the firmest pending
  written level. It demands (``lines``) only the invoices pending at that level; the other overdue invoices of the
  currency still on the ladder are listed apart (``also``) at their own level, each with the written notices already
  sent for it (day and reminder), never demanded again. So each written level is sent once per invoice, no invoice
  is listed gentler than what it reached or was told (a call counts), and an invoice not yet due is in no demand: a
  courtesy notice lists only its own invoices, with no ``also``. A younger invoice may get a gentler message of its
  own.
* **Minimum amount.** When the outstanding total a reminder would list is below the policy's minimum for the
  currency, nothing moves and nothing is told, before or after the due date (courtesy notices included); the
  invoices catch up when the total reaches it.
* **Money: claims owed from the first day late** (:mod:`services.escalation.claims`). ``fee.charged`` is the fixed
  indemnity, once per late invoice, the first evaluation after its due date (or once it is settled late): the
  fixed sum of the policy's law in its own currency (``law.fixed_fee``). ``interest.computed`` carries the total
  late interest owed on a late invoice through the as-of date (it replaces the previous figure) whenever the
  invoice moves a level or a message lists it;
  ``claim.fixed`` fixes it for good once the principal is settled late. A level with ``charge_interest`` /
  ``charge_fee`` means the claim is *claimed* from that level: a reminder line's ``interest`` and ``fee`` are the
  claimed amounts still owed, and claimed claims still owed on settled invoices ride in the next message's
  ``claims``, with one ``claim_owed`` task per such invoice.
* **Claims statement.** Claimed claims still owed on settled invoices that no message has asked for since the
  settlement are asked for once: on the next contact day the cadence allows (at the cadence's own interval, from the
  send hour, a contact like any), per currency, a ``reminder.requested`` at the level ``claims`` (no ladder's), with
  the template ``claims``, no ``lines``, the claims in ``claims`` and ``totals.claims``. When a reminder of the
  currency goes that day anyway, it carries them and no statement goes. A claim asked for is never stated again.
  Claims below the policy's ``minimum_overdue`` for their currency get no statement of their own: they stay owed and
  ride on the customer's next message.
* **Credit block.** Blocked while an overdue, undisputed invoice has reached a level with ``block_credit``, or
  (``block_over_credit_limit``) while the overdue amount in the credit limit's currency exceeds the limit; one
  ``credit.blocked`` per episode and one ``credit.unblocked`` when neither holds any more.
* **Hand-over.** An invoice reaching a level with ``hand_over`` leaves the ladder: a ``hand_over`` task and one
  ``collection.handed_over`` (the outbox's ``erp.collection_handover``, with the file's figures) for the invoices of
  a currency handed over together; it reaches no further level, its hand-over notice (when that level is written)
  is sent once, and then no reminder lists it, in ``lines`` or ``also``. Invoices issued later follow their own ladder.
* **Tasks.** ``claim_owed`` once per settled invoice left owing claimed claims; ``payment_behaviour_changed`` once per
  episode in which the mean lateness of the customer's last :data:`RECENT_PAYMENTS` payments exceeds the mean of the
  (at least :data:`MIN_HISTORY`) earlier ones by more than :data:`BEHAVIOUR_MARGIN_DAYS` days.
* **One invoice never silences the others.** An invoice the engine cannot place on the ladder (its dates, or those
  of a payment or plan applied to it, put a step outside the calendar: a due date of 9999-12-31 or 0001-01-01), or
  whose late interest cannot be computed (the rate table has no reference rate for a semester of its delay), is held:
  it neither moves nor appears in a reminder, whose figures would be wrong, but still counts as overdue for the
  credit block. It gets one task per reason (``invoice_dates_invalid``, ``interest_unavailable`` naming the
  semester), never one per evaluation, and the customer's other invoices go on as usual. An invoice held for a
  missing rate is looked at again every day, so it resumes once the rate is added; the engine never guesses a rate.

Days are the tenant's calendar days, in the policy's ``timezone``: a step due on day D is due from local midnight on
D, ``today`` is the local date of the as-of instant, and :func:`next_due` answers with the next local midnight or
send hour as a UTC instant.

One module, over the usual size, on purpose: the rules above are the steps of one evaluation (:class:`_Evaluation`)
that read and update the same per-invoice tracks in the order listed, and split apart they would have to pass that
evaluation's state around; the policy, the calendar, the interest and the contact history (cadence, what was told)
each live in a module of their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from services.escalation.calendar import ladder
from services.escalation.claims import ClaimsView
from services.escalation.claims import allocation as claim_allocation
from services.escalation.contacts import ContactDays, Telling, local_day, local_instant, notices, told_index
from services.escalation.interest import (
    InterestResult,
    MissingReferenceRate,
    RateTable,
    late_interest,
    needs_rates,
    outstanding_timeline,
)
from services.escalation.law import reminder_law
from services.escalation.model import Decision, Level, Policy
from shared.contracts import events
from shared.ledger.state import CustomerState, Escalation, Invoice
from shared.ledger.tasks import pause_until, paused_on

ZERO = Decimal(0)
RECENT_PAYMENTS = 3  # payments that make the "recent" behaviour
MIN_HISTORY = 5  # earlier payments needed before a change of behaviour means anything
BEHAVIOUR_MARGIN_DAYS = 15  # recent mean lateness above the historical mean by more than this: a warning sign
DATES_TASK = "invoice_dates_invalid"  # an invoice whose ladder falls outside the calendar
INTEREST_TASK = "interest_unavailable"  # an invoice whose late interest needs a rate the table lacks
HAND_OVER_NOTE = "hand over to a collection agency or litigation"


# --------------------------------------------------------------------------------------------------- public API
def decide(state: CustomerState, policy: Policy, as_of: datetime, rates: RateTable | None) -> list[Decision]:
    """The decisions due for this customer at ``as_of``, as events to append to its stream (possibly none)."""
    return _Evaluation(state, policy, as_of, rates).decide()


def next_due(state: CustomerState, policy: Policy, as_of: datetime, rates: RateTable | None = None) -> datetime | None:
    """The next instant after ``as_of`` at which :func:`decide` may have something new to say, None if none.

    Only time-driven changes are foreseen here; anything the ERP sends (payment, dispute, ...) triggers an evaluation
    of its own. The answer may be early (a timer firing with nothing to do is harmless), never late. With ``rates``,
    an invoice held for a missing rate brings the next evaluation to the next day.
    """
    evaluation = _Evaluation(state, policy, as_of, rates)
    moments = [m for m in evaluation.upcoming() if m > evaluation.as_of]
    if evaluation.paused:  # nothing is claimed while the customer is paused: the ladder resumes the day after
        return min(moments, default=None)
    moments += [
        m for d in evaluation.claims.upcoming() if (m := local_instant(d, 0, evaluation.zone)) > evaluation.as_of
    ]
    return min(moments, default=None)


def decision_id(tenant: str, customer_id: str, *subject: str) -> str:
    """A decision's deterministic event id: the same subject always gives the same id."""
    digest = hashlib.sha256("\x1f".join((tenant, customer_id, *subject)).encode("utf-8")).hexdigest()
    return f"esc-{digest[:32]}"


# --------------------------------------------------------------------------------------------------- internals
@dataclass
class _Track:
    """One open invoice seen from the ladder at the evaluation day."""

    invoice: Invoice
    due: date  # due date for the ladder: the invoice's, or its plan's first unpaid instalment
    paused: str | None  # "dispute", "promise" or "customer" (the customer's pause) while the invoice must not move
    current: int  # index in the policy's ladder of the level reached, -1 when none
    anchor: date  # the due date the ladder is computed from, after re-anchoring
    target: int | None = None  # level reached now
    skipped: list[int] = field(default_factory=list)
    actions: set[str] = field(default_factory=set)  # actions in force after this evaluation
    steps: list[date] = field(default_factory=list)  # the day each level of the ladder falls due, from the anchor
    hold: _Hold | None = None  # why the engine cannot evaluate this invoice (then paused is "held")
    handed: bool = False  # handed over: the ladder has ended for it
    told: int = -1  # the firmest level addressed to the customer for it (written or by phone)
    reached: int = -1  # the level it stands at once this evaluation's moves are made
    pending: int | None = None  # the level reached and not yet told, when it is to be told now

    @property
    def invoice_id(self) -> str:
        return self.invoice.invoice_id

    @property
    def currency(self) -> str:
        return self.invoice.currency


@dataclass(frozen=True)
class _Hold:
    kind: str  # the task kind: DATES_TASK or INTEREST_TASK
    subject: tuple[str, ...]  # what makes the task unique, besides the kind
    note: str  # the reason, in a credit manager's words
    semester: date | None = None  # the semester whose rate is missing


@dataclass(frozen=True)
class _Promise:
    promise_id: str
    currency: str
    amount: Decimal
    promised: date
    deadline: date  # last day of the pause: promised date plus grace
    recorded: date
    invoice_ids: tuple[str, ...]
    kept: bool


class _Evaluation:
    def __init__(self, state: CustomerState, policy: Policy, as_of: datetime, rates: RateTable | None) -> None:
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")
        self.state = state
        self.policy = policy
        self.rates = rates
        self.as_of = as_of.astimezone(UTC)
        self.zone = ZoneInfo(policy.timezone)
        self.local = as_of.astimezone(self.zone)
        self.today = self.local.date()
        self.levels = policy.levels
        self.contacted = ContactDays.of(state.dunning.contacts, self.zone)
        self.telling = Telling(policy.levels, policy.cadence, self.today)
        self.promises = self._promises()
        self.paused = paused_on(state, self.today)  # the customer's pause holds today: nothing contacts or sanctions
        self.results: dict[str, InterestResult] = {}  # interest owed through today, computed while tracking
        self.tracks = [self._track(invoice) for invoice in state.open_invoices() if invoice.outstanding > 0]
        self.decisions: list[Decision] = []
        self.interest: dict[str, Decimal] = {}  # interest computed by this evaluation (or already today)
        task_id = partial(decision_id, state.tenant, state.customer_id, "task")
        self.claims = ClaimsView(state, policy, self.today, rates, task_id, self.decisions)

    # ----------------------------------------------------------------------------------------------- deciding
    def decide(self) -> list[Decision]:
        if self.paused:  # only lifting a block that no longer holds: it sanctions nobody
            self._credit_block()
            return self.decisions
        moving = self._move()
        self._money(moving)
        self._contacts()
        self._hand_over(moving)
        self._credit_block()
        self._promise_tasks()
        self._behaviour_task()
        self._hold_tasks()
        for task in self.claims.tasks(self.decisions):
            self._emit(task.model, task.subject, **task.fields)
        return self.decisions

    def _emit(self, model: type[events.RelanceEvent], subject: Iterable[str], **fields: Any) -> str:
        """Decide one event of ``model``: its fields, then the policy and the instant it was decided under."""
        event_id = decision_id(self.state.tenant, self.state.customer_id, model.TYPE, *subject)
        meta = {"policy": self.policy.name, "policy_version": self.policy.version, "as_of": self.as_of}
        event = model(**fields, **meta)
        self.decisions.append(Decision(event_id, event))
        return event_id

    def _move(self) -> list[_Track]:
        """Pick the level due now for every invoice that may move, currency by currency, and record it."""
        moving: list[_Track] = []
        for currency in sorted({t.currency for t in self.tracks}):
            candidates = [t for t in self.tracks if t.currency == currency and t.target is not None]
            if not candidates:
                continue
            listed = self._listed(currency, candidates)
            if sum((t.invoice.outstanding for t in listed), ZERO) < self.policy.minimum_overdue.get(currency, ZERO):
                continue
            moving.extend(candidates)
        for track in moving:
            assert track.target is not None
            level = self.levels[track.target]
            skipped = [self.levels[k] for k in track.skipped]
            new_actions = sorted({a for lv in [*skipped, level] for a in lv.actions})
            self._emit(
                events.LevelReached,
                (track.invoice_id, level.key),
                invoice_id=track.invoice_id,
                currency=track.currency,
                level=level.key,
                offset_days=level.offset_days,
                skipped=[lv.key for lv in skipped],
                actions=new_actions,
                channel=level.channel,
                due_date=track.due,
                anchor=track.anchor,
                step_date=track.steps[track.target],
                reached_on=self.today,
                outstanding=track.invoice.outstanding,
            )
            track.reached = track.target
            track.handed = track.handed or "hand_over" in track.actions
        return moving

    def _money(self, moving: list[_Track]) -> None:
        late = [t.invoice for t in self.tracks if t.paused in (None, "promise") and t.due < self.today]
        for charge in self.claims.charges(late):
            self._emit(charge.model, charge.subject, **charge.fields)
        for track in moving:
            self._accrue(track)

    def _accrue(self, track: _Track) -> None:
        """Record the running interest of a late invoice; one whose rate is missing waits, unless it is claimed
        (then :meth:`_track` held it)."""
        if track.invoice.due_date >= self.today:
            return
        if self.rates is None and self.policy.interest.basis != "contractual":
            return
        try:
            self._charge_interest(track)
        except MissingReferenceRate:
            return

    def _charge_interest(self, track: _Track) -> None:
        if track.invoice_id in self.interest:
            return
        record = self.state.escalations.get(track.invoice_id)
        if record is not None and record.interest_through == self.today and record.interest is not None:
            self.interest[track.invoice_id] = record.interest
            return
        result = self._interest_owed(track.invoice)
        self.interest[track.invoice_id] = result.amount
        self._emit(
            events.InterestComputed,
            (track.invoice_id, self.today.isoformat()),
            invoice_id=track.invoice_id,
            currency=track.currency,
            amount=result.amount,
            through=self.today,
            days=result.days,
            **claim_allocation(self.policy),
        )

    def _interest_owed(self, invoice: Invoice) -> InterestResult:
        """Late interest owed on the invoice through today (raises :class:`MissingReferenceRate`)."""
        result = self.results.get(invoice.invoice_id)
        if result is None:
            movements = [(self.state.credits[key].on, amount) for key, amount in invoice.allocations.items()]
            timeline = outstanding_timeline(invoice.amount, movements, min(invoice.issue_date, invoice.due_date))
            rule = self.policy.interest
            result = late_interest(timeline, invoice.due_date, self.today, rule, self.rates, invoice.currency)
            self.results[invoice.invoice_id] = result
        return result

    # ----------------------------------------------------------------------------------------------- contacts
    def _contacts(self) -> None:
        """On a day the cadence allows, tell the customer every level reached and not yet told, currency by
        currency: a phone_call task for the calls, one reminder for the written levels."""
        waiting = self._waiting()
        statements = self.claims.unasked()
        if not (waiting or statements) or not self._may_contact(waiting):
            return
        reminded: set[str] = set()
        for currency in sorted({t.currency for t in waiting}):
            mine = [t for t in waiting if t.currency == currency]
            calls = [t for t in mine if not self._level(t.pending).written]
            if calls:
                self._phone(currency, calls)
            written = [t for t in mine if self._level(t.pending).written]
            if written and not self._reminded_today(currency):
                self._reminder(currency, written)
                reminded.add(currency)
        for currency in statements:  # a reminder of the currency that goes today carries them instead
            if currency not in reminded and not self._reminded_today(currency):
                self._statement(currency)

    def _statement(self, currency: str) -> None:
        """The claims statement of the currency: no invoice demanded, the claims owed on invoices already settled
        that no message asked for yet, asked once (the fold then knows them asked)."""
        claims, totals, results = self.claims.statement(currency)
        subject = (currency, events.CLAIMS_STATEMENT, *sorted(f"{c.invoice_id}@{c.kind}" for c in claims))
        self._emit(
            events.ReminderRequested,
            subject,
            reminder_id=decision_id(self.state.tenant, self.state.customer_id, "reminder", *subject),
            level=events.CLAIMS_STATEMENT,
            channel="email",
            copy_channels=[],
            template=events.CLAIMS_STATEMENT,
            language=self._language(),
            currency=currency,
            invoice_ids=[],
            lines=[],
            totals=totals,
            claims=claims,
            **reminder_law(self.policy, results),
        )

    def _reminder(self, currency: str, written: list[_Track]) -> None:
        """The currency's message: it demands the invoices pending at its level, the firmest pending written one;
        the other overdue invoices on the ladder are listed apart (``also``) at their own level."""
        top = max(t.pending for t in written if t.pending is not None)
        level = self.levels[top]
        demanded = [t for t in written if t.pending == top]
        also = [] if level.offset_days < 0 else [t for t in self._on_ladder(currency) if t not in demanded]
        for track in [*demanded, *also]:
            if "charge_interest" in track.actions:
                self._charge_interest(track)
        lines = [self._line(t, level.key) for t in demanded]
        claims, totals = self.claims.message(currency, self._totals(demanded, lines))
        subject = (currency, level.key, *sorted(f"{t.invoice_id}@{level.key}" for t in demanded))
        reminder_id = decision_id(self.state.tenant, self.state.customer_id, "reminder", *subject)
        extra: dict[str, Any] = {}
        if also:
            extra["also"] = [self._line(t, self.telling.shown(t.reached, t.told, t.due)) for t in also]
        self._emit(
            events.ReminderRequested,
            subject,
            reminder_id=reminder_id,
            level=level.key,
            channel=level.channel,
            copy_channels=sorted(level.copy_channels),
            template=level.template,
            language=self._language(),
            currency=currency,
            invoice_ids=[t.invoice_id for t in demanded],
            lines=lines,
            totals=totals,
            **claims,
            **extra,
            **reminder_law(
                self.policy,
                [self._interest_owed(t.invoice) for t in [*demanded, *also] if t.invoice_id in self.interest],
            ),
        )

    def _phone(self, currency: str, calls: list[_Track]) -> None:
        level = self.levels[max(t.pending for t in calls if t.pending is not None)]
        subject = (currency, level.key, *sorted(f"{t.invoice_id}@{self._key(t.pending)}" for t in calls))
        self._task("phone_call", subject, self.today, calls, currency, f"level {level.key}", level=level.key)

    def _hand_over(self, moving: list[_Track]) -> None:
        """Invoices reaching a level with ``hand_over``: a task, and the file for the ERP or the agency."""
        for currency in sorted({t.currency for t in moving}):
            handed = [
                t
                for t in moving
                if t.currency == currency and any("hand_over" in self._acts(k) for k in [*t.skipped, t.target])
            ]
            if not handed:
                continue
            ids = sorted(t.invoice_id for t in handed)
            self._task("hand_over", (currency, *ids), self.today, handed, currency, HAND_OVER_NOTE)
            for track in handed:
                if "charge_interest" in track.actions:
                    self._charge_interest(track)
            lines = [self._line(t, self.telling.shown(t.reached, t.told, t.due)) for t in handed]
            self._emit(
                events.CollectionHandedOver,
                (currency, *ids),
                handover_id=decision_id(self.state.tenant, self.state.customer_id, "handover", currency, *ids),
                currency=currency,
                invoice_ids=[t.invoice_id for t in handed],
                lines=lines,
                totals=self._totals(handed, lines),
            )

    def _waiting(self) -> list[_Track]:
        """The invoices with a level to tell, in currencies whose outstanding total reaches the minimum."""
        for track in self.tracks:
            if track.paused is None:
                track.pending = self.telling.pending(track.reached, track.told, track.due, track.handed)
        waiting = [t for t in self.tracks if t.pending is not None]
        return [t for t in waiting if not self._below_minimum(t.currency, waiting)]

    def _may_contact(self, waiting: list[_Track]) -> bool:
        if self.local.hour < self.policy.send_hour:
            return False
        return self.contacted.allows(self.today, self._interval(waiting), self.policy.cadence)

    def _interval(self, waiting: list[_Track]) -> int:
        """The interval the contact asks for: the firmest pending level's, the cadence's for a claims statement."""
        if not waiting:
            return self.policy.cadence.min_days_between_contacts
        return self.telling.interval(max(t.pending for t in waiting if t.pending is not None))

    def _next_contact(self, waiting: list[_Track]) -> datetime:
        """When the levels waiting may be told: today's send hour if it is still to come, else the first day after
        today the cadence allows (what could be told today was told by :meth:`decide`)."""
        day = self.today if self.local.hour < self.policy.send_hour else _plus(self.today, 1)
        day = self.contacted.next_allowed(day, self._interval(waiting), self.policy.cadence)
        return local_instant(day, self.policy.send_hour, self.zone)

    def _reminded_today(self, currency: str) -> bool:
        latest = self.state.reminded.get(currency)
        if latest is None:
            return False
        at = latest.get("at")
        return (local_day(at, self.zone) if at else date.fromisoformat(latest["on"])) == self.today

    def _below_minimum(self, currency: str, tracks: list[_Track]) -> bool:
        listed = self._listed(currency, [t for t in tracks if t.currency == currency])
        return sum((t.invoice.outstanding for t in listed), ZERO) < self.policy.minimum_overdue.get(currency, ZERO)

    def _on_ladder(self, currency: str) -> list[_Track]:
        """The overdue invoices of the currency a message may list apart: not paused, held or handed over."""
        return [
            t
            for t in self.tracks
            if t.currency == currency and t.paused is None and not t.handed and t.due < self.today
        ]

    def _level(self, index: int | None) -> Level:
        assert index is not None
        return self.levels[index]

    def _totals(self, tracks: list[_Track], lines: list[events.ReminderLine]) -> events.ReminderTotals:
        return events.ReminderTotals(
            outstanding=sum((t.invoice.outstanding for t in tracks), ZERO),
            interest=sum((line.interest for line in lines), ZERO),
            fees=sum((line.fee for line in lines if line.fee_currency is None), ZERO),
        )

    def _acts(self, index: int | None) -> frozenset[str]:
        return frozenset() if index is None else frozenset(self.levels[index].actions)

    def _key(self, index: int | None) -> str:
        return "" if index is None else self.levels[index].key

    def _line(self, track: _Track, level: str | None) -> events.ReminderLine:
        """The invoice as a message lists it, at ``level``, with the written levels sent for it before."""
        invoice = track.invoice
        record = self.state.escalations.get(track.invoice_id)
        self._accrue(track)
        interest, fee, fee_currency = self.claims.line(invoice, track.actions, self.interest.get(track.invoice_id))
        return events.ReminderLine(
            invoice_id=invoice.invoice_id,
            number=invoice.number,
            issue_date=invoice.issue_date,
            due_date=track.due,
            amount=invoice.amount,
            outstanding=invoice.outstanding,
            days_late=max(0, (self.today - track.due).days),
            interest=interest,
            fee=fee,
            **fee_currency,
            **({} if level is None else {"level": level}),
            **({"notices": sent} if (sent := notices(record, self.zone)) else {}),
        )

    def _language(self) -> str:
        profile = self.state.profile or {}
        language = profile.get("language")
        return language if isinstance(language, str) and language else self.policy.language

    def _task(
        self,
        kind: str,
        subject: Iterable[str],
        due_on: date,
        tracks: list[_Track],
        currency: str,
        note: str,
        semester: date | None = None,
        level: str | None = None,
    ) -> None:
        task_id = decision_id(self.state.tenant, self.state.customer_id, "task", kind, *subject)
        if task_id in self.state.tasks:
            return
        extra: dict[str, Any] = {} if semester is None else {"semester": semester}
        if level is not None:
            extra["level"] = level
        self._emit(
            events.TaskCreated,
            (kind, *subject),
            task_id=task_id,
            kind=kind,
            due_on=due_on,
            invoice_ids=[t.invoice_id for t in tracks],
            currency=currency,
            amount_at_risk=sum((t.invoice.outstanding for t in tracks), ZERO),
            note=note,
            **extra,
        )

    def _hold_tasks(self) -> None:
        """One task per held invoice and reason: the same reason on the next evaluation finds the task recorded."""
        for track in self.tracks:
            hold = track.hold
            if hold is None:
                continue
            self._task(hold.kind, hold.subject, self.today, [track], track.currency, hold.note, semester=hold.semester)

    # ----------------------------------------------------------------------------------------------- credit block
    def _credit_block(self) -> None:
        overdue = self._overdue()
        by_level = any("block_credit" in t.actions for t in self.tracks if t.paused != "dispute" and t.due < self.today)
        limit: dict[str, Any] | None = (self.state.profile or {}).get("credit_limit")
        over_limit = (
            self.policy.block_over_credit_limit
            and limit is not None
            and overdue.get(limit["currency"], ZERO) > Decimal(limit["amount"])
        )
        block = self.state.credit_block
        if block is None and (by_level or over_limit) and not self.paused:
            episode = str(self.state.blocks + 1)
            block_id = decision_id(self.state.tenant, self.state.customer_id, "block", episode)
            extra = {}
            if limit:
                extra["credit_limit"] = events.CreditLimit(amount=limit["amount"], currency=limit["currency"])
            self._emit(
                events.CreditBlocked,
                (episode,),
                block_id=block_id,
                reason="level" if by_level else "credit_limit",
                overdue=dict(sorted(overdue.items())),
                **extra,
            )
        elif block is not None and not (by_level or over_limit):
            self._emit(
                events.CreditUnblocked,
                (block["block_id"],),
                block_id=block["block_id"],
                reason="cleared",
                overdue=dict(sorted(overdue.items())),
            )

    def _overdue(self) -> dict[str, Decimal]:
        """Per currency: what undisputed invoices owe past their (plan) due date."""
        result: dict[str, Decimal] = {}
        for track in self.tracks:
            if track.paused != "dispute" and track.due < self.today:
                result[track.currency] = result.get(track.currency, ZERO) + track.invoice.outstanding
        return result

    # ----------------------------------------------------------------------------------------------- tasks
    def _promise_tasks(self) -> None:
        for promise in self.promises:
            if promise.kept:
                continue
            covered = [t for t in self.tracks if t.invoice_id in self._covered(promise)]
            if not covered:
                continue
            if promise.promised <= self.today <= promise.deadline:
                note = f"promise {promise.promise_id}: {promise.amount} {promise.currency} by {promise.promised}"
                self._task("check_promise", (promise.promise_id,), promise.promised, covered, promise.currency, note)
            elif self.today > promise.deadline:
                note = f"promise {promise.promise_id} of {promise.amount} {promise.currency} by {promise.promised}"
                resumed = promise.deadline + timedelta(days=1)
                self._task("promise_broken", (promise.promise_id,), resumed, covered, promise.currency, note)

    def _behaviour_task(self) -> None:
        episode = self._behaviour_episode()
        if episode is None:
            return
        start, currency, recent, history = episode
        tracks = [t for t in self.tracks if t.currency == currency and t.paused != "dispute"]
        note = f"mean days late of the last {RECENT_PAYMENTS} payments {recent:.1f}, before {history:.1f}"
        self._task("payment_behaviour_changed", (start,), self.today, tracks, currency, note)

    def _behaviour_episode(self) -> tuple[str, str, Decimal, Decimal] | None:
        """The payment that opened the current run of markedly late payments, if the customer is in one."""
        observations: list[tuple[date, str, str, Decimal]] = []
        for credit in self.state.credits.values():
            if credit.kind != "payment" or not credit.applied or credit.on > self.today:
                continue
            weighted = ZERO
            total = ZERO
            for invoice_id, amount in credit.applied.items():
                invoice = self.state.invoices.get(invoice_id)
                if invoice is None:
                    continue
                weighted += amount * (credit.on - invoice.due_date).days
                total += amount
            if total > 0:
                observations.append((credit.on, credit.key, credit.currency, weighted / total))
        observations.sort()
        opened: tuple[str, str, Decimal, Decimal] | None = None
        for end in range(MIN_HISTORY + RECENT_PAYMENTS, len(observations) + 1):
            seen = observations[:end]
            recent = [o[3] for o in seen[-RECENT_PAYMENTS:]]
            history = [o[3] for o in seen[:-RECENT_PAYMENTS]]
            recent_mean = sum(recent, ZERO) / len(recent)
            history_mean = sum(history, ZERO) / len(history)
            if recent_mean > history_mean + BEHAVIOUR_MARGIN_DAYS:
                if opened is None:
                    opened = (seen[-1][1], seen[-1][2], recent_mean, history_mean)
            else:
                opened = None
        return opened

    # ----------------------------------------------------------------------------------------------- the ladder
    def _track(self, invoice: Invoice) -> _Track:
        due = self._plan_due(invoice)
        record = self.state.escalations.get(invoice.invoice_id)
        current = self._position(record)
        paused: str | None = None
        if invoice.invoice_id in self.state.disputes:
            paused = "dispute"
        elif self.paused:
            paused = "customer"
        elif any(
            p.recorded <= self.today <= p.deadline and invoice.invoice_id in self._covered(p) for p in self.promises
        ):
            paused = "promise"
        try:
            track = _Track(invoice, due, paused, current, self._anchor(invoice, due, current, record))
            track.steps = list(ladder(track.anchor, self.policy))
        except OverflowError:
            return self._held(invoice, due, current, record, self._dates_hold(invoice, due))
        if record is not None:
            track.actions = set(record.actions)
        track.handed = "hand_over" in track.actions
        track.told = told_index(record, self.levels, current)
        track.reached = current
        if paused is None:
            if not track.handed:
                self._target(track)
            if "charge_interest" in track.actions and self._can_compute_interest(record):
                try:
                    self._interest_owed(invoice)
                except MissingReferenceRate as exc:
                    return self._held(invoice, due, current, record, self._interest_hold(invoice, exc))
        return track

    def _held(self, invoice: Invoice, due: date, current: int, record: Escalation | None, hold: _Hold) -> _Track:
        track = _Track(invoice, due, "held", current, due, hold=hold, reached=current)
        if record is not None:
            track.actions = set(record.actions)
        track.handed = "hand_over" in track.actions
        return track

    def _can_compute_interest(self, record: Escalation | None) -> bool:
        """Whether interest may need computing today and the engine has what it takes (not for :func:`next_due`
        without a table, and not when today's figure is already recorded)."""
        if record is not None and record.interest_through == self.today and record.interest is not None:
            return False
        return self.rates is not None or not needs_rates(self.policy.interest)

    def _dates_hold(self, invoice: Invoice, due: date) -> _Hold:
        plan = f", payment plan instalment due {due.isoformat()}" if due != invoice.due_date else ""
        note = (
            f"invoice {invoice.number} cannot be placed on the dunning ladder: its dates (issued "
            f"{invoice.issue_date.isoformat()}, due {invoice.due_date.isoformat()}{plan}), or a payment dated on it, "
            "put a reminder step outside the calendar (years 1 to 9999); correct them in the ERP. The customer's "
            "other invoices are reminded as usual"
        )
        return _Hold(DATES_TASK, (invoice.invoice_id,), note)

    def _interest_hold(self, invoice: Invoice, missing: MissingReferenceRate) -> _Hold:
        semester = missing.semester
        note = (
            f"interest cannot be computed for invoice {invoice.number}: {missing.advice} to the file named by "
            "RELANCE_RATES_FILE. The invoice waits until then; the customer's other invoices are reminded as usual"
        )
        return _Hold(INTEREST_TASK, (invoice.invoice_id, semester.isoformat()), note, semester)

    def _position(self, record: Escalation | None) -> int:
        """The invoice's place on the (possibly changed) ladder: the level reached, or the last one at its offset."""
        if record is None or record.level is None:
            return -1
        keys = [lv.key for lv in self.levels]
        if record.level in keys:
            return keys.index(record.level)
        return sum(1 for lv in self.levels if lv.offset_days <= record.offset_days) - 1

    def _effective_offset(self, level: Level) -> int:
        return level.offset_days + (self.policy.grace_days if level.offset_days > 0 else 0)

    def _next_level(self, current: int, since: date, due: date) -> int | None:
        for k in range(current + 1, len(self.levels)):
            if self.levels[k].offset_days >= 0 or since < due:
                return k
        return None

    def _anchor(self, invoice: Invoice, due: date, current: int, record: Escalation | None) -> date:
        """The due date the ladder is computed from: later than ``due`` when something restarted it.

        Raises OverflowError when a date it derives falls outside the calendar.
        """
        reached = record.reached_on if record is not None else None
        anchor = due if record is None or record.anchor is None else max(due, record.anchor)
        for since, kind in self._interruptions(invoice, current):
            if reached is not None and since <= reached:
                continue
            if kind == "payment":
                # The ladder restarts as if the current level had been reached on the payment day.
                anchor = max(anchor, since - timedelta(days=self._effective_offset(self.levels[current])))
            else:
                nxt = self._next_level(current, since, due)
                if nxt is not None:
                    anchor = max(anchor, since - timedelta(days=self._effective_offset(self.levels[nxt])))
        return anchor

    def _interruptions(self, invoice: Invoice, current: int) -> list[tuple[date, str]]:
        found: list[tuple[date, str]] = []
        latest = self.state.dispute_latest.get(invoice.invoice_id)
        if latest is not None and latest[1] == "resolved" and invoice.invoice_id not in self.state.disputes:
            found.append((local_day(latest[0], self.zone), "pause"))
        for promise in self.promises:
            end = _plus(promise.deadline, 1)
            if (
                end <= self.today
                and promise.recorded <= promise.deadline
                and invoice.invoice_id in self._covered(promise)
            ):
                found.append((end, "payment" if promise.kept else "pause"))
        ended = self._pause_ended()
        if ended is not None and invoice.issue_date < ended:
            found.append((ended, "pause"))
        if current >= 0:
            for key in invoice.allocations:
                on = self.state.credits[key].on
                if on <= self.today:
                    found.append((on, "payment"))
        return [(since, kind) for since, kind in found if since <= self.today and (kind == "pause" or current >= 0)]

    def _target(self, track: _Track) -> None:
        due_levels = [k for k in range(track.current + 1, len(self.levels)) if track.steps[k] <= self.today]
        if not due_levels:
            return
        target = due_levels[-1]
        if self.levels[target].offset_days < 0 and self.today >= track.due:
            return  # a courtesy notice that is no longer timely: it will be passed over by the next level
        track.target = target
        track.skipped = due_levels[:-1]
        track.actions |= {a for k in due_levels for a in self.levels[k].actions}

    def _plan_due(self, invoice: Invoice) -> date:
        plans = [p for p in self.state.plans.values() if invoice.invoice_id in p.get("invoice_ids", [])]
        if not plans:
            return invoice.due_date
        plan = plans[-1]
        covered = [self.state.invoices.get(i) for i in plan["invoice_ids"]]
        remaining = sum((i.outstanding for i in covered if i is not None and i.is_open), ZERO)
        instalments = sorted((date.fromisoformat(i["due_date"]), Decimal(i["amount"])) for i in plan["instalments"])
        paid = sum((a for _, a in instalments), ZERO) - remaining
        cumulated = ZERO
        for due, amount in instalments:
            cumulated += amount
            if cumulated > paid:
                return due
        return instalments[-1][0]

    def _promises(self) -> list[_Promise]:
        promises = []
        for promise_id, raw in sorted(self.state.promises.items()):
            promised = date.fromisoformat(raw["promised_date"])
            deadline = _plus(promised, self.policy.promise_grace_days)  # a promise for 9999-12-31 pauses for ever
            recorded_at = self.state.promise_recorded.get(promise_id)
            recorded = local_day(recorded_at, self.zone) if recorded_at else promised
            currency = raw["currency"]
            amount = Decimal(raw["amount"])
            invoice_ids = tuple(raw.get("invoice_ids") or ())
            paid = sum(
                (
                    c.amount
                    for c in self.state.credits.values()
                    if c.currency == currency and recorded <= c.on <= min(deadline, self.today)
                ),
                ZERO,
            )
            covered_open = [
                i
                for i in self.state.invoices.values()
                if i.currency == currency and i.is_open and (not invoice_ids or i.invoice_id in invoice_ids)
            ]
            kept = paid >= amount or not covered_open
            promises.append(_Promise(promise_id, currency, amount, promised, deadline, recorded, invoice_ids, kept))
        return promises

    def _pause_ended(self) -> date | None:
        """The day the ladder resumed after the customer's last pause: the day after its ``until``, or the day it
        was resumed; None while paused or never paused."""
        if self.paused:
            return None
        until = pause_until(self.state)
        if until is not None:
            return _plus(until, 1)
        resumed = self.state.dunning.resumed_at
        return local_day(resumed, self.zone) if resumed else None

    def _covered(self, promise: _Promise) -> set[str]:
        if promise.invoice_ids:
            return set(promise.invoice_ids)
        return {i.invoice_id for i in self.state.invoices.values() if i.currency == promise.currency and i.is_open}

    def _listed(self, currency: str, movers: list[_Track]) -> list[_Track]:
        """The invoices a reminder in ``currency`` lists: every overdue one on the ladder, and those moving now."""
        ids = {t.invoice_id for t in movers}
        return [
            t
            for t in self.tracks
            if t.currency == currency and t.paused is None and (t.due < self.today or t.invoice_id in ids)
        ]

    # ----------------------------------------------------------------------------------------------- timers
    def upcoming(self) -> list[datetime]:
        """Instants at which something time-driven may happen: a step's local midnight, a contact's send hour."""
        days: list[date] = []
        tomorrow = _plus(self.today, 1)
        paused_until = pause_until(self.state)
        if self.paused and paused_until is not None:  # the ladder resumes the day after the pause, not before
            return [local_instant(_plus(paused_until, 1), 0, self.zone)]
        for track in self.tracks:
            if track.paused == "dispute":
                continue
            if track.hold is not None:
                if track.hold.kind == INTEREST_TASK:
                    days.append(tomorrow)  # until the rate is added; dates only change through the ERP
                continue
            if track.handed:  # the ladder has ended (a hand-over notice still to send is a contact, below) ...
                days.append(_plus(track.due, 1))  # ... but a plan's next instalment falling due may block credit
                continue
            # Held back by the minimum amount: only another invoice falling due (below) can change that.
            days += track.steps[track.current + 1 :]
            days.append(_plus(track.due, 1))
        for promise in self.promises:
            days += [promise.promised, _plus(promise.deadline, 1)]
        moments = [local_instant(day, 0, self.zone) for day in dict.fromkeys(days)]  # each day once
        waiting = self._waiting()
        if waiting or self.claims.unasked():
            moments.append(self._next_contact(waiting))
        return moments


def _plus(day: date, days: int) -> date:
    """``day`` moved by ``days``, or the calendar's first or last day when that falls outside it."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min
