"""Read models of the workspace and the API, built from a customer's folded state and its stream.

Pydantic models, so that the API's answers are typed in the OpenAPI document and the pages read the same values.
Amounts are decimal strings with their currency beside them; sums are per currency, never across currencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from services.workspace.ports import AgendaLine
from shared.ledger import tasks as work
from shared.ledger.records import RecordedEvent
from shared.ledger.state import ZERO, CustomerState

EVIDENCE_FACTS = ("reminder.sent", "reminder.unconfirmed", "reminder.failed")
PEOPLE_EVENTS = (
    "task.completed",
    "task.snoozed",
    "task.assigned",
    "call.logged",
    "note.added",
    "customer.paused",
    "customer.resumed",
    "credit_limit.proposed",
    "credit_limit.approved",
    "credit_limit.rejected",
    "payment_plan.confirmation_requested",
)


class Money(BaseModel):
    amount: str
    currency: str


class CurrencySummary(BaseModel):
    currency: str
    balance: str  # open invoices' outstanding less unallocated credit
    overdue: str
    claims_owed: str
    unallocated: str
    open_invoices: int


class ClaimView(BaseModel):
    kind: str
    currency: str
    charged: str
    waived: str
    owed: str
    claimed: bool


class NextStep(BaseModel):
    """What comes next for an invoice: ``kind`` disputed | plan | promise | task | policy, from ``on``."""

    kind: str
    on: str | None = None
    detail: str = ""

    def text(self) -> str:
        if self.kind == "disputed":
            return "on hold: disputed"
        if self.kind == "plan":
            return f"plan instalment of {self.detail} due {self.on}"
        if self.kind == "promise":
            return f"promised for {self.on}"
        if self.kind == "task":
            return f"{self.detail.replace('_', ' ')} from {self.on}"
        return "the next level of the policy when due"


class InvoiceView(BaseModel):
    invoice_id: str
    number: str
    issue_date: date
    due_date: date
    currency: str
    amount: str
    outstanding: str
    days_late: int
    level: str | None
    level_reached_on: date | None
    next_step: str
    next: NextStep
    interest: str | None
    fees: str | None
    disputed: str | None  # the dispute's reason
    claims: list[ClaimView]


class TaskView(BaseModel):
    task_id: str
    kind: str
    due_on: str
    invoice_ids: list[str]
    note: str
    assignee: str | None
    snoozed_until: str | None


class PauseView(BaseModel):
    pause_id: str
    reason: str
    until: str
    author: str
    in_force: bool


class BlockView(BaseModel):
    block_id: str
    reason: str
    blocked_on: str
    erp_status: str | None


class CustomerRow(BaseModel):
    customer_id: str
    name: str
    balances: list[Money]
    overdue: list[Money]
    open_invoices: int
    highest_level: str | None
    paused: bool
    blocked: bool


class CustomerView(BaseModel):
    tenant: str
    customer_id: str
    name: str
    profile: dict[str, Any]
    version: int
    summary: list[CurrencySummary]
    open_invoices: list[InvoiceView]
    promises: list[dict[str, Any]]
    plans: list[dict[str, Any]]
    block: BlockView | None
    pause: PauseView | None
    tasks: list[TaskView]
    limit_proposals: list[dict[str, Any]]
    letters: list[dict[str, Any]] = []  # the letters relance rendered, newest first, with their proof


class TimelineEntry(BaseModel):
    version: int
    event_id: str
    event_type: str
    category: str  # erp | decision | email | letter | call | note | person | fact
    occurred_at: datetime
    recorded_at: datetime
    author: str | None
    source: str | None
    summary: str
    invoices: list[str]
    evidence: str | None  # the command id of an e-mail kept as sent
    data: dict[str, Any]


class AgendaEntry(BaseModel):
    kind: str
    title: str
    customer_id: str
    customer_name: str
    due_on: date
    currency: str
    at_risk: str
    invoices: list[str]
    note: str
    task_ids: list[str]
    assignee: str | None


class AgendaGroup(BaseModel):
    customer_id: str
    customer_name: str
    at_risk: list[Money]
    items: list[AgendaEntry]


def name_of(state: CustomerState) -> str:
    return str((state.profile or {}).get("name", ""))


def known(state: CustomerState) -> bool:
    return state.version > 0


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def pause_of(state: CustomerState, today: date) -> PauseView | None:
    pause = state.pause
    if not pause:
        return None
    until = str(pause.get("until", ""))
    in_force = not until or until >= today.isoformat()
    return PauseView(
        pause_id=str(pause.get("pause_id", "")),
        reason=str(pause.get("reason", "")),
        until=until,
        author=str(pause.get("author", "")),
        in_force=in_force,
    )


def open_tasks(state: CustomerState, today: date) -> list[TaskView]:
    """The work still to do for the customer: neither done, closed by its cause, nor snoozed past today."""
    return [
        TaskView(
            task_id=view.task_id,
            kind=view.kind,
            due_on=view.due_on.isoformat(),
            invoice_ids=list(view.invoice_ids),
            note=view.note,
            assignee=view.assignee,
            snoozed_until=(state.tasks.get(view.task_id) or {}).get("snoozed_until"),  # type: ignore[call-overload]
        )
        for view in sorted(work.open_tasks(state, today), key=lambda v: (v.due_on, v.task_id))
    ]


def summary(state: CustomerState, today: date) -> list[CurrencySummary]:
    balances, overdue = state.balances(), state.overdue(today)
    owed, free = state.claims_owed(), state.unallocated()
    counts: dict[str, int] = {}
    for invoice in state.open_invoices():
        counts[invoice.currency] = counts.get(invoice.currency, 0) + 1
    currencies = sorted(set(balances) | set(overdue) | set(owed) | set(free) | set(counts))
    return [
        CurrencySummary(
            currency=c,
            balance=str(balances.get(c, ZERO)),
            overdue=str(overdue.get(c, ZERO)),
            claims_owed=str(owed.get(c, ZERO)),
            unallocated=str(free.get(c, ZERO)),
            open_invoices=counts.get(c, 0),
        )
        for c in currencies
    ]


def _next_step(state: CustomerState, invoice_id: str, tasks: list[TaskView], today: date) -> NextStep:
    if invoice_id in state.disputes:
        return NextStep(kind="disputed")
    for plan in state.plans.values():
        if invoice_id in plan.get("invoice_ids", []):
            coming = [i for i in plan.get("instalments", []) if str(i.get("due_date", "")) >= today.isoformat()]
            if coming:
                return NextStep(kind="plan", on=str(coming[0].get("due_date")), detail=str(coming[0].get("amount")))
    for promise in state.promises.values():
        if invoice_id in promise.get("invoice_ids", []) and str(promise.get("promised_date", "")) >= today.isoformat():
            return NextStep(kind="promise", on=str(promise.get("promised_date")))
    for task in tasks:
        if invoice_id in task.invoice_ids:
            return NextStep(kind="task", on=task.due_on, detail=task.kind)
    return NextStep(kind="policy")


def invoices(state: CustomerState, today: date) -> list[InvoiceView]:
    tasks = open_tasks(state, today)
    views = []
    for invoice in sorted(state.open_invoices(), key=lambda i: (i.due_date, i.invoice_id)):
        escalation = state.escalations.get(invoice.invoice_id)
        step = _next_step(state, invoice.invoice_id, tasks, today)
        claims = [
            ClaimView(
                kind=c.kind,
                currency=c.currency,
                charged=str(c.charged),
                waived=str(c.waived),
                owed=str(c.owed),
                claimed=c.claimed,
            )
            for c in state.claims.of_invoice(invoice.invoice_id)
            if not c.void
        ]
        views.append(
            InvoiceView(
                invoice_id=invoice.invoice_id,
                number=invoice.number,
                issue_date=invoice.issue_date,
                due_date=invoice.due_date,
                currency=invoice.currency,
                amount=str(invoice.amount),
                outstanding=str(invoice.outstanding),
                days_late=max(0, (today - invoice.due_date).days),
                level=None if escalation is None else escalation.level,
                level_reached_on=None if escalation is None else escalation.reached_on,
                next_step=step.text(),
                next=step,
                interest=None if escalation is None else _s(escalation.interest),
                fees=None if escalation is None else _s(escalation.fee),
                disputed=state.disputes.get(invoice.invoice_id),
                claims=claims,
            )
        )
    return views


def customer_view(state: CustomerState, today: date) -> CustomerView:
    block = state.credit_block
    ack: dict[str, Any] = dict((block.get("acknowledgement") if block is not None else None) or {})
    proposals = state.limit_proposals
    return CustomerView(
        tenant=state.tenant,
        customer_id=state.customer_id,
        name=name_of(state),
        profile=dict(state.profile or {}),
        version=state.version,
        summary=summary(state, today),
        open_invoices=invoices(state, today),
        promises=[{"promise_id": k, **v} for k, v in sorted(state.promises.items())],
        plans=[{"plan_id": k, **v} for k, v in sorted(state.plans.items())],
        block=None
        if block is None
        else BlockView(
            block_id=block["block_id"],
            reason=block["reason"],
            blocked_on=block["blocked_on"],
            erp_status=ack.get("status"),
        ),
        pause=pause_of(state, today),
        tasks=open_tasks(state, today),
        limit_proposals=[{"proposal_id": k, **v} for k, v in sorted(proposals.items())],
        letters=[dict(letter) for letter in reversed(state.letters.values())],
    )


def customer_row(state: CustomerState, today: date) -> CustomerRow:
    levels = [e.level for e in state.escalations.values() if e.level and e.invoice_id in _open_ids(state)]
    return CustomerRow(
        customer_id=state.customer_id,
        name=name_of(state),
        balances=[Money(amount=str(v), currency=c) for c, v in sorted(state.balances().items()) if v],
        overdue=[Money(amount=str(v), currency=c) for c, v in sorted(state.overdue(today).items()) if v],
        open_invoices=len(state.open_invoices()),
        highest_level=max(levels, key=lambda lv: _level_rank(state, lv)) if levels else None,
        paused=bool((p := pause_of(state, today)) and p.in_force),
        blocked=state.credit_block is not None,
    )


def _open_ids(state: CustomerState) -> set[str]:
    return {i.invoice_id for i in state.open_invoices()}


def _level_rank(state: CustomerState, level: str) -> int:
    return max((e.offset_days for e in state.escalations.values() if e.level == level), default=0)


# ------------------------------------------------------------------------------------------------ timeline
def _category(event: RecordedEvent) -> str:
    kind = event.event_type
    if kind in EVIDENCE_FACTS or kind == "reminder.sending" or kind == "reminder.deferred":
        return "email"
    if kind.startswith("letter.") or kind == "reminder.posted":
        return "letter"
    if kind == "call.logged":
        return "call"
    if kind == "note.added":
        return "note"
    if kind in PEOPLE_EVENTS or (event.metadata or {}).get("author"):
        return "person"
    if kind.startswith(("customer.", "invoice.", "payment.", "credit_note.", "promise_to_pay.", "payment_plan.")):
        return "erp"
    if kind.startswith("erp."):
        return "erp"
    return "decision"


_SUMMARY_FIELDS = (
    "letter_id",
    "level",
    "pages",
    "posted_on",
    "tracking_number",
    "carrier",
    "delivered_on",
    "returned_on",
    "batch_id",
    "amount",
    "currency",
    "promised_date",
    "received_on",
    "due_date",
    "reason",
    "resolution",
    "outcome",
    "kind",
    "until",
    "status",
    "subject",
    "text",
    "note",
    "name",
)


def _summary(event: RecordedEvent, numbers: dict[str, str]) -> str:
    data = event.data
    parts = []
    for key in _SUMMARY_FIELDS:
        value = data.get(key)
        if value in (None, "", [], {}):
            continue
        if isinstance(value, dict | list):
            continue
        text = str(value)
        parts.append(f"{key.replace('_', ' ')}: {text[:300]}")
    return " · ".join(parts)


def _invoices_of(data: dict[str, Any], numbers: dict[str, str]) -> list[str]:
    ids: list[str] = []
    if isinstance(data.get("invoice_id"), str):
        ids.append(data["invoice_id"])
    for key in ("invoice_ids",):
        if isinstance(data.get(key), list):
            ids.extend(str(i) for i in data[key])
    lines = data.get("lines")
    for line in lines if isinstance(lines, list) else []:
        if isinstance(line, dict) and line.get("invoice_id"):
            ids.append(str(line["invoice_id"]))
    if isinstance(data.get("number"), str) and data.get("invoice_id"):
        numbers.setdefault(data["invoice_id"], data["number"])
    return [numbers.get(i, i) for i in dict.fromkeys(ids)]


def timeline(stream: Sequence[RecordedEvent], state: CustomerState) -> list[TimelineEntry]:
    """The customer's whole history, newest first: ERP events, decisions, e-mails, letters, calls, notes."""
    numbers = {i.invoice_id: i.number for i in state.invoices.values()}
    entries = []
    for event in stream:
        meta = event.metadata or {}
        author = meta.get("author") or event.data.get("author")
        command = event.data.get("command_id") if event.event_type in EVIDENCE_FACTS else None
        entries.append(
            TimelineEntry(
                version=event.version,
                event_id=event.event_id,
                event_type=event.event_type,
                category=_category(event),
                occurred_at=event.occurred_at,
                recorded_at=event.recorded_at,
                author=None if author is None else str(author),
                source=meta.get("source"),
                summary=_summary(event, numbers),
                invoices=_invoices_of(event.data, numbers),
                evidence=str(command) if command and event.data.get("sha256") else None,
                data=event.data,
            )
        )
    return list(reversed(entries))


# ------------------------------------------------------------------------------------------------ agenda
def agenda_entry(item: AgendaLine, numbers: dict[str, str]) -> AgendaEntry:
    invoices_shown = list(item.numbers) if item.numbers else [numbers.get(i, i) for i in item.invoices]
    return AgendaEntry(
        kind=item.kind,
        title=item.title,
        customer_id=item.customer_id,
        customer_name=item.customer_name,
        due_on=item.due_on,
        currency=item.currency,
        at_risk=str(item.at_risk),
        invoices=invoices_shown,
        note=item.note,
        task_ids=list(item.task_ids),
        assignee=item.assignee,
    )


def grouped(entries: Sequence[AgendaEntry]) -> list[AgendaGroup]:
    """Per customer, in the order of each customer's largest amount at risk (the agenda's own order)."""
    groups: dict[str, AgendaGroup] = {}
    for entry in entries:
        group = groups.get(entry.customer_id)
        if group is None:
            group = groups[entry.customer_id] = AgendaGroup(
                customer_id=entry.customer_id, customer_name=entry.customer_name, at_risk=[], items=[]
            )
        group.items.append(entry)
    for group in groups.values():
        best: dict[str, Decimal] = {}
        for entry in group.items:
            if entry.currency:
                best[entry.currency] = max(best.get(entry.currency, ZERO), Decimal(entry.at_risk))
        group.at_risk = [Money(amount=str(v), currency=c) for c, v in sorted(best.items()) if v]
    return list(groups.values())
