"""A customer's tasks as a collector sees them on a day: open, snoozed, done, or closed by themselves, and why.

The fold (:mod:`shared.ledger.dunning`) keeps every task it was told of, with what people did to it (completed,
snoozed, assigned). Whether a task is still work to do is read here, from the state alone, on a given day:

* **done** — a person completed it (``done by <login>``; a letter completed with the outcome ``posted``: ``letter
  posted by <login>``);
* **closed** — its cause has gone, in words:

  - ``invoice paid`` / ``invoice cancelled`` — every invoice it names is settled, credited or cancelled (a
    ``claim_owed`` task, about settled invoices, stands while their claimed claims are owed: ``claims settled``);
  - ``invoice disputed`` — what it names is still open, but only under dispute (the dispute is the work now);
  - ``promise kept`` — a ``check_promise`` task whose promise the payments since its record cover, or whose
    invoices are all settled;
  - ``block lifted`` — a task about a credit block (``erp_command_failed`` / ``erp_command_rejected`` for a block)
    once relance lifted the block since (an unblock decided after it, no block in force); ``blocked again`` for one
    about an unblock once relance blocked the customer again since;
  - ``superseded by a later reminder`` — a ``send_letter`` task once a later reminder of its currency was decided;
  - ``handed over`` — a ``phone_call`` or ``send_letter`` task whose open invoices were all handed over to
    collection after it was created;
  - ``call logged`` — a ``phone_call`` task once a call with the customer was logged after it was created;
  - ``superseded`` — a ``phone_call`` task once a later call task of its currency names every invoice it still
    names (the firmer level says it all);

* **snoozed** — someone put it off to a day after the day looked at (its ``due_on`` is then that day);
* **open** — anything else.

:func:`paused_on` says whether the customer's pause (``customer.paused``) holds on a day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from shared.ledger.state import CustomerState

Status = Literal["open", "snoozed", "done", "closed"]
PHONE = "phone_call"
CLAIM_OWED = "claim_owed"  # services.escalation.claims.TASK: claims still owed on a settled invoice
BLOCK_COMMAND = "erp.credit_block"
UNBLOCK_COMMAND = "erp.credit_unblock"
_PROMISE_NOTE = re.compile(r"^promise (\S+?):? ")
ZERO = Decimal(0)


@dataclass(frozen=True)
class TaskView:
    """One task on a day: ``due_on`` is the day it is for (a snooze's day when later), ``cause`` why it is no longer
    work (None while open or snoozed)."""

    task_id: str
    kind: str
    due_on: date
    created_on: date
    invoice_ids: tuple[str, ...]
    currency: str
    note: str
    assignee: str | None
    status: Status
    cause: str | None

    @property
    def is_open(self) -> bool:
        return self.status == "open"


def paused_on(state: CustomerState, day: date) -> bool:
    """Whether the customer is paused on ``day`` (a day of the tenant): a pause holds through its ``until``,
    inclusive, unless resumed (a resumed pause is no longer the state's)."""
    pause = state.pause
    return pause is not None and day <= date.fromisoformat(pause["until"])


def pause_until(state: CustomerState) -> date | None:
    """The last day of the customer's pause as folded (past or not), None without one."""
    pause = state.pause
    return None if pause is None else date.fromisoformat(pause["until"])


def task_views(state: CustomerState, on: date) -> list[TaskView]:
    """Every task of the customer as it stands on ``on``, oldest first."""
    tasks = state.tasks
    views = [_view(state, task_id, task, on) for task_id, task in tasks.items()]
    return sorted(views, key=lambda v: (v.created_on, v.due_on, v.task_id))


def open_tasks(state: CustomerState, on: date) -> list[TaskView]:
    """The tasks still to do on ``on`` (any due day; neither done, closed nor snoozed past ``on``), oldest first."""
    return [view for view in task_views(state, on) if view.is_open]


# --------------------------------------------------------------------------------------------------- internals
def _view(state: CustomerState, task_id: str, task: Any, on: date) -> TaskView:
    due_on = _day(task.get("due_on")) or on
    created_on = _day(task.get("created_on")) or _day(task.get("created_at")) or due_on
    snoozed = _day(task.get("snoozed_until"))
    status: Status = "open"
    cause: str | None = None
    if task.get("status") == "done":
        status, cause = "done", _done(task)
    else:
        cause = _gone(state, task_id, task, created_on)
        if cause is not None:
            status = "closed"
        elif snoozed is not None and snoozed > on:
            status = "snoozed"
    if snoozed is not None and snoozed > due_on:
        due_on = snoozed
    assignee = task.get("assignee")
    return TaskView(
        task_id=task_id,
        kind=str(task["kind"]),
        due_on=due_on,
        created_on=created_on,
        invoice_ids=tuple(task.get("invoice_ids") or ()),
        currency=str(task.get("currency") or ""),
        note=str(task.get("note") or ""),
        assignee=str(assignee) if assignee else None,
        status=status,
        cause=cause,
    )


def _done(task: Any) -> str:
    who = str(task.get("done_by") or "someone")
    if task.get("kind") == "send_letter" and str(task.get("outcome", "")).strip().lower() == "posted":
        return f"letter posted by {who}"
    return f"done by {who}"


def _gone(state: CustomerState, task_id: str, task: Any, created_on: date) -> str | None:
    """Why the task's cause has gone, or None while it stands."""
    kind = str(task["kind"])
    named = list(task.get("invoice_ids") or ())
    if named:
        if kind == CLAIM_OWED:
            return None if _claims_owed(state, named) else "claims settled"
        invoices = [state.invoices.get(i) for i in named]
        still = [i for i in invoices if i is not None and i.is_open]
        if not still:
            known = [i for i in invoices if i is not None]
            return (
                "invoice cancelled" if known and all(i.invoice_id in state.cancelled for i in known) else "invoice paid"
            )
        if all(i.invoice_id in state.disputes for i in still):
            return "invoice disputed"
    if kind == "check_promise" and _promise_kept(state, task):
        return "promise kept"
    if kind in ("erp_command_failed", "erp_command_rejected"):
        return _block_gone(state, task, created_on)
    if kind in (PHONE, "send_letter") and _handed_over_since(state, task, created_on):
        return "handed over"
    if kind == "send_letter":
        return _letter_superseded(state, task, created_on)
    if kind == PHONE:
        return _call_gone(state, task_id, task, created_on)
    return None


def _handed_over_since(state: CustomerState, task: Any, created_on: date) -> bool:
    """Every open invoice the task names was handed over to collection after the task was created: the agency
    calls and writes now (a hand-over notice, created with the hand-over, stands)."""
    still = [i for i in task.get("invoice_ids") or () if i in state.invoices and state.invoices[i].is_open]
    if not still:
        return False
    for invoice_id in still:
        record = state.escalations.get(invoice_id)
        if record is None or "hand_over" not in record.actions or record.reached_on is None:
            return False
        if record.reached_on <= created_on:
            return False
    return True


def _claims_owed(state: CustomerState, invoice_ids: list[str]) -> bool:
    for invoice_id in invoice_ids:
        invoice = state.invoices.get(invoice_id)
        if invoice is None:
            continue
        owed = sum(
            (c.owed for c in state.claims.of_invoice(invoice_id) if c.claimed and c.currency == invoice.currency),
            ZERO,
        )
        if owed > 0:
            return True
    return False


def _promise_kept(state: CustomerState, task: Any) -> bool:
    """The task's promise (named by its note, else the one covering its invoices) is kept."""
    promise_id = None
    found = _PROMISE_NOTE.match(str(task.get("note") or ""))
    if found and found.group(1) in state.promises:
        promise_id = found.group(1)
    else:
        named = set(task.get("invoice_ids") or ())
        for key, raw in state.promises.items():
            if raw.get("currency") == task.get("currency") and set(raw.get("invoice_ids") or ()) == named:
                promise_id = key
    return promise_id is not None and promise_kept(state, promise_id)


def promise_kept(state: CustomerState, promise_id: str) -> bool:
    """The promise is kept: the payments and credit notes of its currency dated from its record add up to its
    amount, or nothing it covers is still open (the engine also bounds the payments by the promise's grace)."""
    raw = state.promises[promise_id]
    currency = raw["currency"]
    covered = raw.get("invoice_ids") or ()
    open_covered = [
        i
        for i in state.invoices.values()
        if i.currency == currency and i.is_open and (not covered or i.invoice_id in covered)
    ]
    if not open_covered:
        return True
    since = _day(state.promise_recorded.get(promise_id)) or _day(raw.get("promised_date")) or date.min
    paid = sum((c.amount for c in state.credits.values() if c.currency == currency and c.on >= since), ZERO)
    return paid >= Decimal(str(raw["amount"]))


def _block_gone(state: CustomerState, task: Any, created_on: date) -> str | None:
    """A task about a block closes once relance lifted the block (no block in force: the ERP must not block the
    customer any more, whenever the unblock was decided); one about an unblock once relance blocked the customer
    again (a failed unblock stays open while no block is in force: the ERP still holds the customer blocked)."""
    command = task.get("command")
    if command is None and task.get("command_id"):
        known = state.credit_commands.get(str(task["command_id"]))
        command = None if known is None else known["command"]
    decided = [c["command"] for c in state.credit_commands.values()]
    block = state.credit_block
    if command == BLOCK_COMMAND and block is None and UNBLOCK_COMMAND in decided:
        return "block lifted"
    if command == UNBLOCK_COMMAND and block is not None and decided and decided[-1] == BLOCK_COMMAND:
        return "blocked again"
    return None


def _letter_superseded(state: CustomerState, task: Any, created_on: date) -> str | None:
    currency = task.get("currency")
    latest = state.reminded.get(str(currency)) if currency else None
    if latest is None:
        return None
    on = _day(latest.get("at")) or _day(latest.get("on"))
    reminder = task.get("reminder_id")
    if on is not None and on > created_on and (not reminder or latest["reminder_id"] != reminder):
        return "superseded by a later reminder"
    return None


def _call_gone(state: CustomerState, task_id: str, task: Any, created_on: date) -> str | None:
    called = _day(state.dunning.last_call_at)
    if called is not None and called >= created_on:
        return "call logged"
    live = {i for i in task.get("invoice_ids") or () if i in state.invoices and state.invoices[i].is_open}
    due_on = _day(task.get("due_on")) or created_on
    for other_id, other in state.tasks.items():
        if other_id == task_id or other.get("kind") != PHONE or other.get("currency") != task.get("currency"):
            continue
        other_due = _day(other.get("due_on")) or date.min
        if other_due > due_on and live <= set(other.get("invoice_ids") or ()):
            return "superseded"
    return None


def _day(value: Any) -> date | None:
    """A day from an ISO day or instant (its UTC day), a date, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo is not None else value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None
