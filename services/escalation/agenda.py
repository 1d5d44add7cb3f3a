"""A collector's day (``relance agenda``): what to do on a date, the largest amounts at risk first.

Built from the customers' projected states alone: the tasks the engine created (calls, promises to check, broken
promises, changed payment habits, hand-overs), promises falling due, and accounts whose credit is blocked. A task
whose invoices are all settled, cancelled or disputed is moot and left out; the tasks of one kind still open for a
customer (a call at each level the customer reached) make one item, since the first fell due, naming the invoices
still to talk about.

With the reference rate table, the agenda also tells the credit team, at the top, of each semester without a rate that
has begun or begins within :data:`~services.escalation.interest.RATES_WARNING_DAYS` days, and drops an
``interest_unavailable`` task once its semester's rate was added (the engine then resumes the invoice).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

from services.escalation.claims import TASK, owed_claims
from services.escalation.interest import ECB, RATES_WARNING_DAYS, SERIES, RateTable, rate_line
from shared.contracts import events
from shared.ledger.state import CustomerState

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
    "check_delivery": "check the mail server's log: was the reminder delivered?",
    "interest_unavailable": "interest cannot be computed: add the missing reference rate (relance rates check)",
    "invoice_dates_invalid": "invoice dates outside the calendar: correct the invoice in the ERP",
    TASK: "claims still owed on a settled invoice: pursue them or waive them (relance claims waive)",
}
RATE_MISSING = "reference_rate_missing"  # an item for the credit team, not for one customer
# erp_command_failed tasks name the command the webhook gave up on (services/webhook/worker.py)
_COMMAND_TITLES = {
    events.CREDIT_BLOCK: "ERP did not receive credit block: block by hand",
    events.CREDIT_UNBLOCK: "ERP did not receive credit unblock: unblock by hand",
}


@dataclass(frozen=True, slots=True)
class AgendaItem:
    kind: str  # a task kind, or "promise_due" / "credit_blocked"
    title: str
    customer_id: str
    customer_name: str
    due_on: date
    currency: str
    at_risk: Decimal  # the customer's overdue amount in that currency on the agenda's date
    invoices: tuple[str, ...]
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "customer_id": self.customer_id,
            "customer_name": self.customer_name,
            "due_on": self.due_on.isoformat(),
            "currency": self.currency,
            "at_risk": str(self.at_risk),
            "invoices": list(self.invoices),
            "note": self.note,
        }


def build_agenda(states: Iterable[CustomerState], on: date, rates: RateTable | None = None) -> list[AgendaItem]:
    items = [item for state in states for item in _customer_items(state, on, rates)]
    ordered = sorted(items, key=lambda i: (-i.at_risk, i.currency, i.customer_id, i.due_on, i.kind))
    return ([] if rates is None else rate_items(rates, on)) + ordered


def _customer_items(state: CustomerState, on: date, rates: RateTable | None) -> list[AgendaItem]:
    """One customer's items: its open tasks (one per kind and command), a promise due that day, its credit block."""
    overdue = state.overdue(on)
    name = str((state.profile or {}).get("name", ""))

    def item(
        kind: str, title: str, due_on: date, currency: str, invoices: tuple[str, ...], note: str = ""
    ) -> AgendaItem:
        at_risk = overdue.get(currency, ZERO)
        return AgendaItem(kind, title, state.customer_id, name, due_on, currency, at_risk, invoices, note)

    live = {i.invoice_id for i in state.open_invoices() if i.invoice_id not in state.disputes}
    tasks: dict[tuple[str, str, str], AgendaItem] = {}
    for task in sorted(state.tasks.values(), key=lambda t: str(t["due_on"])):
        due_on = date.fromisoformat(task["due_on"])
        named = tuple(task.get("invoice_ids", []))
        # a claim_owed task is about settled invoices: it stands while their claims are owed, for what they owe
        claims = owed_claims(state, named) if task["kind"] == TASK else None
        invoices = tuple(i for i in named if i in live or (claims and claims.get(i)))
        if due_on > on or (named and not invoices):
            continue
        if rates is not None and task.get("semester") and rates.has(date.fromisoformat(task["semester"])):
            continue  # the missing rate was added since
        currency = task.get("currency") or _main_currency(overdue)
        title = _COMMAND_TITLES.get(task.get("command", "")) or _TASK_TITLES.get(
            task["kind"], task["kind"].replace("_", " ")
        )
        entry = item(task["kind"], title, due_on, currency, invoices, str(task.get("note", "")))
        if claims is not None:
            entry = replace(entry, at_risk=sum(claims.values(), ZERO))
        key = (entry.kind, currency, str(task.get("command", "")))
        earlier = tasks.get(key)
        if earlier is not None:  # the same work, asked again at a later level: one item, since the first
            invoices = tuple(dict.fromkeys((*earlier.invoices, *entry.invoices)))
            entry = replace(entry, due_on=earlier.due_on, invoices=invoices)
        tasks[key] = entry
    items = list(tasks.values())
    for promise in state.promises.values():
        promised = date.fromisoformat(promise["promised_date"])
        covered = tuple(promise.get("invoice_ids", []))
        if promised != on or (covered and not live.intersection(covered)):
            continue
        currency = promise["currency"]
        title = f"promised {promise['amount']} {currency} today"
        items.append(item("promise_due", title, promised, currency, covered, str(promise.get("note", ""))))
    if state.credit_block is not None:
        title = f"credit blocked ({state.credit_block['reason']})"
        blocked_on = date.fromisoformat(state.credit_block["blocked_on"])
        items.append(item("credit_blocked", title, blocked_on, _main_currency(overdue), ()))
    return items


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


def render_agenda(items: list[AgendaItem], tenant: str, on: date) -> str:
    lines = [f"agenda of {tenant} for {on.isoformat()}: {len(items)} item(s), largest amount at risk first", ""]
    if not items:
        lines.append("nothing to do")
        return "\n".join(lines)
    lines.append(f"  {'at risk':>16}  {'customer':<12} {'name':<28} {'since':<10}  what")
    for item in items:
        shown = ", ".join(item.invoices[:SHOWN_INVOICES])
        more = len(item.invoices) - SHOWN_INVOICES
        invoices = f" — {shown}" + (f" and {more} more" if more > 0 else "") if item.invoices else ""
        risk = f"{item.at_risk:>12,} {item.currency}" if item.kind != RATE_MISSING else f"{'':>16}"
        lines.append(
            f"  {risk}  {item.customer_id[:12]:<12} {item.customer_name[:28]:<28} "
            f"{item.due_on.isoformat():<10}  {item.title}{invoices}"
        )
    return "\n".join(lines)


def _main_currency(amounts: dict[str, Decimal]) -> str:
    return max(amounts, key=lambda c: amounts[c]) if amounts else ""
