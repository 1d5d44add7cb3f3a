"""The JSON codec of a customer's folded state: what the store keeps as the stream's snapshot.

Money is a decimal string with its exponent, dates are ISO 8601, as in the log. :func:`load` reads every snapshot
relance ever wrote: a field a snapshot lacks (written before the field existed) takes its empty value, so loading an
old snapshot and folding the events after it gives the state a fold of the whole stream gives.

Except what the customer was told (an invoice's ``notices`` and ``told``, the customer's ``contacts``): a snapshot
written before they existed folded reminders without keeping them, so the events after it cannot make up for their
absence. :func:`predates_contacts` says whether a snapshot lacks them; the ledger folds such a stream from its first
event (:func:`shared.ledger.reader.load_states`).

The fold's indexes (open invoices in allocation order, credits with free money, earmarks by invoice, claims that may
be owed) are not part of the snapshot: they are derived from what it holds and built again as it loads, so every
snapshot written before they existed loads as it always did, and the format did not change.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, cast

from shared.ledger.claims import CLAIMING_ACTIONS, INDEMNITY, INTEREST, PRINCIPAL_FIRST, Claim, Claims
from shared.ledger.dunning import Dunning, Escalation, Letter, LimitProposal, Notice, Pause
from shared.ledger.receivables import Credit, Invoice, Receivables


def dump(receivables: Receivables, dunning: Dunning, claims: Claims) -> dict[str, Any]:
    """The parts of a state as JSON (without the stream's head, which the state adds)."""
    r, d = receivables, dunning
    return {
        "profile": r.profile,
        "profile_at": r.profile_at,
        "invoices": {k: _invoice_json(v) for k, v in r.invoices.items()},
        "credits": {k: _credit_json(v) for k, v in r.credits.items()},
        "cancelled": r.cancelled,
        "disputes": r.disputes,
        "dispute_latest": r.dispute_latest,
        "due_date_passed": r.due_date_passed,
        "promises": r.promises,
        "plans": r.plans,
        "fingerprints": r.fingerprints,
        "promise_recorded": r.promise_recorded,
        "escalations": {k: _escalation_json(v) for k, v in d.escalations.items()},
        "credit_block": d.credit_block,
        "blocks": d.blocks,
        "tasks": d.tasks,
        "reminded": d.reminded,
        "credit_commands": d.credit_commands,
        "acknowledgements": d.acknowledgements,
        "contacts": d.contacts,
        "pause": d.pause,
        "limit_proposals": d.limit_proposals,
        **_claims_json(claims),
        # written once known, so that a snapshot from before they were kept equals its rebuild (ledger verify)
        **({} if d.resumed_at is None else {"resumed_at": d.resumed_at}),
        **({} if d.last_call_at is None else {"last_call_at": d.last_call_at}),
        **({} if not d.letters else {"letters": d.letters}),
    }


def predates_contacts(raw: dict[str, Any]) -> bool:
    """Whether the snapshot was written before what the customer was told was kept (see the module's doc)."""
    return "escalations" in raw and "contacts" not in raw


def load(raw: dict[str, Any]) -> tuple[Receivables, Dunning, Claims]:
    """The parts of a state from its JSON (what :func:`dump` wrote, or an older snapshot)."""
    receivables = Receivables(
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
    )
    dunning = Dunning(
        escalations={k: _escalation_from(v) for k, v in raw.get("escalations", {}).items()},
        credit_block=raw.get("credit_block"),
        blocks=raw.get("blocks", 0),
        tasks=dict(raw.get("tasks", {})),
        reminded=dict(raw.get("reminded", {})),
        credit_commands=dict(raw.get("credit_commands", {})),
        acknowledgements=dict(raw.get("acknowledgements", {})),
        contacts=list(raw.get("contacts", [])),
        pause=None if raw.get("pause") is None else cast(Pause, dict(raw["pause"])),
        resumed_at=raw.get("resumed_at"),
        last_call_at=raw.get("last_call_at"),
        limit_proposals={k: cast(LimitProposal, dict(v)) for k, v in raw.get("limit_proposals", {}).items()},
        letters={k: cast(Letter, dict(v)) for k, v in raw.get("letters", {}).items()},
    )
    return receivables, dunning, _claims_from(raw, dunning.escalations)


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
        "reached_on": _day_json(record.reached_on),
        "anchor": _day_json(record.anchor),
        "passed": record.passed,
        "actions": sorted(record.actions),
        "interest": _money_json(record.interest),
        "interest_through": _day_json(record.interest_through),
        "fee": _money_json(record.fee),
        "notices": record.notices,
        "told": record.told,
    }


def _escalation_from(raw: dict[str, Any]) -> Escalation:
    return Escalation(
        invoice_id=raw["invoice_id"],
        currency=raw["currency"],
        level=raw.get("level"),
        offset_days=raw.get("offset_days", 0),
        reached_on=_day(raw.get("reached_on")),
        anchor=_day(raw.get("anchor")),
        passed=list(raw.get("passed", [])),
        actions=set(raw.get("actions", [])),
        interest=_money(raw.get("interest")),
        interest_through=_day(raw.get("interest_through")),
        fee=_money(raw.get("fee")),
        notices=[cast(Notice, dict(n)) for n in raw.get("notices", [])],
        told=list(raw.get("told", [])),
    )


def _claims_json(claims: Claims) -> dict[str, Any]:
    return {
        "claims": {
            invoice_id: {kind: claim_json(claim) for kind, claim in by_kind.items()}
            for invoice_id, by_kind in claims.claims.items()
        },
        "claims_allocation": claims.allocation,
    }


def _claims_from(raw: dict[str, Any], escalations: dict[str, Escalation]) -> Claims:
    """The claims of a snapshot; a snapshot written before claims existed has them derived from its escalations
    (the figures charged and what was claimed; no allocation, which the events after it will make)."""
    if "claims" not in raw:
        return _from_escalations(escalations)
    return Claims(
        claims={
            invoice_id: {kind: _claim_from(value) for kind, value in by_kind.items()}
            for invoice_id, by_kind in raw["claims"].items()
        },
        allocation=raw.get("claims_allocation", PRINCIPAL_FIRST),
    )


def _from_escalations(escalations: dict[str, Escalation]) -> Claims:
    claims = Claims()
    for record in escalations.values():
        if record.interest is not None:
            interest = claims.entry(record.invoice_id, INTEREST, record.currency)
            interest.charged, interest.through = record.interest, record.interest_through
        if record.fee is not None:
            claims.entry(record.invoice_id, INDEMNITY, record.currency).charged = record.fee
        for action, kind in CLAIMING_ACTIONS.items():
            if action in record.actions:
                claims.entry(record.invoice_id, kind, record.currency).claimed = True
    claims.reindex()
    return claims


def claim_json(claim: Claim) -> dict[str, Any]:
    """A claim as the snapshot keeps it (credits that settled it under ``settled``)."""
    return {
        "invoice_id": claim.invoice_id,
        "kind": claim.kind,
        "currency": claim.currency,
        "charged": str(claim.charged),
        "through": None if claim.through is None else claim.through.isoformat(),
        "fixed": claim.fixed,
        "claimed": claim.claimed,
        "void": claim.void,
        "settled": {k: str(v) for k, v in claim.settled.items()},
        "waived": str(claim.waived),
        "waivers": [dict(w) for w in claim.waivers],
        "asked": claim.asked,
    }


def _claim_from(raw: dict[str, Any]) -> Claim:
    return Claim(
        invoice_id=raw["invoice_id"],
        kind=raw["kind"],
        currency=raw["currency"],
        charged=Decimal(raw["charged"]),
        through=None if raw.get("through") is None else date.fromisoformat(raw["through"]),
        fixed=raw.get("fixed", False),
        claimed=raw.get("claimed", False),
        void=raw.get("void", False),
        settled={k: Decimal(v) for k, v in raw.get("settled", {}).items()},
        waived=Decimal(raw.get("waived", "0")),
        waivers=[dict(w) for w in raw.get("waivers", [])],
        asked=raw.get("asked"),
    )


def _day_json(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _money_json(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _day(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


def _money(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
