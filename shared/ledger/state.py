"""A customer's ledger as the fold of its event stream: invoices, payments, credit notes and their allocation.

Pure Python, no database. The same code decides whether an incoming event is new, a duplicate or a violation of a
business rule (:meth:`CustomerState.check`) and applies it (:meth:`CustomerState.apply`); the event store keeps the
folded state as a snapshot in the same transaction as the append.

Out-of-order input is normal. A payment, credit note, cancellation or dispute may arrive before the invoice it names:
the money waits as credit earmarked for that invoice and the flags wait in the state, both applied when the invoice
arrives. Allocations, once made, stay (as in any sub-ledger); what is order-independent is the balance per currency:
the sum of what was invoiced and not cancelled, less every payment and credit note.

Where the latest statement wins whatever the arrival order (the profile, an invoice's dispute, the ERP's word on a
command), "latest" is the event's ``occurred_at`` **capped at the time it was recorded**: an event cannot have
happened after relance received it, so an ERP clock set to 2099 cannot pin a profile or a dispute for good; such an
event counts as of its arrival, and later statements win over it. A state folded before this rule (holding an
instant later than the event now being recorded) has that instant capped the same way when the next event arrives.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping, MutableSequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

ZERO = Decimal(0)
# Credit commands, and the ERP's acknowledgements of them, remembered per command kind (the log keeps them all).
KEPT_PER_KIND = 20
REJECTED_TASK = "erp_command_rejected"  # the kind of task a refused command leaves for a collector

Verdict = Literal["new", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class Check:
    verdict: Verdict
    reason: str = ""


NEW = Check("new")


@dataclass
class Invoice:
    invoice_id: str
    number: str
    issue_date: date
    due_date: date
    currency: str
    amount: Decimal
    outstanding: Decimal
    status: Literal["open", "paid", "cancelled"] = "open"
    allocations: dict[str, Decimal] = field(default_factory=dict)  # credit key -> amount applied

    @property
    def is_open(self) -> bool:
        return self.status == "open"


@dataclass
class Credit:
    """Money on the customer's side: a payment or a credit note, and where it went."""

    key: str  # "payment:<id>" or "credit_note:<id>"
    currency: str
    amount: Decimal
    on: date
    free: Decimal  # unallocated, available for the oldest open invoices
    earmarks: dict[str, Decimal] = field(default_factory=dict)  # waiting for an invoice not yet known
    applied: dict[str, Decimal] = field(default_factory=dict)  # invoice_id -> amount

    @property
    def kind(self) -> str:
        return self.key.split(":", 1)[0]


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


@dataclass
class CustomerState:
    tenant: str
    customer_id: str
    version: int = 0
    head_hash: str = "0" * 64
    profile: dict[str, Any] | None = None
    profile_at: str | None = None
    invoices: dict[str, Invoice] = field(default_factory=dict)
    credits: dict[str, Credit] = field(default_factory=dict)
    cancelled: dict[str, str] = field(default_factory=dict)  # invoice_id -> reason (also before issue)
    disputes: dict[str, str] = field(default_factory=dict)  # invoice_id -> reason, while unresolved
    # invoice_id -> [occurred_at, "disputed" | "resolved"] of its latest dispute event: the latest one decides,
    # whatever order they arrive in.
    dispute_latest: dict[str, list[str]] = field(default_factory=dict)
    due_date_passed: dict[str, str] = field(default_factory=dict)  # invoice_id -> due date reported by ERP
    promises: dict[str, dict[str, Any]] = field(default_factory=dict)
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)  # business key -> content fingerprint
    promise_recorded: dict[str, str] = field(default_factory=dict)  # promise_id -> occurred_at of its record
    # Escalation: what the engine decided so far (see services/escalation/engine.py).
    escalations: dict[str, Escalation] = field(default_factory=dict)  # invoice_id -> its place on the ladder
    credit_block: dict[str, Any] | None = None  # the open block episode: block_id, reason, blocked_on
    blocks: int = 0  # block episodes opened so far
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task_id -> task.created data
    reminded: dict[str, dict[str, Any]] = field(default_factory=dict)  # currency -> last reminder: id, level, on
    # Commands to the ERP and what the ERP said about them (see _on_command_acknowledged), oldest first.
    credit_commands: dict[str, dict[str, Any]] = field(default_factory=dict)  # command_id -> command, block_id, on
    acknowledgements: dict[str, dict[str, Any]] = field(default_factory=dict)  # command_id -> the ERP's latest word
    # Bookkeeping of the store, not part of the state: the version of the last saved snapshot, and the credits
    # changed since the store last saved them.
    snapshot_version: int = field(default=0, compare=False, repr=False)
    changed_credits: set[str] = field(default_factory=set, compare=False, repr=False)

    # ----------------------------------------------------------------------------------------------- deciding
    def check(self, event_type: str, data: dict[str, Any]) -> Check:
        """Is this event new, a duplicate of what the ledger holds, or against a business rule?"""
        key = _business_key(event_type, data)
        if key is not None and key in self.fingerprints:
            if self.fingerprints[key] == _fingerprint(event_type, data):
                return Check("duplicate", f"{key} already recorded with the same content")
            return Check("rejected", _conflict_reason(self, event_type, data, key))
        if event_type == "payment.received":
            for allocation in data.get("allocations", []):
                invoice = self.invoices.get(allocation["invoice_id"])
                if invoice is not None and invoice.currency != data["currency"]:
                    return Check(
                        "rejected",
                        f"payment {data['payment_id']} in {data['currency']} is allocated to invoice "
                        f"{invoice.invoice_id} in {invoice.currency}",
                    )
        if event_type == "credit_note.issued" and data.get("invoice_id"):
            invoice = self.invoices.get(data["invoice_id"])
            if invoice is not None and invoice.currency != data["currency"]:
                return Check(
                    "rejected",
                    f"credit note {data['credit_note_id']} in {data['currency']} names invoice "
                    f"{invoice.invoice_id} in {invoice.currency}",
                )
        if event_type == "invoice.cancelled" and data["invoice_id"] in self.cancelled:
            return Check("duplicate", f"invoice {data['invoice_id']} is already cancelled")
        if event_type == "invoice.due_date_passed" and data["invoice_id"] in self.due_date_passed:
            return Check("duplicate", f"due date of invoice {data['invoice_id']} already recorded as passed")
        if event_type == "invoice.disputed" and data["invoice_id"] in self.disputes:
            return Check("duplicate", f"invoice {data['invoice_id']} is already disputed")
        if event_type == "invoice.dispute_resolved" and data["invoice_id"] not in self.disputes:
            latest = self.dispute_latest.get(data["invoice_id"])
            if latest is not None and latest[1] == "resolved":
                return Check("duplicate", f"invoice {data['invoice_id']} has no open dispute")
        if event_type == "customer.upserted" and self.profile == data:
            return Check("duplicate", "customer profile unchanged")
        if event_type == "erp.command_acknowledged":
            known = self.acknowledgements.get(data["command_id"])
            if known is not None and all(known.get(k) == data.get(k) for k in _ACK_FIELDS):
                return Check("duplicate", f"acknowledgement of command {data['command_id']} already recorded")
        return NEW

    # ----------------------------------------------------------------------------------------------- applying
    def apply(
        self, event_type: str, data: dict[str, Any], occurred_at: str = "", event_id: str = "", *, recorded_at: str
    ) -> set[str]:
        """Fold one accepted event into the state; returns the ids of the invoices it changed.

        ``event_id`` names the command a ``credit.blocked`` / ``credit.unblocked`` causes (the outbox uses the event
        id as the command id), so the ERP's acknowledgement can be matched with the block it is about.
        ``recorded_at`` (ISO 8601, when the ledger appended the event) caps ``occurred_at``: see the module's doc.
        Every caller must say it, so that no fold of a recorded stream forgets the cap (the ledger's fold and
        verify's rebuild must agree); ``""`` only for a fold of events that were never recorded.
        """
        if recorded_at:
            occurred_at = _earlier(occurred_at, recorded_at)
            _cap_latest(self, event_type, data, recorded_at)
        touched: set[str] = set()
        key = _business_key(event_type, data)
        if key is not None:
            self.fingerprints[key] = _fingerprint(event_type, data)
        handler = _HANDLERS.get(event_type)
        if handler is not None:
            handler(self, data, occurred_at, touched)
        if event_id and event_type in CREDIT_COMMANDS:
            _credit_command(self, CREDIT_COMMANDS[event_type], event_id, data)
        return touched

    # ----------------------------------------------------------------------------------------------- reading
    def balances(self) -> dict[str, Decimal]:
        """Per currency: open invoices' outstanding less credit not yet applied (negative = in credit)."""
        result: dict[str, Decimal] = {}
        for invoice in self.invoices.values():
            if invoice.is_open:
                result[invoice.currency] = result.get(invoice.currency, ZERO) + invoice.outstanding
        for credit in self.credits.values():
            waiting = credit.free + sum(credit.earmarks.values(), ZERO)
            if waiting or credit.currency not in result:
                result[credit.currency] = result.get(credit.currency, ZERO) - waiting
        return result

    def unallocated(self) -> dict[str, Decimal]:
        result: dict[str, Decimal] = {}
        for credit in self.credits.values():
            waiting = credit.free + sum(credit.earmarks.values(), ZERO)
            if waiting:
                result[credit.currency] = result.get(credit.currency, ZERO) + waiting
        return result

    def open_invoices(self) -> list[Invoice]:
        return sorted((i for i in self.invoices.values() if i.is_open), key=_age)

    def overdue(self, as_of: date) -> dict[str, Decimal]:
        result: dict[str, Decimal] = {}
        for invoice in self.open_invoices():
            if invoice.due_date < as_of:
                result[invoice.currency] = result.get(invoice.currency, ZERO) + invoice.outstanding
        return result

    # ----------------------------------------------------------------------------------------------- snapshot
    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "customer_id": self.customer_id,
            "version": self.version,
            "head_hash": self.head_hash,
            "profile": self.profile,
            "profile_at": self.profile_at,
            "invoices": {k: _invoice_json(v) for k, v in self.invoices.items()},
            "credits": {k: _credit_json(v) for k, v in self.credits.items()},
            "cancelled": self.cancelled,
            "disputes": self.disputes,
            "dispute_latest": self.dispute_latest,
            "due_date_passed": self.due_date_passed,
            "promises": self.promises,
            "plans": self.plans,
            "fingerprints": self.fingerprints,
            "promise_recorded": self.promise_recorded,
            "escalations": {k: _escalation_json(v) for k, v in self.escalations.items()},
            "credit_block": self.credit_block,
            "blocks": self.blocks,
            "tasks": self.tasks,
            "reminded": self.reminded,
            "credit_commands": self.credit_commands,
            "acknowledgements": self.acknowledgements,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CustomerState:
        return cls(
            tenant=raw["tenant"],
            customer_id=raw["customer_id"],
            version=raw["version"],
            head_hash=raw["head_hash"],
            profile=raw.get("profile"),
            profile_at=raw.get("profile_at"),
            invoices={k: _invoice_from(v) for k, v in raw.get("invoices", {}).items()},
            credits={k: _credit_from(v) for k, v in raw.get("credits", {}).items()},
            cancelled=dict(raw.get("cancelled", {})),
            disputes=dict(raw.get("disputes", {})),
            dispute_latest={k: list(v) for k, v in raw.get("dispute_latest", {}).items()},
            due_date_passed=dict(raw.get("due_date_passed", {})),
            promises=dict(raw.get("promises", {})),
            plans=dict(raw.get("plans", {})),
            fingerprints=dict(raw.get("fingerprints", {})),
            promise_recorded=dict(raw.get("promise_recorded", {})),
            escalations={k: _escalation_from(v) for k, v in raw.get("escalations", {}).items()},
            credit_block=raw.get("credit_block"),
            blocks=raw.get("blocks", 0),
            tasks=dict(raw.get("tasks", {})),
            reminded=dict(raw.get("reminded", {})),
            credit_commands=dict(raw.get("credit_commands", {})),
            acknowledgements=dict(raw.get("acknowledgements", {})),
        )


# --------------------------------------------------------------------------------------------------- instants
def _earlier(first: str, second: str) -> str:
    """The earlier of two ISO 8601 instants (compared as instants, not as text)."""
    if not first:
        return second
    return first if datetime.fromisoformat(first) <= datetime.fromisoformat(second) else second


def _cap_latest(state: CustomerState, event_type: str, data: dict[str, Any], recorded_at: str) -> None:
    """Cap at ``recorded_at`` the stored instant this event is compared with (a no-op on a state folded capped)."""
    if event_type in ("customer.upserted", "invoice.issued") and state.profile_at:
        state.profile_at = _earlier(state.profile_at, recorded_at)
    latest: MutableSequence[str] | None = None
    if event_type in ("invoice.disputed", "invoice.dispute_resolved"):
        latest = state.dispute_latest.get(data["invoice_id"])
    if latest:
        latest[0] = _earlier(latest[0], recorded_at)
    known: MutableMapping[str, Any] | None = None
    if event_type == "erp.command_acknowledged":
        known = state.acknowledgements.get(data["command_id"])
    if known and known.get("at"):
        known["at"] = _earlier(known["at"], recorded_at)


# --------------------------------------------------------------------------------------------------- handlers
def _on_customer(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    # The most recent statement of the customer wins, whatever order the messages arrived in.
    if state.profile_at is None or occurred_at >= state.profile_at:
        state.profile = data
        state.profile_at = occurred_at


def _on_invoice(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    if data.get("customer") and state.profile is None:
        state.profile = data["customer"]
        state.profile_at = occurred_at
    amount = Decimal(data["amount"])
    invoice = Invoice(
        invoice_id=data["invoice_id"],
        number=data["number"],
        issue_date=date.fromisoformat(data["issue_date"]),
        due_date=date.fromisoformat(data["due_date"]),
        currency=data["currency"],
        amount=amount,
        outstanding=amount,
    )
    state.invoices[invoice.invoice_id] = invoice
    touched.add(invoice.invoice_id)
    if invoice.invoice_id in state.cancelled:
        invoice.status = "cancelled"
        invoice.outstanding = ZERO
    waiting = (c for c in state.credits.values() if invoice.invoice_id in c.earmarks)
    for credit in sorted(waiting, key=_credit_age):
        earmarked = credit.earmarks.pop(invoice.invoice_id)
        state.changed_credits.add(credit.key)
        if invoice.is_open and credit.currency == invoice.currency:
            _allocate(state, credit, invoice, earmarked)
        else:
            credit.free += earmarked
    _settle(state, invoice.currency, touched)


def _on_credit(kind: str, id_field: str):  # type: ignore[no-untyped-def]
    def handler(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
        amount = Decimal(data["amount"])
        credit = Credit(
            key=f"{kind}:{data[id_field]}",
            currency=data["currency"],
            amount=amount,
            on=date.fromisoformat(data["received_on" if kind == "payment" else "issued_on"]),
            free=amount,
        )
        state.credits[credit.key] = credit
        state.changed_credits.add(credit.key)
        targets = [(a["invoice_id"], Decimal(a["amount"])) for a in data.get("allocations", [])]
        if kind == "credit_note" and data.get("invoice_id"):
            targets = [(data["invoice_id"], amount)]
        for invoice_id, wanted in targets:
            credit.free -= wanted
            invoice = state.invoices.get(invoice_id)
            if invoice is None and invoice_id not in state.cancelled:
                credit.earmarks[invoice_id] = credit.earmarks.get(invoice_id, ZERO) + wanted
            elif invoice is not None and invoice.is_open and invoice.currency == credit.currency:
                _allocate(state, credit, invoice, wanted)
                touched.add(invoice_id)
            else:
                credit.free += wanted
        _settle(state, credit.currency, touched)

    return handler


def _on_cancelled(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    invoice_id = data["invoice_id"]
    state.cancelled[invoice_id] = data.get("reason") or ""
    invoice = state.invoices.get(invoice_id)
    if invoice is None:
        return
    for credit_key, amount in invoice.allocations.items():
        credit = state.credits[credit_key]
        state.changed_credits.add(credit_key)
        credit.applied.pop(invoice_id, None)
        credit.free += amount
    invoice.allocations = {}
    invoice.outstanding = ZERO
    invoice.status = "cancelled"
    touched.add(invoice_id)
    _settle(state, invoice.currency, touched)


def _latest_dispute_event(state: CustomerState, invoice_id: str, occurred_at: str, kind: str) -> bool:
    """Record a dispute event; True if it is the latest of its invoice, the one that decides."""
    latest = state.dispute_latest.get(invoice_id)
    if latest is not None and occurred_at < latest[0]:
        return False
    state.dispute_latest[invoice_id] = [occurred_at, kind]
    return True


def _on_disputed(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    if _latest_dispute_event(state, data["invoice_id"], occurred_at, "disputed"):
        state.disputes[data["invoice_id"]] = data["reason"]
        touched.add(data["invoice_id"])


def _on_dispute_resolved(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    if not _latest_dispute_event(state, data["invoice_id"], occurred_at, "resolved"):
        return
    state.disputes.pop(data["invoice_id"], None)
    touched.add(data["invoice_id"])
    invoice = state.invoices.get(data["invoice_id"])
    if invoice is not None:
        _settle(state, invoice.currency, touched)


def _on_due_date_passed(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    state.due_date_passed[data["invoice_id"]] = data["due_date"]


def _on_promise(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    state.promises[data["promise_id"]] = data
    state.promise_recorded[data["promise_id"]] = occurred_at


def _on_plan(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    state.plans[data["plan_id"]] = data


# --------------------------------------------------------------------------------------------------- escalation
# The engine's own decisions, folded so that deciding again from the folded state finds nothing new.
def _escalation(state: CustomerState, data: dict[str, Any]) -> Escalation:
    record = state.escalations.get(data["invoice_id"])
    if record is None:
        record = state.escalations[data["invoice_id"]] = Escalation(data["invoice_id"], data["currency"])
    return record


def _on_level_reached(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    record = _escalation(state, data)
    record.level = data["level"]
    record.offset_days = int(data["offset_days"])
    record.reached_on = date.fromisoformat(data["reached_on"])
    record.anchor = date.fromisoformat(data["anchor"]) if data.get("anchor") else None
    record.passed.extend(key for key in [*data.get("skipped", []), data["level"]] if key not in record.passed)
    record.actions.update(data.get("actions", []))
    touched.add(record.invoice_id)


def _on_interest_computed(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    record = _escalation(state, data)
    record.interest = Decimal(data["amount"])
    record.interest_through = date.fromisoformat(data["through"])
    touched.add(record.invoice_id)


def _on_fee_charged(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    _escalation(state, data).fee = Decimal(data["amount"])
    touched.add(data["invoice_id"])


def _on_reminder(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    state.reminded[data["currency"]] = {
        "reminder_id": data["reminder_id"],
        "level": data["level"],
        "on": data["as_of"][:10],
    }


def _on_credit_blocked(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    state.credit_block = {"block_id": data["block_id"], "reason": data["reason"], "blocked_on": data["as_of"][:10]}
    state.blocks += 1


def _on_credit_unblocked(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    if state.credit_block is not None and state.credit_block["block_id"] == data["block_id"]:
        state.credit_block = None


def _on_task(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    state.tasks[data["task_id"]] = {
        k: data[k]
        for k in ("kind", "due_on", "invoice_ids", "currency", "amount_at_risk", "note", "command", "semester")
        if k in data
    }


# --------------------------------------------------------------------------------------------------- ERP commands
# event type appended to the ledger -> the command to the ERP it causes (as in shared.ledger.outbox.COMMANDS)
CREDIT_COMMANDS = {"credit.blocked": "erp.credit_block", "credit.unblocked": "erp.credit_unblock"}
_ACK_FIELDS = ("command", "status", "reason", "erp_reference")


def _credit_command(state: CustomerState, kind: str, command_id: str, data: dict[str, Any]) -> None:
    """Remember a credit command relance decided; it supersedes what the ERP refused of the earlier ones."""
    _keep(state.credit_commands, command_id, {"command": kind, "block_id": data["block_id"], "on": _day(data)})
    for task_id, task in list(state.tasks.items()):
        if task["kind"] == REJECTED_TASK and task.get("command_id") != command_id:
            del state.tasks[task_id]
    block = state.credit_block
    if kind == "erp.credit_block" and block is not None and block["block_id"] == data["block_id"]:
        block["command_id"] = command_id
        known = state.acknowledgements.get(command_id)  # the ERP may have answered before this state knew the block
        block["acknowledgement"] = None if known is None else dict(known)


def _on_command_acknowledged(state: CustomerState, data: dict[str, Any], occurred_at: str, touched: set[str]) -> None:
    """The ERP's word on a command, known to this state or not (an unknown command id is recorded all the same).

    Per command, the acknowledgement that occurred last stands, whatever order they arrive in. A refusal of the
    current command (or of one this state does not know) is a task for a collector until the ERP applies the command
    or relance decides a newer one; a refusal of a command already superseded is only recorded.
    """
    command_id = data["command_id"]
    known = state.acknowledgements.get(command_id)
    if known is not None and occurred_at < known["at"]:
        return
    ack = {k: data[k] for k in _ACK_FIELDS if k in data} | {"at": occurred_at}
    _keep(state.acknowledgements, command_id, ack)
    block = state.credit_block
    if block is not None and block.get("command_id") == command_id:
        block["acknowledgement"] = dict(ack)
    task_id = f"erp-ack:{command_id}"
    latest = next(reversed(state.credit_commands), None)
    if ack["status"] == "applied" or (command_id in state.credit_commands and command_id != latest):
        state.tasks.pop(task_id, None)
        return
    state.tasks[task_id] = {
        "kind": REJECTED_TASK,
        "due_on": occurred_at[:10],
        "invoice_ids": [],
        "currency": "",
        "note": f"the ERP refused {ack['command']} {command_id}: {ack.get('reason', '')}",
        "command_id": command_id,
    }


def _keep(records: dict[str, dict[str, Any]], key: str, record: dict[str, Any]) -> None:
    """Remember the record as the newest; forget the oldest of its command kind beyond :data:`KEPT_PER_KIND`."""
    records.pop(key, None)
    records[key] = record
    same_kind = [k for k, r in records.items() if r["command"] == record["command"]]
    for old in same_kind[:-KEPT_PER_KIND]:
        del records[old]


def _day(data: dict[str, Any]) -> str:
    return str(data.get("as_of", ""))[:10]


# Event types without a handler change nothing but the stream's version: facts recorded for people and auditors,
# such as escalation.clock_ticked, the notifier's reminder.sending / reminder.sent, and command.dead_lettered (an
# adapter gave up delivering an outbox command; its task.created, which the agenda shows, comes with it).
_HANDLERS = {
    "customer.upserted": _on_customer,
    "invoice.issued": _on_invoice,
    "payment.received": _on_credit("payment", "payment_id"),
    "credit_note.issued": _on_credit("credit_note", "credit_note_id"),
    "invoice.cancelled": _on_cancelled,
    "invoice.disputed": _on_disputed,
    "invoice.dispute_resolved": _on_dispute_resolved,
    "invoice.due_date_passed": _on_due_date_passed,
    "promise_to_pay.recorded": _on_promise,
    "payment_plan.agreed": _on_plan,
    "escalation.level_reached": _on_level_reached,
    "interest.computed": _on_interest_computed,
    "fee.charged": _on_fee_charged,
    "reminder.requested": _on_reminder,
    "credit.blocked": _on_credit_blocked,
    "credit.unblocked": _on_credit_unblocked,
    "task.created": _on_task,
    "erp.command_acknowledged": _on_command_acknowledged,
}


# --------------------------------------------------------------------------------------------------- allocation
def _allocate(state: CustomerState, credit: Credit, invoice: Invoice, wanted: Decimal) -> None:
    """Apply up to ``wanted`` of the credit to the invoice; what the invoice cannot take stays free."""
    state.changed_credits.add(credit.key)
    applied = min(wanted, invoice.outstanding)
    if applied > 0:
        invoice.outstanding -= applied
        invoice.allocations[credit.key] = invoice.allocations.get(credit.key, ZERO) + applied
        credit.applied[invoice.invoice_id] = credit.applied.get(invoice.invoice_id, ZERO) + applied
        if invoice.outstanding == 0:
            invoice.status = "paid"
    credit.free += wanted - applied


def _settle(state: CustomerState, currency: str, touched: set[str]) -> None:
    """Apply free credit, oldest first, to the oldest open undisputed invoices of the currency."""
    credits = sorted((c for c in state.credits.values() if c.currency == currency and c.free > 0), key=_credit_age)
    if not credits:
        return
    invoices = [
        i
        for i in state.open_invoices()
        if i.currency == currency and i.invoice_id not in state.disputes and i.outstanding > 0
    ]
    for invoice in invoices:
        for credit in credits:
            if credit.free <= 0:
                continue
            take = min(credit.free, invoice.outstanding)
            credit.free -= take
            _allocate(state, credit, invoice, take)
            touched.add(invoice.invoice_id)
            if not invoice.is_open:
                break


def _age(invoice: Invoice) -> tuple[date, date, str]:
    return (invoice.due_date, invoice.issue_date, invoice.invoice_id)


def _credit_age(credit: Credit) -> tuple[date, str]:
    return (credit.on, credit.key)


# --------------------------------------------------------------------------------------------------- identity
_ID_FIELDS = {
    "invoice.issued": ("invoice", "invoice_id"),
    "payment.received": ("payment", "payment_id"),
    "credit_note.issued": ("credit_note", "credit_note_id"),
    "promise_to_pay.recorded": ("promise", "promise_id"),
    "payment_plan.agreed": ("plan", "plan_id"),
}


def _business_key(event_type: str, data: dict[str, Any]) -> str | None:
    spec = _ID_FIELDS.get(event_type)
    return None if spec is None else f"{spec[0]} {data[spec[1]]}"


def _fingerprint(event_type: str, data: dict[str, Any]) -> str:
    content = {k: v for k, v in data.items() if k != "customer"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _conflict_reason(state: CustomerState, event_type: str, data: dict[str, Any], key: str) -> str:
    if event_type == "invoice.issued":
        known = state.invoices[data["invoice_id"]]
        return (
            f"{key} was already issued with different content (number {known.number}, amount {known.amount} "
            f"{known.currency}, due {known.due_date}); correct an invoice with a credit note or a cancellation"
        )
    return f"{key} was already recorded with different content; an id must not be reused"


# --------------------------------------------------------------------------------------------------- json
def _invoice_json(invoice: Invoice) -> dict[str, Any]:
    return {
        "invoice_id": invoice.invoice_id,
        "number": invoice.number,
        "issue_date": invoice.issue_date.isoformat(),
        "due_date": invoice.due_date.isoformat(),
        "currency": invoice.currency,
        "amount": str(invoice.amount),
        "outstanding": str(invoice.outstanding),
        "status": invoice.status,
        "allocations": {k: str(v) for k, v in invoice.allocations.items()},
    }


def _invoice_from(raw: dict[str, Any]) -> Invoice:
    return Invoice(
        invoice_id=raw["invoice_id"],
        number=raw["number"],
        issue_date=date.fromisoformat(raw["issue_date"]),
        due_date=date.fromisoformat(raw["due_date"]),
        currency=raw["currency"],
        amount=Decimal(raw["amount"]),
        outstanding=Decimal(raw["outstanding"]),
        status=raw["status"],
        allocations={k: Decimal(v) for k, v in raw["allocations"].items()},
    )


def _credit_json(credit: Credit) -> dict[str, Any]:
    return {
        "key": credit.key,
        "currency": credit.currency,
        "amount": str(credit.amount),
        "on": credit.on.isoformat(),
        "free": str(credit.free),
        "earmarks": {k: str(v) for k, v in credit.earmarks.items()},
        "applied": {k: str(v) for k, v in credit.applied.items()},
    }


def _credit_from(raw: dict[str, Any]) -> Credit:
    return Credit(
        key=raw["key"],
        currency=raw["currency"],
        amount=Decimal(raw["amount"]),
        on=date.fromisoformat(raw["on"]),
        free=Decimal(raw["free"]),
        earmarks={k: Decimal(v) for k, v in raw["earmarks"].items()},
        applied={k: Decimal(v) for k, v in raw["applied"].items()},
    )


def _escalation_json(record: Escalation) -> dict[str, Any]:
    return {
        "invoice_id": record.invoice_id,
        "currency": record.currency,
        "level": record.level,
        "offset_days": record.offset_days,
        "reached_on": None if record.reached_on is None else record.reached_on.isoformat(),
        "anchor": None if record.anchor is None else record.anchor.isoformat(),
        "passed": record.passed,
        "actions": sorted(record.actions),
        "interest": None if record.interest is None else str(record.interest),
        "interest_through": None if record.interest_through is None else record.interest_through.isoformat(),
        "fee": None if record.fee is None else str(record.fee),
    }


def _escalation_from(raw: dict[str, Any]) -> Escalation:
    def day(value: str | None) -> date | None:
        return None if value is None else date.fromisoformat(value)

    def money(value: str | None) -> Decimal | None:
        return None if value is None else Decimal(value)

    return Escalation(
        invoice_id=raw["invoice_id"],
        currency=raw["currency"],
        level=raw.get("level"),
        offset_days=raw.get("offset_days", 0),
        reached_on=day(raw.get("reached_on")),
        anchor=day(raw.get("anchor")),
        passed=list(raw.get("passed", [])),
        actions=set(raw.get("actions", [])),
        interest=money(raw.get("interest")),
        interest_through=day(raw.get("interest_through")),
        fee=money(raw.get("fee")),
    )


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")
