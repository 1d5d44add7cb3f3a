"""The dunning part of a customer's state: relance's own decisions as the engine left them, and the ERP's word on them.

The fold of the events :mod:`shared.contracts.events` types (levels reached, interest, fees, reminders, credit
blocks, tasks) and of the ERP's ``erp.command_acknowledged``, pure Python, so that deciding again from the folded
state finds nothing new (see :mod:`services.escalation.engine`). Facts recorded for people and auditors (the clock
ticks, the notifier's ``reminder.sending`` / ``reminder.sent``, ``command.dead_lettered``, whose task comes with it)
change nothing here.

People's actions (:mod:`shared.contracts.events`, each with its ``author``) fold here too: a task completed,
snoozed or assigned keeps its ``task.created`` data and gains the keys of :class:`Task` that say so; a call with a
next-action day adds a ``follow_up`` task; the customer's pause in force (:class:`Pause`) and the credit-limit
proposals with their decisions (:class:`LimitProposal`); the letters relance rendered with their printing, posting
and delivery (:class:`Letter`; posting one closes its ``send_letter`` task). A note, a plan's confirmation and a
call without a next action change nothing here (the log and the timeline keep them). None of this is read by the
engine's ladder but the pause (through :func:`shared.ledger.tasks.paused_on`) and the tasks' ids.

The credit commands relance decided and the ERP's acknowledgements of them are remembered per command kind, the
newest :data:`KEPT_PER_KIND` of each (the log keeps them all). Per command, the acknowledgement that occurred last
stands, whatever order they arrive in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Required, TypedDict, TypeVar, cast

from shared.contracts import erp, events
from shared.contracts.events import Event, data_of
from shared.ledger.letters import task_id as letter_task_id
from shared.ledger.receivables import Check, Touched, earlier, later

KEPT_PER_KIND = 20
KEPT_CONTACTS = 64  # more than any cadence window can count
PHONE_TASK = "phone_call"
REJECTED_TASK = "erp_command_rejected"  # the kind of task a refused command leaves for a collector
# event type appended to the ledger -> the command to the ERP it causes: the ERP's part of the outbox's table
CREDIT_COMMANDS = {
    event_type: kind
    for event_type, kind in events.COMMANDS.items()
    if kind in (events.CREDIT_BLOCK, events.CREDIT_UNBLOCK)
}
_ACK_FIELDS = ("command", "status", "reason", "erp_reference")
_TASK_FIELDS = ("kind", "due_on", "invoice_ids", "currency", "amount_at_risk", "note", "command", "semester")
FOLLOW_UP_TASK = "follow_up"  # the kind of task a call with a next-action day leaves
FOLLOW_UP_NOTE = 200  # characters of the call's note a follow-up task keeps
DONE = "done"  # a task's ``status`` once completed (absent: open)


def follow_up_id(call_id: str) -> str:
    """The id of the follow-up task a call with a next-action day adds."""
    return f"follow-up-{call_id}"


class Task(TypedDict, total=False):
    """A collector's task as the state keeps it: a ``task.created``'s data, or a refused command's task."""

    kind: Required[str]
    due_on: Required[str]
    invoice_ids: list[str]
    currency: str
    amount_at_risk: str
    note: str
    command: str  # the command an erp_command_failed task is about
    semester: str  # the semester whose rate an interest_unavailable task waits for
    command_id: str  # the command an erp_command_rejected task is about
    # What people did with it (task.completed / snoozed / assigned), and where a follow-up came from
    status: str  # "done" once completed; absent while open
    outcome: str  # what came of it, in the words of whoever completed it
    done_at: str  # the instant it was completed (capped occurred_at)
    done_by: str  # the login of whoever completed it
    snoozed_until: str  # ISO day: off the agenda until then
    assignee: str  # the login of whoever it is given to
    source_id: str  # the call that made a follow-up task


class Pause(TypedDict):
    """The customer's pause in force: no level, reminder, fee, block or hand-over through ``until`` (ISO day)."""

    pause_id: str
    reason: str
    until: str
    author: str
    at: str  # the instant it was recorded (capped occurred_at)


class LimitProposal(TypedDict):
    """A proposed credit limit and what a credit manager decided (``status``: proposed, approved, rejected)."""

    currency: str
    amount: str
    reason: str
    author: str
    at: str
    status: str
    decided_by: str | None
    decided_at: str | None
    note: str | None


class Letter(TypedDict, total=False):
    """A letter relance rendered and what became of it: ``status`` rendered, printed, posted, delivered or returned.

    The proof a court asks for of a formal notice: the exact PDF (its ``sha256``; the bytes in ``letters``), the day
    it was posted with the carrier's tracking number, and the day it was delivered (or came back, and why).
    """

    letter_id: Required[str]
    command_id: Required[str]
    status: Required[str]
    sha256: Required[str]
    pages: Required[int]
    rendered_at: Required[str]
    kind: str
    reminder_id: str
    level: str
    task_id: str  # the send_letter task posting it closes
    batch_id: str  # the print batch it went into, and the day
    printed_on: str
    posted_on: str
    tracking_number: str
    carrier: str
    posted_by: str
    delivered_on: str
    returned_on: str
    return_reason: str
    note: str


LETTER_STATUSES = ("rendered", "printed", "posted", "delivered", "returned")


class Acknowledgement(TypedDict, total=False):
    """The ERP's latest word on a command, and when it occurred (capped)."""

    command: Required[str]
    status: Required[str]
    reason: str
    erp_reference: str
    at: Required[str]


class CreditCommand(TypedDict):
    """A credit command relance decided: its kind, its block episode, the day."""

    command: str
    block_id: str
    on: str


class Block(TypedDict, total=False):
    """The open block episode, and once its command is known, the ERP's word on it."""

    block_id: Required[str]
    reason: Required[str]
    blocked_on: Required[str]
    command_id: str
    acknowledgement: Acknowledgement | None


class Reminded(TypedDict, total=False):
    """The last reminder of a currency (``at``: the instant it was decided for, absent before it was kept)."""

    reminder_id: Required[str]
    level: Required[str]
    on: Required[str]
    at: str


class Notice(TypedDict):
    """A written level sent for an invoice: the level, the reminder, the instant it was decided for."""

    level: str
    reminder_id: str
    at: str


@dataclass
class Escalation:
    """Where one invoice stands on the dunning ladder, as the engine's decisions left it."""

    invoice_id: str
    currency: str
    level: str | None = None  # key of the last level reached
    offset_days: int = 0  # that level's offset, to place the invoice on a changed ladder
    reached_on: date | None = None
    anchor: date | None = None  # the due date the ladder was counted from, once re-anchored
    passed: list[str] = field(default_factory=list)  # every level reached or passed over, in order
    actions: set[str] = field(default_factory=set)  # actions of every level reached or passed over
    interest: Decimal | None = None  # late interest owed through ``interest_through``
    interest_through: date | None = None
    fee: Decimal | None = None  # fixed recovery fee, charged once
    # What the customer was told, apart from what the invoice reached: the written levels sent (oldest first) and
    # every level addressed to the customer, written or by phone.
    notices: list[Notice] = field(default_factory=list)
    told: list[str] = field(default_factory=list)


@dataclass
class Dunning:
    escalations: dict[str, Escalation] = field(default_factory=dict)  # invoice_id -> its place on the ladder
    credit_block: Block | None = None  # the open block episode
    blocks: int = 0  # block episodes opened so far
    tasks: dict[str, Task] = field(default_factory=dict)  # task_id -> task
    reminded: dict[str, Reminded] = field(default_factory=dict)  # currency -> last reminder
    # Commands to the ERP and what the ERP said about them (see _on_command_acknowledged), oldest first.
    credit_commands: dict[str, CreditCommand] = field(default_factory=dict)  # command_id -> the command
    acknowledgements: dict[str, Acknowledgement] = field(default_factory=dict)  # command_id -> the ERP's latest word
    # The instants of the customer's last KEPT_CONTACTS contacts (a reminder in any currency, a phone_call task),
    # oldest first: what the engine's cadence counts, in the tenant's days.
    contacts: list[str] = field(default_factory=list)
    pause: Pause | None = None  # the customer's pause, until resumed (one past its end day stays: readers compare)
    resumed_at: str | None = None  # when the last pause was resumed before its end day: the ladder restarts then
    last_call_at: str | None = None  # the instant of the latest call logged with the customer (its phone tasks close)
    limit_proposals: dict[str, LimitProposal] = field(default_factory=dict)  # proposal_id -> proposal, oldest first
    letters: dict[str, Letter] = field(default_factory=dict)  # letter_id -> the letter and its proof, oldest first

    def check(self, event: Event) -> Check | None:
        """A duplicate acknowledgement, or None: relance's own events are checked by their deterministic ids."""
        if isinstance(event, erp.CommandAcknowledged):
            known = self.acknowledgements.get(event.command_id)
            data = data_of(event)
            if known is not None and all(known.get(k) == data.get(k) for k in _ACK_FIELDS):
                return Check("duplicate", f"acknowledgement of command {event.command_id} already recorded")
        return None

    def apply(self, event: Event, occurred_at: str, event_id: str, touched: Touched) -> None:
        """Fold one accepted event in; ``event_id`` names the command a block or an unblock causes (the outbox uses
        the event id as the command id), so the ERP's acknowledgement can be matched with the block it is about."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event, occurred_at, touched)
        if event_id and isinstance(event, events.CreditBlocked | events.CreditUnblocked):
            self._credit_command(CREDIT_COMMANDS[event.TYPE], event_id, event)

    def cap(self, event: Event, recorded_at: str) -> None:
        """Cap at ``recorded_at`` the acknowledgement this one is compared with (a no-op on a state folded capped)."""
        if isinstance(event, erp.CommandAcknowledged):
            known = self.acknowledgements.get(event.command_id)
            if known and known.get("at"):
                known["at"] = earlier(known["at"], recorded_at)

    def _escalation(self, invoice_id: str, currency: str) -> Escalation:
        record = self.escalations.get(invoice_id)
        if record is None:
            record = self.escalations[invoice_id] = Escalation(invoice_id, currency)
        return record

    def _contact(self, at: str) -> None:
        if at not in self.contacts:
            self.contacts.append(at)
            self.contacts.sort()
            del self.contacts[:-KEPT_CONTACTS]

    def _told(self, record: Escalation, level: str) -> None:
        if level not in record.told:
            record.told.append(level)

    def _credit_command(self, kind: str, command_id: str, event: events.CreditBlocked | events.CreditUnblocked) -> None:
        """Remember a credit command relance decided; it supersedes what the ERP refused of the earlier ones."""
        record = CreditCommand(command=kind, block_id=event.block_id, on=_day(event))
        _keep(self.credit_commands, command_id, record)
        for task_id, task in list(self.tasks.items()):
            if task["kind"] == REJECTED_TASK and task.get("command_id") != command_id:
                known = self.acknowledgements.get(task.get("command_id", ""))
                if known is not None and known["command"] not in CREDIT_COMMANDS.values():
                    continue  # a refusal of another command (a promise, a plan) stays until the ERP applies it
                del self.tasks[task_id]
        block = self.credit_block
        if kind == events.CREDIT_BLOCK and block is not None and block["block_id"] == event.block_id:
            block["command_id"] = command_id
            known = self.acknowledgements.get(command_id)  # the ERP may have answered before this state knew the block
            block["acknowledgement"] = None if known is None else known.copy()


# --------------------------------------------------------------------------------------------------- handlers
def _on_level_reached(d: Dunning, event: events.LevelReached, occurred_at: str, touched: Touched) -> None:
    record = d._escalation(event.invoice_id, event.currency)
    record.currency = event.currency  # the invoice's, should an indemnity in another currency have come first
    record.level = event.level
    record.offset_days = event.offset_days
    record.reached_on = event.reached_on
    record.anchor = event.anchor
    record.passed.extend(key for key in [*event.skipped, event.level] if key not in record.passed)
    record.actions.update(event.actions)
    touched.invoices.add(record.invoice_id)


def _on_interest_computed(d: Dunning, event: events.InterestComputed, occurred_at: str, touched: Touched) -> None:
    record = d._escalation(event.invoice_id, event.currency)
    record.interest = event.amount
    record.interest_through = event.through
    touched.invoices.add(record.invoice_id)


def _on_fee_charged(d: Dunning, event: events.FeeCharged, occurred_at: str, touched: Touched) -> None:
    d._escalation(event.invoice_id, event.currency).fee = event.amount
    touched.invoices.add(event.invoice_id)


def _on_reminder(d: Dunning, event: events.ReminderRequested, occurred_at: str, touched: Touched) -> None:
    """The reminder of its currency; a contact; for each invoice it demands, a notice at the line's level (a
    reminder written before lines had a level demanded every invoice at its own level). A claims statement
    (:data:`~shared.contracts.events.CLAIMS_STATEMENT`) is a contact and demands nothing: it is not the currency's
    reminder, which it neither supersedes nor delays (the claims it asks for are kept by the claims part)."""
    at = _instant(event.as_of)
    if event.level != events.CLAIMS_STATEMENT:
        d.reminded[event.currency] = {
            "reminder_id": event.reminder_id,
            "level": event.level,
            "on": _day(event),
            "at": at,
        }
    d._contact(at)
    for line in getattr(event, "lines", None) or []:  # a reminder recorded without lines tells nothing
        level = getattr(line, "level", None) or event.level
        record = d._escalation(line.invoice_id, event.currency)
        d._told(record, level)
        if not any(n["reminder_id"] == event.reminder_id for n in record.notices):
            record.notices.append({"level": level, "reminder_id": event.reminder_id, "at": at})
        touched.invoices.add(line.invoice_id)


def _on_credit_blocked(d: Dunning, event: events.CreditBlocked, occurred_at: str, touched: Touched) -> None:
    d.credit_block = {"block_id": event.block_id, "reason": event.reason, "blocked_on": _day(event)}
    d.blocks += 1


def _on_credit_unblocked(d: Dunning, event: events.CreditUnblocked, occurred_at: str, touched: Touched) -> None:
    if d.credit_block is not None and d.credit_block["block_id"] == event.block_id:
        d.credit_block = None


def _on_task(d: Dunning, event: events.TaskCreated, occurred_at: str, touched: Touched) -> None:
    data = event.data()
    d.tasks[event.task_id] = cast(Task, {k: data[k] for k in _TASK_FIELDS if k in data})
    if event.kind == PHONE_TASK and event.as_of is not None:  # the engine's call: a contact at the task's level
        d._contact(_instant(event.as_of))
        for invoice_id in event.invoice_ids:
            record = d.escalations.get(invoice_id)
            level = event.level or (record.level if record is not None else None)
            if record is not None and level is not None:
                d._told(record, level)


def _on_command_acknowledged(d: Dunning, event: erp.CommandAcknowledged, occurred_at: str, touched: Touched) -> None:
    """The ERP's word on a command, known to this state or not (an unknown command id is recorded all the same).

    A refusal of the current command (or of one this state does not know) is a task for a collector until the ERP
    applies the command or relance decides a newer one; a refusal of a command already superseded is only recorded.
    """
    command_id = event.command_id
    known = d.acknowledgements.get(command_id)
    if known is not None and later(known["at"], occurred_at):
        return
    data = data_of(event)
    ack = cast(Acknowledgement, {k: data[k] for k in _ACK_FIELDS if k in data} | {"at": occurred_at})
    _keep(d.acknowledgements, command_id, ack)
    block = d.credit_block
    if block is not None and block.get("command_id") == command_id:
        block["acknowledgement"] = ack.copy()
    task_id = f"erp-ack:{command_id}"
    latest = next(reversed(d.credit_commands), None)
    if ack["status"] == "applied" or (command_id in d.credit_commands and command_id != latest):
        d.tasks.pop(task_id, None)
        return
    d.tasks[task_id] = {
        "kind": REJECTED_TASK,
        "due_on": occurred_at[:10],
        "invoice_ids": [],
        "currency": "",
        "note": f"the ERP refused {ack['command']} {command_id}: {ack.get('reason', '')}",
        "command_id": command_id,
    }


# --------------------------------------------------------------------------------------------------- people
def _on_task_completed(d: Dunning, event: events.TaskCompleted, occurred_at: str, touched: Touched) -> None:
    task = d.tasks.get(event.task_id)
    if task is not None:  # the action layer refuses an unknown task; a fold never refuses the past
        task["status"], task["outcome"] = DONE, event.outcome
        task["done_at"], task["done_by"] = occurred_at, event.author


def _on_task_snoozed(d: Dunning, event: events.TaskSnoozed, occurred_at: str, touched: Touched) -> None:
    task = d.tasks.get(event.task_id)
    if task is not None:
        task["snoozed_until"] = event.until.isoformat()


def _on_task_assigned(d: Dunning, event: events.TaskAssigned, occurred_at: str, touched: Touched) -> None:
    task = d.tasks.get(event.task_id)
    if task is not None:
        task["assignee"] = event.assignee


def _on_call(d: Dunning, event: events.CallLogged, occurred_at: str, touched: Touched) -> None:
    """A call with a next-action day leaves a follow-up task, due that day, given to whoever made the call."""
    if occurred_at and (d.last_call_at is None or later(occurred_at, d.last_call_at)):
        d.last_call_at = occurred_at
    if event.next_action_on is None:
        return
    task_id = follow_up_id(event.call_id)
    if task_id in d.tasks:
        return
    d.tasks[task_id] = {
        "kind": FOLLOW_UP_TASK,
        "due_on": event.next_action_on.isoformat(),
        "invoice_ids": [],
        "currency": "",
        "note": event.note[:FOLLOW_UP_NOTE],
        "assignee": event.author,
        "source_id": event.call_id,
    }


def _on_paused(d: Dunning, event: events.CustomerPaused, occurred_at: str, touched: Touched) -> None:
    d.pause = {
        "pause_id": event.pause_id,
        "reason": event.reason,
        "until": event.until.isoformat(),
        "author": event.author,
        "at": occurred_at,
    }


def _on_resumed(d: Dunning, event: events.CustomerResumed, occurred_at: str, touched: Touched) -> None:
    if d.pause is not None and d.pause["pause_id"] == event.pause_id:
        d.pause = None
        d.resumed_at = occurred_at


def _on_limit_proposed(d: Dunning, event: events.CreditLimitProposed, occurred_at: str, touched: Touched) -> None:
    d.limit_proposals[event.proposal_id] = {
        "currency": event.currency,
        "amount": str(event.amount),
        "reason": event.reason,
        "author": event.author,
        "at": occurred_at,
        "status": "proposed",
        "decided_by": None,
        "decided_at": None,
        "note": None,
    }


def _on_limit_decided(
    d: Dunning, event: events.CreditLimitApproved | events.CreditLimitRejected, occurred_at: str, touched: Touched
) -> None:
    proposal = d.limit_proposals.get(event.proposal_id)
    if proposal is None:
        return
    proposal["status"] = "approved" if isinstance(event, events.CreditLimitApproved) else "rejected"
    proposal["decided_by"] = event.author
    proposal["decided_at"] = occurred_at
    proposal["note"] = event.note
    if isinstance(event, events.CreditLimitApproved):  # what was approved, should it differ from the proposal
        proposal["currency"], proposal["amount"] = event.currency, str(event.amount)


# --------------------------------------------------------------------------------------------------- letters
def _on_letter_rendered(d: Dunning, event: events.LetterRendered, occurred_at: str, touched: Touched) -> None:
    letter: Letter = {
        "letter_id": event.letter_id,
        "command_id": event.command_id,
        "status": "rendered",
        "sha256": event.sha256,
        "pages": event.pages,
        "rendered_at": occurred_at,
        "kind": event.kind,
        "task_id": letter_task_id(event.command_id),
    }
    if event.reminder_id is not None:
        letter["reminder_id"] = event.reminder_id
    if event.level is not None:
        letter["level"] = event.level
    d.letters.setdefault(event.letter_id, letter)


def _on_letter_printed(d: Dunning, event: events.LetterHandedToPrint, occurred_at: str, touched: Touched) -> None:
    letter = d.letters.get(event.letter_id)
    if letter is not None:
        letter["batch_id"], letter["printed_on"] = event.batch_id, event.printed_on.isoformat()
        if letter["status"] == "rendered":
            letter["status"] = "printed"


def _on_letter_posted(d: Dunning, event: events.LetterPosted, occurred_at: str, touched: Touched) -> None:
    """The letter's posting, with its tracking number; it closes the letter's ``send_letter`` task as a person
    completing it with the outcome ``posted`` would (:mod:`shared.ledger.tasks` says "letter posted by <login>")."""
    letter = d.letters.get(event.letter_id)
    if letter is None:  # the action layer refuses an unknown letter; a fold never refuses the past
        return
    letter["posted_on"], letter["posted_by"] = event.posted_on.isoformat(), event.author
    if event.tracking_number:
        letter["tracking_number"] = event.tracking_number
    if event.carrier:
        letter["carrier"] = event.carrier
    if letter["status"] in ("rendered", "printed"):
        letter["status"] = "posted"
    task = d.tasks.get(letter.get("task_id", ""))
    if task is not None and task.get("status") != DONE:
        task["status"], task["outcome"] = DONE, "posted"
        task["done_at"], task["done_by"] = occurred_at, event.author


def _on_letter_delivered(d: Dunning, event: events.LetterDelivered, occurred_at: str, touched: Touched) -> None:
    letter = d.letters.get(event.letter_id)
    if letter is not None:
        letter["status"], letter["delivered_on"] = "delivered", event.delivered_on.isoformat()
        if event.note:
            letter["note"] = event.note


def _on_letter_returned(d: Dunning, event: events.LetterReturned, occurred_at: str, touched: Touched) -> None:
    letter = d.letters.get(event.letter_id)
    if letter is not None:
        letter["status"], letter["returned_on"] = "returned", event.returned_on.isoformat()
        letter["return_reason"] = event.reason


_Kept = TypeVar("_Kept", CreditCommand, Acknowledgement)


def _keep(records: dict[str, _Kept], key: str, record: _Kept) -> None:
    """Remember the record as the newest; forget the oldest of its command kind beyond :data:`KEPT_PER_KIND`."""
    records.pop(key, None)
    records[key] = record
    same_kind = [k for k, r in records.items() if r["command"] == record["command"]]
    for old in same_kind[:-KEPT_PER_KIND]:
        del records[old]


def _day(event: events.ReminderRequested | events.CreditBlocked | events.CreditUnblocked) -> str:
    """The UTC day a decision was taken on."""
    return event.as_of.astimezone(UTC).date().isoformat()


def _instant(moment: datetime) -> str:
    """An instant as relance writes it; one recorded without its zone (by hand, by a test) is read as UTC."""
    return events.instant_text(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))


_Handler = Callable[[Dunning, Any, str, Touched], None]
_HANDLERS: dict[type, _Handler] = {
    events.LevelReached: _on_level_reached,
    events.InterestComputed: _on_interest_computed,
    events.FeeCharged: _on_fee_charged,
    events.ReminderRequested: _on_reminder,
    events.CreditBlocked: _on_credit_blocked,
    events.CreditUnblocked: _on_credit_unblocked,
    events.TaskCreated: _on_task,
    erp.CommandAcknowledged: _on_command_acknowledged,
    events.TaskCompleted: _on_task_completed,
    events.TaskSnoozed: _on_task_snoozed,
    events.TaskAssigned: _on_task_assigned,
    events.CallLogged: _on_call,
    events.CustomerPaused: _on_paused,
    events.CustomerResumed: _on_resumed,
    events.CreditLimitProposed: _on_limit_proposed,
    events.CreditLimitApproved: _on_limit_decided,
    events.CreditLimitRejected: _on_limit_decided,
    events.LetterRendered: _on_letter_rendered,
    events.LetterHandedToPrint: _on_letter_printed,
    events.LetterPosted: _on_letter_posted,
    events.LetterDelivered: _on_letter_delivered,
    events.LetterReturned: _on_letter_returned,
}
