"""The demo's months replayed day by day: the ERP's messages arrive when they happened, the escalation worker decides.

The generator publishes a whole sample at once; a real ERP sends its messages as things happen, and the escalation
worker reacts to each change and to its timers. To show the ladder progressing with payments arriving, the demo
delivers each message on the day it happened (:func:`delivery_days`), and drives the real
:class:`~services.escalation.worker.EscalationWorker` with a simulated clock: at midnight it fires the timers due
that day, and again at 09:00 UTC for the contacts waiting for the tenants' send hour (:data:`TIMERS_AT`); after the
day's messages (at :data:`FOLLOW_AT`) it follows the log and evaluates the customers they touched. Decisions, clock
ticks, timers and outbox rows are exactly what production writes.

:func:`audit` then reads every customer's stream back and folds it event by event, to summarise what the engine did
and to check what must never happen (a reminder listing an invoice paid, cancelled or disputed at that moment,
an unblock without its block, a block left in force for a customer with nothing overdue, an outbox out of step).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from services.cli.demo.generator import Sample
from services.escalation.interest import ECB, SERIES, RateTable, semester_start
from shared.contracts import events
from shared.ledger.schema import outbox
from shared.ledger.state import CustomerState
from shared.ledger.store import Ledger, RecordedEvent

ZERO = Decimal(0)
TIMERS_AT = (time(0, 0), time(9, 0))  # the day's timer rounds: steps at midnight, contacts from the send hour
FOLLOW_AT = time(20, 0)  # the ERP's messages of a day happen before 20:00 UTC
MAIL_FACTS = frozenset(events.REMINDER_OUTCOMES)
DECISIONS = (
    events.LevelReached.TYPE,
    events.ReminderRequested.TYPE,
    events.InterestComputed.TYPE,
    events.FeeCharged.TYPE,
    events.CreditBlocked.TYPE,
    events.CreditUnblocked.TYPE,
    events.CollectionHandedOver.TYPE,
    events.TaskCreated.TYPE,
    events.ClaimFixed.TYPE,
)
COLLECTOR_FACTS = frozenset({events.ClaimWaived.TYPE})  # a collector's decisions (relance claims waive)


# ------------------------------------------------------------------------------------------------- delivery
def delivery_days(sample: Sample) -> list[date]:
    """For every message (publish order), the day on which the ERP delivers it.

    A message is delivered on the day it happened. A payment published before its invoice means the invoice was
    held back in the ERP's batch: the invoice (and its copies, re-sends and faulty variants, whose ids start with
    its id) is delivered on the payment's day, after it. A body without a readable timestamp comes with the message
    before it.
    """
    days: list[date] = []
    held: dict[str, date] = {}
    previous = sample.as_of
    for message in sample.messages:
        day = _day_of(message.body) or previous
        if message.note.startswith("out_of_order"):
            held[message.note.rsplit(" ", 1)[1]] = day
        days.append(day)
        previous = day
    invoice_events = {
        json.loads(m.body)["data"]["invoice_id"]: str(m.event_id)
        for m in sample.messages
        if m.expect == "applied" and m.event_type == "invoice.issued"
    }
    late = {invoice_events[i]: day for i, day in held.items() if i in invoice_events}
    for index, message in enumerate(sample.messages):
        base = (message.event_id or "").split("-resend", 1)[0]
        for event_id, day in late.items():
            if base == event_id or base.startswith(event_id + "-"):
                days[index] = max(days[index], day)
    return days


def _day_of(body: bytes) -> date | None:
    try:
        return date.fromisoformat(json.loads(body)["occurred_at"][:10])
    except (ValueError, KeyError, TypeError):
        return None


def demo_rates(extra: Any, until: date) -> tuple[RateTable, list[str]]:
    """The rate tables (extended by ``RELANCE_RATES_FILE``), any semester up to ``until`` they lack carried forward.

    The simulated months may run past the last published rate of a table (ECB, Bank of England, French legal rate);
    the demo then assumes the last known rate still in force and says so, rather than stopping.
    """
    table = RateTable.default(extra)
    notes: list[str] = []
    tables: dict[str, dict[date, Decimal]] = {}
    for name in table.tables():
        rates = table.semesters(name)
        semester, last = min(rates), semester_start(until)
        while semester <= last:
            if semester not in rates:
                previous = rates[max(s for s in rates if s < semester)]
                rates[semester] = previous
                notes.append(
                    f"no rate for the semester from {semester} in the {SERIES[name].title} table: the demo assumes "
                    f"{previous} % (the last known) still applies; RELANCE_RATES_FILE adds the real one"
                )
            semester = semester_start(semester + timedelta(days=190))
        tables[name] = rates
    if not tables:
        return table, notes
    return RateTable(tables.pop(ECB, {}), series=tables), notes


# ------------------------------------------------------------------------------------------------- the audit
@dataclass
class Reminders:
    by_level: Counter[str] = field(default_factory=Counter)
    by_level_language: Counter[tuple[str, str]] = field(default_factory=Counter)
    channels: dict[str, str] = field(default_factory=dict)  # level -> channel (and copies)
    invoices_listed: Counter[str] = field(default_factory=Counter)


@dataclass
class Money:
    invoices: int = 0
    total: Decimal = ZERO


@dataclass
class Timeline:
    tenant: str
    customer_id: str
    name: str
    policy: str
    language: str
    lines: list[tuple[datetime, str, str]]  # instant, "ERP" or "relance", what


@dataclass
class Audit:
    """What the engine did over the simulated months, read back from the streams, and what went wrong."""

    levels_reached: Counter[str] = field(default_factory=Counter)
    caught_up: int = 0  # level_reached events that passed over levels (recorded as skipped)
    reminders: Reminders = field(default_factory=Reminders)
    interest: dict[str, Money] = field(default_factory=dict)  # currency -> final interest owed
    fees: dict[str, Money] = field(default_factory=dict)
    blocks: int = 0
    unblocks: int = 0
    handovers: int = 0  # collection.handed_over events
    block_reasons: Counter[str] = field(default_factory=Counter)
    still_blocked: int = 0
    tasks: Counter[str] = field(default_factory=Counter)
    outbox: Counter[str] = field(default_factory=Counter)  # commands written, by kind
    pending: Counter[str] = field(default_factory=Counter)  # of which not yet published or sent
    decisions: int = 0
    causing: Counter[str] = field(default_factory=Counter)  # command -> the events recorded that cause one
    ticks: int = 0
    problems: list[str] = field(default_factory=list)
    timeline: Timeline | None = None


def audit(ledger: Ledger, as_of: date) -> Audit:
    result = Audit()
    candidates: list[tuple[tuple[int, ...], str, str, list[RecordedEvent]]] = []
    for tenant, customer_id in ledger.streams():
        stream = ledger.read_stream(tenant, customer_id)
        final = _audit_stream(result, tenant, customer_id, stream, as_of)
        score = _interest_of(stream)
        if score is not None:
            candidates.append((score, tenant, customer_id, stream))
        for record in final.escalations.values():
            if record.interest:
                money = result.interest.setdefault(record.currency, Money())
                money.invoices += 1
                money.total += record.interest
    result.outbox = _commands(ledger.engine)
    result.pending = _commands(ledger.engine, pending=True)
    if +result.outbox != +result.causing:
        result.problems.append(f"outbox {dict(result.outbox)} differs from the decisions that cause commands")
    if candidates:
        _, tenant, customer_id, stream = max(candidates, key=lambda c: c[0])
        result.timeline = _timeline(tenant, customer_id, stream)
    return result


def _audit_stream(
    result: Audit, tenant: str, customer_id: str, stream: list[RecordedEvent], as_of: date
) -> CustomerState:
    state = CustomerState(tenant=tenant, customer_id=customer_id)
    who = f"{tenant}/{customer_id}"
    reminded_on: dict[tuple[str, str], str] = {}
    block_ids: Counter[str] = Counter()
    for event in stream:
        data = event.data
        kind = event.event_type
        if kind == events.ClockTicked.TYPE:
            result.ticks += 1
        elif kind in DECISIONS:
            result.decisions += 1
        if kind in events.COMMANDS:
            result.causing[events.COMMANDS[kind]] += 1
        if kind == events.LevelReached.TYPE:
            result.levels_reached[data["level"]] += 1
            result.caught_up += 1 if data.get("skipped") else 0
        elif kind == events.ReminderRequested.TYPE:
            level, day = data["level"], data["as_of"][:10]
            result.reminders.by_level[level] += 1
            result.reminders.by_level_language[(level, data["language"])] += 1
            copies = "".join(f"+{c}" for c in data.get("copy_channels", []))
            result.reminders.channels[level] = data["channel"] + copies
            result.reminders.invoices_listed[level] += len(data["invoice_ids"])
            for invoice_id in data["invoice_ids"]:
                invoice = state.invoices.get(invoice_id)
                if invoice is None or not invoice.is_open or invoice.outstanding <= 0:
                    status = "unknown" if invoice is None else invoice.status
                    result.problems.append(f"{who}: reminder {level} of {day} lists invoice {invoice_id} ({status})")
                elif invoice_id in state.disputes:
                    result.problems.append(f"{who}: reminder {level} of {day} lists disputed invoice {invoice_id}")
            key = (data["currency"], day)
            if key in reminded_on and reminded_on[key] != level:
                result.problems.append(f"{who}: two levels ({reminded_on[key]}, {level}) sent on {day}")
            reminded_on[key] = level
        elif kind == events.FeeCharged.TYPE:
            money = result.fees.setdefault(data["currency"], Money())
            money.invoices += 1
            money.total += Decimal(data["amount"])
        elif kind == events.CreditBlocked.TYPE:
            result.blocks += 1
            result.block_reasons[data["reason"]] += 1
            block_ids[data["block_id"]] += 1
            if state.credit_block is not None:
                result.problems.append(f"{who}: blocked again while block {state.credit_block['block_id']} is open")
        elif kind == events.CreditUnblocked.TYPE:
            result.unblocks += 1
            block_ids[data["block_id"]] -= 1
            if state.credit_block is None or state.credit_block["block_id"] != data["block_id"]:
                result.problems.append(f"{who}: unblock of {data['block_id']}, which is not the open block")
        elif kind == events.TaskCreated.TYPE:
            result.tasks[data["kind"]] += 1
        elif kind == events.CollectionHandedOver.TYPE:
            result.handovers += 1
        state.apply(events.parse(kind, data), event.occurred_at, recorded_at=event.recorded_at)
    if any(n not in (0, 1) for n in block_ids.values()):
        result.problems.append(f"{who}: blocks and unblocks do not pair up one to one")
    if state.credit_block is not None:
        result.still_blocked += 1
        overdue = {
            i.currency
            for i in state.open_invoices()
            if i.due_date < as_of and i.outstanding > 0 and i.invoice_id not in state.disputes
        }
        if not overdue:
            result.problems.append(f"{who}: credit still blocked on {as_of} with nothing overdue")
    return state


def _interest_of(stream: list[RecordedEvent]) -> tuple[int, ...] | None:
    """How well the customer shows the ladder: several levels, then paid or blocked (None: not a late payer)."""
    levels = {e.data["level"] for e in stream if e.event_type == events.LevelReached.TYPE}
    if len(levels) < 3:
        return None
    types = Counter(e.event_type for e in stream)
    first_level = next(n for n, e in enumerate(stream) if e.event_type == events.LevelReached.TYPE)
    paid_after = sum(1 for e in stream[first_level:] if e.event_type == "payment.received")
    if not paid_after and not types[events.CreditBlocked.TYPE]:
        return None
    both = int(types[events.CreditBlocked.TYPE] > 0 and types[events.CreditUnblocked.TYPE] > 0)
    short = -max(0, types["invoice.issued"] - 4)  # few invoices keep the timeline readable
    plain = -sum(types[t] for t in ("payment_plan.agreed", "promise_to_pay.recorded", "invoice.disputed"))
    return (both, min(len(levels), 6), plain, int(paid_after > 0), short, -len(stream))


def _timeline(tenant: str, customer_id: str, stream: list[RecordedEvent]) -> Timeline:
    state = CustomerState(tenant=tenant, customer_id=customer_id)
    lines: list[tuple[datetime, str, str]] = []
    policy = ""
    for event in stream:
        moment = event.occurred_at.astimezone(UTC)
        if event.event_type != events.ClockTicked.TYPE:
            text = describe(event.event_type, event.data, state)
            if text:
                source = "relance" if event.event_type in DECISIONS else "ERP"
                source = "mail" if event.event_type in MAIL_FACTS else source
                source = "credit" if event.event_type in COLLECTOR_FACTS else source
                lines.append((moment, source, text))
        policy = event.data.get("policy", policy) if event.event_type in DECISIONS else policy
        before = _allocated(state)
        state.apply(events.parse(event.event_type, event.data), event.occurred_at, recorded_at=event.recorded_at)
        settled = claims_settled(before, state)
        if settled:
            lines.append((moment, "relance", settled))
    profile = state.profile or {}
    return Timeline(tenant, customer_id, str(profile.get("name", "")), policy, str(profile.get("language", "")), lines)


def describe(event_type: str, data: dict[str, Any], state: CustomerState) -> str:
    """One line for a timeline: what happened, with its amounts."""
    number = _numbers(state)

    def inv(invoice_id: str) -> str:
        return number.get(invoice_id, invoice_id)

    def amount(value: str, currency: str) -> str:
        return f"{Decimal(value):,.{_places(currency)}f} {currency}"

    match event_type:
        case "customer.upserted":
            limit = data.get("credit_limit")
            extra = f", credit limit {amount(limit['amount'], limit['currency'])}" if limit else ""
            return f"customer record: {data['name']}, {data.get('language', '?')}{extra}"
        case "invoice.issued":
            money = amount(data["amount"], data["currency"])
            return f"invoice {data['number']} issued on {data['issue_date']}: {money}, due {data['due_date']}"
        case "payment.received":
            targets = ", ".join(inv(a["invoice_id"]) for a in data.get("allocations", [])) or "no remittance advice"
            return f"payment of {amount(data['amount'], data['currency'])} received ({targets})"
        case "credit_note.issued":
            target = inv(data["invoice_id"]) if data.get("invoice_id") else "on account"
            return f"credit note {data['number']} of {amount(data['amount'], data['currency'])} ({target})"
        case "invoice.due_date_passed":
            return f"invoice {inv(data['invoice_id'])} unpaid at its due date {data['due_date']}"
        case "invoice.cancelled":
            return f"invoice {inv(data['invoice_id'])} cancelled"
        case "invoice.disputed":
            return f"invoice {inv(data['invoice_id'])} disputed: {data['reason']}"
        case "invoice.dispute_resolved":
            return f"dispute on {inv(data['invoice_id'])} resolved: {data['resolution']}"
        case "promise_to_pay.recorded":
            return f"promise to pay {amount(data['amount'], data['currency'])} by {data['promised_date']}"
        case "payment_plan.agreed":
            parts = ", ".join(f"{i['amount']} on {i['due_date']}" for i in data["instalments"])
            return f"payment plan agreed: {parts} {data['currency']}"
        case events.LevelReached.TYPE:
            skipped = f" (passing over {', '.join(data['skipped'])})" if data.get("skipped") else ""
            owed = amount(data["outstanding"], data["currency"])
            return f"{inv(data['invoice_id'])} reaches {data['level']}{skipped}, {owed} outstanding"
        case events.ReminderRequested.TYPE:
            copies = "".join(f" + {c} copy" for c in data.get("copy_channels", []))
            totals, currency = data["totals"], data["currency"]
            listed = ", ".join(inv(i) for i in data["invoice_ids"])
            charges = ""
            if Decimal(totals["interest"]) or Decimal(totals["fees"]):
                charges = (
                    f" + interest {amount(totals['interest'], currency)} + fees {amount(totals['fees'], currency)}"
                )
            return (
                f"reminder {data['level']} by {data['channel']}{copies} ({data['language']}): "
                f"{listed}, {amount(totals['outstanding'], currency)}{charges}"
            )
        case events.InterestComputed.TYPE:
            return (
                f"late interest on {inv(data['invoice_id'])}: {amount(data['amount'], data['currency'])} "
                f"over {data['days']} day{'' if data['days'] == 1 else 's'}"
            )
        case events.FeeCharged.TYPE:
            return f"recovery fee on {inv(data['invoice_id'])}: {amount(data['amount'], data['currency'])}"
        case events.ClaimFixed.TYPE:
            return (
                f"late interest on {inv(data['invoice_id'])} fixed at {amount(data['amount'], data['currency'])} "
                f"(principal settled on {data['through']})"
            )
        case events.ClaimWaived.TYPE:
            return (
                f"{data['kind']} on {inv(data['invoice_id'])} waived: {amount(data['amount'], data['currency'])} "
                f"by {data['author']} ({data['reason']})"
            )
        case events.CreditBlocked.TYPE:
            overdue = ", ".join(amount(v, c) for c, v in data["overdue"].items())
            return f"CREDIT BLOCKED ({data['reason']}), overdue {overdue} -> {events.CREDIT_BLOCK}"
        case events.CreditUnblocked.TYPE:
            overdue = ", ".join(amount(v, c) for c, v in data["overdue"].items()) or "nothing"
            return f"credit unblocked, overdue now {overdue} -> {events.CREDIT_UNBLOCK}"
        case events.TaskCreated.TYPE:
            listed = ", ".join(inv(i) for i in data["invoice_ids"])
            return f"task {data['kind']} due {data['due_on']}: {listed}"
        case events.CollectionHandedOver.TYPE:
            listed = ", ".join(inv(i) for i in data["invoice_ids"])
            owed = amount(data["totals"]["outstanding"], data["currency"])
            return f"handed over to collection: {listed}, {owed} -> {events.COLLECTION_HANDOVER}"
        case events.ReminderSent.TYPE:
            return f"e-mail {data['level']} sent to {', '.join(data['recipients'])}: {data['smtp_reply'][:40]}"
        case events.ReminderLetterRequested.TYPE:
            return f"letter {data['level']} to print and post (task)"
        case events.ReminderSkipped.TYPE:
            why = ", ".join(f"{inv(d['invoice_id'])} {d['reason']}" for d in data["dropped"])
            return f"reminder {data['level']} not sent: {why}"
        case events.ReminderFailed.TYPE | events.ReminderUnconfirmed.TYPE:
            return f"{event_type.replace('.', ' ')}: {data['reason']}"
        case events.ReminderSending.TYPE | events.ReminderDeferred.TYPE:
            return ""
    return event_type


def _allocated(state: CustomerState) -> dict[tuple[str, str], Decimal]:
    return {(c.invoice_id, c.kind): c.allocated for c in state.claims.all()}


def claims_settled(before: dict[tuple[str, str], Decimal], state: CustomerState) -> str:
    """A timeline line for the claims money was allocated to by the event just folded ('' when none)."""
    number = _numbers(state)
    parts = []
    for claim in state.claims.all():
        paid = claim.allocated - before.get((claim.invoice_id, claim.kind), ZERO)
        if paid > 0:
            money = f"{paid:,.{_places(claim.currency)}f} {claim.currency}"
            parts.append(f"{claim.kind} on {number.get(claim.invoice_id, claim.invoice_id)} {money}")
    return f"claims paid: {', '.join(parts)}" if parts else ""


def _numbers(state: CustomerState) -> dict[str, str]:
    return {i.invoice_id: i.number or i.invoice_id for i in state.invoices.values()}


def _places(currency: str) -> int:
    from shared.contracts.erp import minor_units

    return minor_units(currency)


def _commands(engine: Engine, *, pending: bool = False) -> Counter[str]:
    query = select(outbox.c.kind, func.count()).group_by(outbox.c.kind)
    if pending:
        query = query.where(outbox.c.published_at.is_(None))
    with engine.connect() as conn:
        return Counter({kind: int(n) for kind, n in conn.execute(query)})


def days_between(first: date, last: date) -> Iterable[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)
