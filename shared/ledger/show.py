"""What ``relance ledger show`` prints: a customer's stream and the state projected from it.

Claims (late interest, indemnities) are shown per invoice apart from principal: charged, paid, waived, owed, and
whether the customer was asked for them yet. What paid a claim is a derivation of the fold, not an event: money a
payment or credit note left unallocated settles the claims by the policy's rule (:mod:`shared.ledger.claims`), and
each claim lists the credits that settled it ("paid by payment:P-1 12.00"), which the stream above lets anyone redo.

With ``--as-of``, the account as it stood at an instant (:mod:`shared.ledger.asof`), in one reading or both:
:func:`render_as_of` and :func:`as_of_document`. Each reading is named in its heading; the two are followed by the
events that make them differ (the late records), each said in one line.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.ledger import snapshot
from shared.ledger.asof import READINGS, AccountAsOf, Reading, happened
from shared.ledger.claims import Claim
from shared.ledger.dunning import Acknowledgement
from shared.ledger.letters import proof
from shared.ledger.records import RecordedEvent
from shared.ledger.state import CustomerState
from shared.ledger.tasks import open_tasks, paused_on
from shared.ledger.terms import CAP_NOTE, beyond_french_cap

_SUMMARY_FIELDS = (
    "number",
    "invoice_id",
    "payment_id",
    "credit_note_id",
    "promise_id",
    "plan_id",
    "amount",
    "currency",
    "due_date",
    "received_on",
    "name",
    "command",
    "status",
    "erp_reference",
    "reason",
)


def stream_document(stream: list[RecordedEvent], state: CustomerState) -> dict[str, Any]:
    """The stream and state as one JSON-ready document (amounts stay decimal strings)."""
    return {
        "tenant": state.tenant,
        "customer_id": state.customer_id,
        "version": state.version,
        "head_hash": state.head_hash,
        "events": [
            {
                "position": e.position,
                "version": e.version,
                "event_id": e.event_id,
                "event_type": e.event_type,
                "occurred_at": e.occurred_at.isoformat(),
                "recorded_at": e.recorded_at.isoformat(),
                "data": e.data,
                "metadata": e.metadata,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            }
            for e in stream
        ],
        "state": {
            "profile": state.profile,
            "balances": {c: str(v) for c, v in sorted(state.balances().items())},
            "claims_owed": {c: str(v) for c, v in sorted(state.claims_owed().items())},
            "claims": [_claim_document(claim) for claim in state.claims.all()],
            "unallocated_credit": {c: str(v) for c, v in sorted(state.unallocated().items())},
            "invoices": state.to_json()["invoices"],
            # invoices whose terms exceed the French cap (shared.ledger.terms): flagged, never refused
            "beyond_french_cap": sorted(
                i.invoice_id for i in state.invoices.values() if beyond_french_cap(i.issue_date, i.due_date)
            ),
            "credits": state.to_json()["credits"],
            "disputes": state.disputes,
            "cancelled": state.cancelled,
            "promises": state.promises,
            "plans": state.plans,
            "escalations": state.to_json()["escalations"],
            "credit_block": state.credit_block,
            "acknowledgements": state.acknowledgements,
            "tasks": state.tasks,
            "pause": state.pause,
            "limit_proposals": state.limit_proposals,
            "letters": state.letters,
        },
    }


def render_stream(stream: list[RecordedEvent], state: CustomerState) -> str:
    name = (state.profile or {}).get("name", "")
    lines = [f"customer {state.customer_id} of {state.tenant}" + (f" — {name}" if name else "")]
    lines.append(f"stream version {state.version}, head hash {state.head_hash[:16]}…")
    lines.append("")
    lines.append(f"{'ver':>4}  {'recorded (UTC)':<19}  {'type':<24}  {'event_id':<24}  summary")
    for event in stream:
        summary = ", ".join(f"{k}={event.data[k]}" for k in _SUMMARY_FIELDS if k in event.data)
        lines.append(
            f"{event.version:>4}  {event.recorded_at:%Y-%m-%d %H:%M:%S}  {event.event_type:<24}  "
            f"{event.event_id[:24]:<24}  {summary}"
        )
    lines.append("")
    lines.append("invoices")
    lines.append(f"  {'number':<16} {'issued':<10} {'due':<10} {'amount':>14} {'outstanding':>14}  status")
    for invoice in sorted(state.invoices.values(), key=lambda i: (i.due_date, i.invoice_id)):
        flags = invoice.status + (" disputed" if invoice.invoice_id in state.disputes else "")
        flags += " beyond-french-cap" if beyond_french_cap(invoice.issue_date, invoice.due_date) else ""
        lines.append(
            f"  {invoice.number[:16]:<16} {invoice.issue_date} {invoice.due_date} "
            f"{_money(invoice.amount, invoice.currency):>14} {_money(invoice.outstanding, invoice.currency):>14}  "
            f"{flags}"
        )
    if any(beyond_french_cap(i.issue_date, i.due_date) for i in state.invoices.values()):
        lines.append(f"  beyond-french-cap: {CAP_NOTE}, under every reading; flagged, not refused")
    if state.credits:
        lines.append("")
        lines.append("payments and credit notes")
        for credit in sorted(state.credits.values(), key=lambda c: (c.on, c.key)):
            applied = ", ".join(f"{inv} {_money(a, credit.currency)}" for inv, a in credit.applied.items())
            waiting = credit.free + sum(credit.earmarks.values(), Decimal(0))
            lines.append(
                f"  {credit.key:<28} {credit.on} {_money(credit.amount, credit.currency):>14}"
                f"  applied: {applied or '-'}"
                + (f"; unallocated {_money(waiting, credit.currency)}" if waiting else "")
            )
    if state.escalations:
        lines.append("")
        lines.append("dunning")
        lines.append(f"  {'invoice':<16} {'level':<16} {'since':<10}")  # its interest and fee: under claims
        for record in sorted(state.escalations.values(), key=lambda r: r.invoice_id):
            known = state.invoices.get(record.invoice_id)
            lines.append(
                f"  {(known.number if known else record.invoice_id)[:16]:<16} {(record.level or '-')[:16]:<16} "
                f"{record.reached_on.isoformat() if record.reached_on else '-':<10}"
            )
    lines += _claims_lines(state)
    if state.credit_block is not None:
        lines.append(
            f"credit blocked since {state.credit_block['blocked_on']} ({state.credit_block['reason']}, "
            f"{state.credit_block['block_id']})"
        )
        if "command_id" in state.credit_block:
            ack = state.credit_block.get("acknowledgement")
            lines.append(f"  {_acknowledged(ack) if ack else 'not yet acknowledged by the ERP'}")
    if state.acknowledgements:
        lines.append("")
        lines.append("ERP acknowledgements")
        for command_id, ack in state.acknowledgements.items():
            unknown = "" if command_id in state.credit_commands else " (a command this ledger does not know)"
            lines.append(f"  {ack['command']:<18} {command_id}{unknown}: {_acknowledged(ack)}")
    if state.letters:
        lines.append("")
        lines.append("letters (the PDF: relance letters show --letter ID)")
        for letter in state.letters.values():
            what = letter.get("level") or letter.get("kind", "")
            lines.append(
                f"  {letter['letter_id']:<20} {what:<14} {letter['pages']:>2} page(s)  "
                f"sha256 {letter['sha256'][:16]}…  {proof(letter)}"
            )
    for task in sorted(state.tasks.values(), key=lambda t: t["due_on"]):
        invoices = ", ".join(task.get("invoice_ids", []))
        done = ""
        if task.get("status") == "done":
            done = f" (done by {task.get('done_by', '?')}: {task.get('outcome', '')})"
        lines.append(f"task {task['due_on']}: {task['kind'].replace('_', ' ')} {invoices}{done}")
    if state.pause is not None:
        pause = state.pause
        lines.append(f"paused through {pause['until']} by {pause['author']}: {pause['reason']}")
    lines.append("")
    return "\n".join([*lines, *_balance_lines(state)])


def _balance_lines(state: CustomerState) -> list[str]:
    """The balance, the claims owed besides it and the unallocated credit: the last lines of both views."""
    balances = state.balances()
    lines = [
        "balance: " + (", ".join(_money(v, c) for c, v in sorted(balances.items())) if balances else "nothing due")
    ]
    owed = state.claims_owed()
    if owed:
        lines.append("claims owed besides: " + ", ".join(_money(v, c) for c, v in sorted(owed.items())))
    unallocated = state.unallocated()
    if unallocated:
        lines.append("unallocated credit: " + ", ".join(_money(v, c) for c, v in sorted(unallocated.items())))
    return lines


def _claims_lines(state: CustomerState) -> list[str]:
    # a claim claimed before anything was charged on it (no indemnity in that currency) is not worth a line
    claims = [c for c in state.claims.all() if c.charged or c.settled or c.waived]
    if not claims:
        return []
    lines = ["", "claims (interest and indemnities, besides principal)"]
    lines.append(
        f"  {'invoice':<16} {'kind':<10} {'charged':>14} {'paid':>12} {'waived':>12} {'owed':>14}  claimed  principal"
    )
    for claim in claims:
        known = state.invoices.get(claim.invoice_id)
        settled = known is not None and known.status == "paid"
        principal = "cancelled" if claim.void else ("settled" if settled else "open")
        figure = _money(claim.charged, claim.currency)
        if claim.kind == "interest" and claim.through is not None:
            principal += f", interest {'fixed' if claim.fixed else 'accrued'} through {claim.through}"
        lines.append(
            f"  {(known.number if known else claim.invoice_id)[:16]:<16} {claim.kind:<10} {figure:>14} "
            f"{claim.allocated:>12,} {claim.waived:>12,} {_money(claim.owed, claim.currency):>14}  "
            f"{'yes' if claim.claimed else 'not yet':<7}  {principal}"
        )
        for key, amount in claim.settled.items():
            lines.append(f"      paid by {key} {_money(amount, claim.currency)}")
        for waiver in claim.waivers:
            lines.append(f"      waived {waiver['amount']} by {waiver['author']}: {waiver['reason']}")
    return lines


def _claim_document(claim: Claim) -> dict[str, Any]:
    """A claim as the snapshot keeps it, with what was paid and what is owed."""
    return {**snapshot.claim_json(claim), "paid": str(claim.allocated), "owed": str(claim.owed)}


def _acknowledged(ack: Acknowledgement) -> str:
    text = f"{ack['status']} by the ERP at {ack['at'][:19].replace('T', ' ')}"
    if ack.get("erp_reference"):
        text += f", ERP reference {ack['erp_reference']}"
    return text + (f" — {ack['reason']}" if ack.get("reason") else "")


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,} {currency}"


# ---------------------------------------------------------------------------------------------------- as of
def render_as_of(account: AccountAsOf) -> str:
    """Each reading's account at the instant, one after the other, then what makes them differ (if both)."""
    parts = [_render_reading(state, account.at, reading) for reading, state in account.states.items()]
    if len(account.states) > 1:
        lines = ["differences between the two readings"]
        if account.late:
            lines.append("  occurred by that instant, recorded after it (in 'occurred', not in 'known'):")
            lines += [f"  {late_line(event)}" for event in account.late]
        else:
            lines.append("  none: everything that had occurred by that instant was already recorded")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _render_reading(state: CustomerState, at: datetime, reading: Reading) -> str:
    day = at.date()
    lines = [f"as of {_instant(at)} — reading '{reading}': {READINGS[reading]}"]
    if not state.version:
        lines.append("  nothing yet in this reading")
        return "\n".join(lines)
    name = (state.profile or {}).get("name", "")
    lines.append(f"customer {state.customer_id} of {state.tenant}" + (f" — {name}" if name else ""))
    lines.append(f"stream up to version {state.version}")
    lines.append("")
    lines.append("open invoices")
    lines.append(
        f"  {'number':<16} {'due':<10} {'amount':>14} {'outstanding':>14} {'days late':>9}  {'level':<16} since"
    )
    invoices = sorted(state.open_invoices(), key=lambda i: (i.due_date, i.invoice_id))
    for invoice in invoices:
        record = state.escalations.get(invoice.invoice_id)
        level = (record.level if record and record.level else "-")[:16]
        since = record.reached_on.isoformat() if record and record.reached_on else "-"
        disputed = "  disputed" if invoice.invoice_id in state.disputes else ""
        lines.append(
            f"  {invoice.number[:16]:<16} {invoice.due_date} {_money(invoice.amount, invoice.currency):>14} "
            f"{_money(invoice.outstanding, invoice.currency):>14} {max(0, (day - invoice.due_date).days):>9}  "
            f"{level:<16} {since}{disputed}"
        )
    if not invoices:
        lines.append("  none")
    lines += _claims_lines(state)
    numbers = {i.invoice_id: i.number for i in state.invoices.values()}
    if state.promises:
        lines.append("")
        lines.append("promises")
        for promise_id, promise in sorted(state.promises.items()):
            what = ", ".join(numbers.get(i, i) for i in promise.get("invoice_ids", []))
            lines.append(
                f"  {promise_id}: {promise.get('amount')} {promise.get('currency')} for {promise.get('promised_date')}"
                + (f" ({what})" if what else "")
            )
    if state.disputes:
        lines.append("")
        lines.append("disputes")
        for invoice_id, reason in sorted(state.disputes.items()):
            lines.append(f"  {numbers.get(invoice_id, invoice_id)}: {reason}")
    if state.credit_block is not None:
        block = state.credit_block
        lines.append(f"credit blocked since {block['blocked_on']} ({block['reason']}, {block['block_id']})")
    if state.pause is not None:
        pause = state.pause
        held = "in force" if paused_on(state, day) else "over by then"
        lines.append(f"paused through {pause['until']} ({held}) by {pause['author']}: {pause['reason']}")
    tasks = open_tasks(state, day)
    lines.append("")
    lines.append(f"tasks open on {day}" + ("" if tasks else ": none"))
    for task in tasks:
        invoices_of = ", ".join(numbers.get(i, i) for i in task.invoice_ids)
        who = f" (assigned to {task.assignee})" if task.assignee else ""
        lines.append(f"  {task.due_on}: {task.kind.replace('_', ' ')} {invoices_of}{who}".rstrip())
    lines.append("")
    return "\n".join([*lines, *_balance_lines(state)])


def as_of_document(account: AccountAsOf) -> dict[str, Any]:
    """``{"as_of", "readings": {reading: account}, "late_records": [...]}``, JSON-ready (amounts as strings)."""
    return {
        "as_of": account.at.isoformat(),
        "readings": {
            reading: account_document(state, account.at, reading) for reading, state in account.states.items()
        },
        "late_records": [late_document(event) for event in account.late],
    }


def account_document(state: CustomerState, at: datetime, reading: Reading) -> dict[str, Any]:
    """One reading's account at ``at``: what :func:`_render_reading` prints, as data."""
    day = at.date()
    invoices = []
    for invoice in sorted(state.open_invoices(), key=lambda i: (i.due_date, i.invoice_id)):
        record = state.escalations.get(invoice.invoice_id)
        invoices.append(
            {
                "invoice_id": invoice.invoice_id,
                "number": invoice.number,
                "issue_date": invoice.issue_date.isoformat(),
                "due_date": invoice.due_date.isoformat(),
                "currency": invoice.currency,
                "amount": str(invoice.amount),
                "outstanding": str(invoice.outstanding),
                "days_late": max(0, (day - invoice.due_date).days),
                "level": record.level if record else None,
                "level_reached_on": record.reached_on.isoformat() if record and record.reached_on else None,
                "disputed": invoice.invoice_id in state.disputes,
            }
        )
    return {
        "reading": reading,
        "meaning": READINGS[reading],
        "version": state.version,
        "profile": state.profile,
        "balances": {c: str(v) for c, v in sorted(state.balances().items())},
        "claims_owed": {c: str(v) for c, v in sorted(state.claims_owed().items())},
        "unallocated_credit": {c: str(v) for c, v in sorted(state.unallocated().items())},
        "open_invoices": invoices,
        "claims": [_claim_document(claim) for claim in state.claims.all()],
        "promises": state.promises,
        "plans": state.plans,
        "disputes": state.disputes,
        "credit_block": state.credit_block,
        "pause": None if state.pause is None else {**state.pause, "in_force": paused_on(state, day)},
        "tasks_open": [
            {
                "task_id": task.task_id,
                "kind": task.kind,
                "due_on": task.due_on.isoformat(),
                "invoice_ids": list(task.invoice_ids),
                "assignee": task.assignee,
                "note": task.note,
            }
            for task in open_tasks(state, day)
        ],
    }


def late_document(event: RecordedEvent) -> dict[str, Any]:
    return {
        "version": event.version,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "occurred_at": happened(event).isoformat(),
        "recorded_at": event.recorded_at.isoformat(),
        "summary": late_line(event),
    }


_LATE_NAMES = {  # event type -> (what it is called, the data key of its id)
    "payment.received": ("payment", "payment_id"),
    "credit_note.issued": ("credit note", "credit_note_id"),
    "invoice.issued": ("invoice", "number"),
    "invoice.cancelled": ("cancellation of invoice", "invoice_id"),
    "invoice.disputed": ("dispute of invoice", "invoice_id"),
    "invoice.dispute_resolved": ("resolution of the dispute of invoice", "invoice_id"),
    "promise_to_pay.recorded": ("promise", "promise_id"),
    "payment_plan.agreed": ("payment plan", "plan_id"),
}


def late_line(event: RecordedEvent) -> str:
    """One late record in a sentence: "payment PAY-1 of 120.00 EUR occurred on 2026-09-29, recorded 2026-10-02"."""
    what, key = _LATE_NAMES.get(event.event_type, (event.event_type, ""))
    ident = str(event.data.get(key) or event.event_id) if key else event.event_id
    amount = event.data.get("amount")
    figure = f" of {amount} {event.data.get('currency', '')}".rstrip() if amount is not None else ""
    return (
        f"{what} {ident}{figure} occurred on {happened(event):%Y-%m-%d}, recorded {event.recorded_at:%Y-%m-%d} "
        f"(version {event.version})"
    )


def _instant(at: datetime) -> str:
    if at.time().replace(tzinfo=None) == datetime.max.time():
        return f"the end of {at:%Y-%m-%d} (UTC)"
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"
