"""A collector's day (``relance agenda``): the open work of a date, one line per customer and kind, the largest
amounts at risk first.

Built from the customers' projected states alone: the tasks the engine, the notifier and the webhook created (calls,
letters to post, promises to check, broken promises, changed payment habits, hand-overs, commands the ERP missed),
promises falling due, and accounts whose credit is blocked. Only open work is listed
(:func:`shared.ledger.tasks.task_views`): a task done, snoozed to a later day, or whose cause has gone (invoice paid,
cancelled or disputed, promise kept, block lifted, letter superseded, call logged, call superseded) is left out. The
work of one kind for a customer makes one line, whatever its currencies, levels or commands: the currency with the
most at risk first (the others said in the title), the invoices by their numbers, the tasks completing the line
completes, since its oldest task was opened. With an assignee, only the lines holding a task of that person.

With the reference rate table, the agenda also tells the credit team, at the top, of each semester without a rate that
has begun or begins within :data:`~services.escalation.interest.RATES_WARNING_DAYS` days, and drops an
``interest_unavailable`` task once its semester's rate was added (the engine then resumes the invoice).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from services.escalation.claims import TASK, owed_claims
from services.escalation.interest import ECB, RATES_WARNING_DAYS, SERIES, RateTable, rate_line
from shared.contracts import events
from shared.ledger.state import CustomerState
from shared.ledger.tasks import promise_kept, task_views

ZERO = Decimal(0)
SHOWN_INVOICES = 4  # per line of the printed agenda (all of them in --json)

_TASK_TITLES = {
    "phone_call": "call",
    "fix_contact": "address refused by the mail server: fix the contact",
    "check_promise": "check promised payment",
    "erp_command_rejected": "ERP refused a credit command: see why (relance ledger show)",
    "promise_broken": "promise broken: call",
    "payment_behaviour_changed": "paying later than usual: call",
    "hand_over": "hand over to collection",
    "erp_command_failed": "ERP did not receive a command: apply it by hand",
    "send_letter": "print and post the reminder letter",
    "postal_address_missing": "no postal address: add it in the ERP, then post the letter",
    "check_delivery": "check the mail server's log: was the reminder delivered?",
    "interest_unavailable": "interest cannot be computed: add the missing reference rate (relance rates check)",
    "invoice_dates_invalid": "invoice dates outside the calendar: correct the invoice in the ERP",
    TASK: "claims still owed on a settled invoice: pursue them or waive them (relance claims waive)",
    "follow_up": "follow up a call",
}
RATE_MISSING = "reference_rate_missing"  # an item for the credit team, not for one customer
# erp_command_failed tasks name the command the webhook gave up on (services/webhook/worker.py)
_COMMAND_TITLES = {
    events.CREDIT_BLOCK: "ERP did not receive credit block: block by hand",
    events.CREDIT_UNBLOCK: "ERP did not receive credit unblock: unblock by hand",
    events.COLLECTION_HANDOVER: "ERP did not receive the hand-over: hand the invoices over by hand",
    events.CREDIT_LIMIT_CHANGE: "ERP did not receive the credit limit change: change it by hand",
    "erp.promise_to_pay": "ERP did not receive the promise: record it by hand",
    "erp.dispute_opened": "ERP did not receive the dispute: record it by hand",
    "erp.dispute_resolved": "ERP did not receive the dispute's resolution: record it by hand",
    "erp.payment_plan": "ERP did not receive the payment plan: record it by hand",
}


@dataclass(frozen=True, slots=True)
class AgendaItem:
    """One line of a collector's day: one kind of work for one customer.

    ``invoices`` are the invoices' ids (what an action names), ``numbers`` the same invoices' numbers as the
    customer knows them (what a person reads); ``task_ids`` the tasks completing the line completes; ``currency``
    and ``at_risk`` the currency with the most at risk, ``others`` the other currencies the line's work is about,
    with their amounts at risk; ``opened_on`` the day the oldest of its tasks was created, ``age_days`` its age on the
    agenda's day.
    """

    kind: str  # a task kind, or "promise_due" / "credit_blocked"
    title: str
    customer_id: str
    customer_name: str
    due_on: date
    currency: str
    at_risk: Decimal  # the customer's overdue amount in that currency on the agenda's date
    invoices: tuple[str, ...]
    note: str = ""
    numbers: tuple[str, ...] = ()
    task_ids: tuple[str, ...] = ()
    assignee: str | None = None
    opened_on: date | None = None
    age_days: int = 0
    others: tuple[tuple[str, Decimal], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "customer_id": self.customer_id,
            "customer_name": self.customer_name,
            "due_on": self.due_on.isoformat(),
            "currency": self.currency,
            "at_risk": str(self.at_risk),
            "others": {currency: str(amount) for currency, amount in self.others},
            "invoices": list(self.invoices),
            "numbers": list(self.numbers),
            "task_ids": list(self.task_ids),
            "assignee": self.assignee,
            "opened_on": None if self.opened_on is None else self.opened_on.isoformat(),
            "age_days": self.age_days,
            "note": self.note,
        }


@dataclass
class _Work:
    """One piece of open work before the lines are merged: a task, a promise due, the credit block."""

    kind: str
    title: str
    due_on: date
    opened_on: date
    currency: str
    at_risk: Decimal
    invoices: tuple[str, ...]
    note: str
    task_id: str | None = None
    assignee: str | None = None


def build_agenda(
    states: Iterable[CustomerState], on: date, rates: RateTable | None = None, assignee: str | None = None
) -> list[AgendaItem]:
    """The open work of ``on``: one line per customer and kind, the largest amount at risk first; with
    ``assignee``, only the lines with a task of that person (and no credit-team item)."""
    items = [item for state in states for item in _customer_items(state, on, rates, assignee)]
    ordered = sorted(items, key=lambda i: (-i.at_risk, i.currency, i.customer_id, i.due_on, i.kind))
    return ([] if rates is None or assignee is not None else rate_items(rates, on)) + ordered


def _customer_items(
    state: CustomerState, on: date, rates: RateTable | None, assignee: str | None = None
) -> list[AgendaItem]:
    """One customer's lines: its open tasks, a promise due that day, its credit block, merged per kind."""
    overdue = state.overdue(on)
    name = str((state.profile or {}).get("name", ""))
    live = {i.invoice_id for i in state.open_invoices() if i.invoice_id not in state.disputes}
    work: list[_Work] = []
    promised_checks: set[str] = set()
    for view in task_views(state, on):
        if view.kind == "check_promise":
            promised_checks.add(view.note)
        if not view.is_open or view.due_on > on:
            continue  # done, closed by itself, snoozed, or for a later day
        task = state.tasks[view.task_id]
        if rates is not None and task.get("semester") and rates.has(date.fromisoformat(task["semester"])):
            continue  # the missing rate was added since
        # a claim_owed task is about settled invoices: it stands while their claims are owed, for what they owe
        claims = owed_claims(state, view.invoice_ids) if view.kind == TASK else None
        invoices = tuple(i for i in view.invoice_ids if i in live or (claims and claims.get(i)))
        if view.invoice_ids and not invoices:
            continue
        currency = view.currency or _main_currency(overdue)
        title = _COMMAND_TITLES.get(task.get("command", "")) or _TASK_TITLES.get(view.kind, view.kind.replace("_", " "))
        at_risk = sum(claims.values(), ZERO) if claims is not None else overdue.get(currency, ZERO)
        work.append(
            _Work(
                view.kind,
                title,
                view.due_on,
                view.created_on,
                currency,
                at_risk,
                invoices,
                view.note,
                view.task_id,
                view.assignee,
            )
        )
    for promise_id, promise in sorted(state.promises.items()):
        promised = date.fromisoformat(promise["promised_date"])
        covered = tuple(promise.get("invoice_ids", []))
        if promised != on or (covered and not live.intersection(covered)):
            continue
        if any(note.startswith(f"promise {promise_id}:") for note in promised_checks):
            continue  # the engine's check_promise task says it already
        if promise_kept(state, promise_id):
            continue
        currency = promise["currency"]
        title = f"promised {promise['amount']} {currency} today"
        shown = tuple(i for i in covered if i in live)
        risk = overdue.get(currency, ZERO)
        work.append(
            _Work("promise_due", title, promised, promised, currency, risk, shown, str(promise.get("note", "")))
        )
    if state.credit_block is not None:
        title = f"credit blocked ({state.credit_block['reason']})"
        blocked_on = date.fromisoformat(state.credit_block["blocked_on"])
        currency = _main_currency(overdue)
        work.append(
            _Work("credit_blocked", title, blocked_on, blocked_on, currency, overdue.get(currency, ZERO), (), "")
        )
    kinds: dict[str, list[_Work]] = {}
    for each in work:
        kinds.setdefault(each.kind, []).append(each)
    items = [_line(state, name, on, pieces) for pieces in kinds.values()]
    if assignee is not None:
        mine = {kind for kind, pieces in kinds.items() if any(p.assignee == assignee for p in pieces)}
        items = [item for item in items if item.kind in mine]
    return items


def _line(state: CustomerState, name: str, on: date, pieces: list[_Work]) -> AgendaItem:
    """The customer's work of one kind as one line: the currency with the most at risk first, the others said."""
    risk: dict[str, Decimal] = {}
    for piece in pieces:
        risk[piece.currency] = max(risk.get(piece.currency, ZERO), piece.at_risk)
    order = sorted(risk, key=lambda c: (-risk[c], c))
    first = sorted(pieces, key=lambda p: (order.index(p.currency), p.opened_on, p.due_on))
    lead = first[0]
    invoices = tuple(dict.fromkeys(i for p in first for i in p.invoices))
    titles = list(dict.fromkeys(p.title for p in first))
    notes = list(dict.fromkeys(p.note for p in first if p.note))
    opened = min(p.opened_on for p in pieces)
    assignees = [p.assignee for p in sorted(pieces, key=lambda p: p.opened_on) if p.assignee]
    title = titles[0] + ("".join(f"; {t}" for t in titles[1:]) if len(titles) > 1 else "")
    others = tuple((c, risk[c]) for c in order[1:])
    if others:
        title += " (also " + ", ".join(f"{amount:,} {c}" if amount else c for c, amount in others) + ")"
    return AgendaItem(
        kind=lead.kind,
        title=title,
        customer_id=state.customer_id,
        customer_name=name,
        due_on=min(p.due_on for p in pieces),
        currency=lead.currency,
        at_risk=risk[lead.currency],
        invoices=invoices,
        note=" | ".join(notes),
        numbers=tuple(_number(state, i) for i in invoices),
        task_ids=tuple(p.task_id for p in sorted(pieces, key=lambda p: p.opened_on) if p.task_id),
        assignee=assignees[0] if assignees else None,
        opened_on=opened,
        age_days=max(0, (on - opened).days),
        others=others,
    )


def _number(state: CustomerState, invoice_id: str) -> str:
    invoice = state.invoices.get(invoice_id)
    return invoice.number if invoice is not None and invoice.number else invoice_id


def rate_items(rates: RateTable, on: date) -> list[AgendaItem]:
    """The credit team's items: each semester without a rate that has begun, or begins within the warning days."""
    items = []
    for gap in rates.gaps(on, RATES_WARNING_DAYS, None):
        when = f"missing since {gap.semester.isoformat()}" if gap.begun else f"needed in {gap.days_left} day(s)"
        what = "reference rate" if gap.series == ECB else SERIES[gap.series].title
        items.append(
            AgendaItem(
                kind=RATE_MISSING,
                title=f"{what} for the semester starting {gap.semester.isoformat()} {when}: add it",
                customer_id="",
                customer_name="(credit team)",
                due_on=on if gap.begun else gap.semester,
                currency="",
                at_risk=ZERO,
                invoices=(),
                note=f"add {rate_line(gap.semester, gap.series)} to the file named by RELANCE_RATES_FILE "
                "(relance rates check)",
            )
        )
    return items


def render_agenda(items: list[AgendaItem], tenant: str, on: date, assignee: str | None = None) -> str:
    whose = f" for {assignee}" if assignee else ""
    lines = [
        f"agenda of {tenant}{whose} for {on.isoformat()}: {len(items)} item(s), largest amount at risk first",
        "",
    ]
    if not items:
        lines.append("nothing to do")
        return "\n".join(lines)
    lines.append(f"  {'at risk':>16}  {'customer':<12} {'name':<28} {'since':<10} {'days':>4}  what")
    for item in items:
        shown = ", ".join((item.numbers or item.invoices)[:SHOWN_INVOICES])
        more = len(item.invoices) - SHOWN_INVOICES
        invoices = f" — {shown}" + (f" and {more} more" if more > 0 else "") if item.invoices else ""
        risk = f"{item.at_risk:>12,} {item.currency}" if item.kind != RATE_MISSING else f"{'':>16}"
        who = f" [{item.assignee}]" if item.assignee else ""
        lines.append(
            f"  {risk}  {item.customer_id[:12]:<12} {item.customer_name[:28]:<28} "
            f"{item.due_on.isoformat():<10} {item.age_days:>4}  {item.title}{invoices}{who}"
        )
    return "\n".join(lines)


def _main_currency(amounts: dict[str, Decimal]) -> str:
    return max(amounts, key=lambda c: amounts[c]) if amounts else ""
