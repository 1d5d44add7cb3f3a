"""``relance preview``: the reminder a customer would receive at a level, built from the ledger and rendered.

The data is assembled the way the escalation engine assembles a ``reminder.requested`` event (one reminder per
currency, the open overdue invoices not in dispute, interest and fee as ``state.escalations`` holds them), so what
is previewed is what the templates will be given. The policy is handed over by the caller as a :class:`Ladder`
(the command line reads it from the escalation service's policy library).

What is written is what the notifier would send: :func:`compose` renders with :func:`~services.notifier.render.render`
and builds the MIME with :func:`services.notifier.delivery.build_message`, the functions the real send uses, for the
recipients the real send would use. ``message.eml`` is byte for byte the message a send of the same reminder puts
on the wire, except for what derives from the command and the clock: the ``Message-ID`` (``<command_id@domain>``)
and the MIME boundary (a hash of the command id and the parts) come from the command id, which only exists once
the engine decides, so a preview uses its own ``preview:<customer>:<level>:<currency>`` id instead; ``Date`` is the
time of the preview. The letter prints its reference, the reminder id, which the engine gives when it decides: a
preview prints its own ``preview:…`` id there. Given a command's id, its reminder id (in the data) and its instant,
:func:`compose` returns exactly the bytes that command sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.notifier import mime
from services.notifier.delivery import MailSettings, build_message
from services.notifier.errors import NotifierError
from services.notifier.render import RenderedReminder, TemplateSet, render, render_confirmation
from services.notifier.sender import Sender
from services.notifier.service import confirmation_data, recipients_of, still_due
from shared.contracts import events
from shared.ledger.claims import INDEMNITY, INTEREST
from shared.ledger.records import RecordedEvent
from shared.ledger.state import ZERO, CustomerState


class PreviewError(NotifierError):
    """The preview cannot be built: unknown customer or level, nothing to remind."""


@dataclass(frozen=True, slots=True)
class WrittenLevel:
    """A level of the ladder that writes to the customer (by e-mail or letter)."""

    key: str
    channel: str
    template: str
    offset_days: int
    copy_channels: tuple[str, ...] = ()  # sorted


@dataclass(frozen=True, slots=True)
class Ladder:
    """What a preview needs of the customer's dunning policy: its identity and its written levels, in order."""

    name: str
    version: str
    language: str
    levels: tuple[WrittenLevel, ...]
    law: str | None = None  # fr | eu | uk: the legal mentions of the letter; None writes no law (French mentions)


@dataclass(frozen=True, slots=True)
class Preview:
    rendered: RenderedReminder
    message: mime.Built | None  # None when the customer has no e-mail address (a letter only)


def _claimed(state: CustomerState, invoice_id: str) -> tuple[Decimal, Decimal]:
    """The interest and indemnity a reminder demands on the invoice: claimed and still owed (as the engine's lines)."""
    amounts = []
    for kind in (INTEREST, INDEMNITY):
        claim = state.claims.get(invoice_id, kind)
        amounts.append(claim.owed if claim is not None and claim.claimed else ZERO)
    return amounts[0], amounts[1]


def reminder_data(state: CustomerState, policy: Ladder, level_key: str, today: date) -> list[dict[str, Any]]:
    """One ``reminder.requested``-shaped payload per currency with something to remind at ``level_key``."""
    written = policy.levels
    level = next((lv for lv in written if lv.key == level_key), None)
    if level is None:
        raise PreviewError(
            f"level {level_key!r} is not a written level of policy {policy.name!r}; "
            f"choose one of {', '.join(lv.key for lv in written)}"
        )
    profile = state.profile or {}
    language = profile.get("language") if isinstance(profile.get("language"), str) else None
    horizon = max(0, -level.offset_days)
    by_currency: dict[str, list[dict[str, Any]]] = {}
    for invoice in state.open_invoices():
        if invoice.invoice_id in state.disputes or invoice.outstanding <= ZERO:
            continue
        record = state.escalations.get(invoice.invoice_id)
        due = record.anchor if record is not None and record.anchor is not None else invoice.due_date
        if (due - today).days > horizon or (level.offset_days > 0 and due >= today):
            continue
        interest, fee = _claimed(state, invoice.invoice_id)
        by_currency.setdefault(invoice.currency, []).append(
            {
                "invoice_id": invoice.invoice_id,
                "number": invoice.number,
                "issue_date": invoice.issue_date.isoformat(),
                "due_date": due.isoformat(),
                "amount": str(invoice.amount),
                "outstanding": str(invoice.outstanding),
                "days_late": max(0, (today - due).days),
                "interest": str(interest),
                "fee": str(fee),
                "level": level.key,
            }
        )
    reminders = []
    for currency, lines in sorted(by_currency.items()):
        law = {"law": policy.law} if policy.law is not None else {}
        reminders.append(
            {
                **law,
                "reminder_id": f"preview:{state.customer_id}:{level.key}:{currency}",
                "level": level.key,
                "channel": level.channel,
                "copy_channels": list(level.copy_channels),
                "template": level.template,
                "language": language or policy.language,
                "currency": currency,
                "invoice_ids": [line["invoice_id"] for line in lines],
                "lines": lines,
                "totals": {
                    key: str(sum((Decimal(line[field]) for line in lines), ZERO))
                    for key, field in (("outstanding", "outstanding"), ("interest", "interest"), ("fees", "fee"))
                },
                "customer_id": state.customer_id,
                "policy": policy.name,
                "policy_version": policy.version,
                "as_of": f"{today.isoformat()}T00:00:00Z",
            }
        )
    if not reminders:
        raise PreviewError(f"customer {state.customer_id!r} has no open invoice to remind at level {level.key!r}")
    return reminders


def recorded_reminder(stream: Sequence[RecordedEvent], state: CustomerState, reminder_id: str) -> dict[str, Any]:
    """The ``reminder.requested`` the engine recorded as ``reminder_id``, as the notifier renders it: reduced to what
    the ledger still shows as due (:func:`~services.notifier.service.still_due`), so a letter printed later demands
    nothing paid or disputed since. Raises :class:`PreviewError` when there is no such reminder or nothing is left."""
    found = [
        e for e in stream if e.event_type == events.ReminderRequested.TYPE and e.data["reminder_id"] == reminder_id
    ]
    if not found:
        raise PreviewError(f"customer {state.customer_id} has no reminder {reminder_id!r} (see relance agenda)")
    data = {**found[0].data, "customer_id": state.customer_id, "tenant": state.tenant}
    reduced, dropped = still_due(data, state)
    if not reduced["lines"] and not reduced.get("claims"):
        reasons = ", ".join(f"{d['invoice_id']} {d['reason']}" for d in dropped) or "nothing listed"
        raise PreviewError(f"reminder {reminder_id} has nothing left to demand ({reasons}): do not post it")
    return reduced


def recorded_confirmation(stream: Sequence[RecordedEvent], state: CustomerState, wanted: str) -> dict[str, Any]:
    """The ``notifier.send_confirmation`` command a recorded ``payment_plan.confirmation_requested`` wrote (named by
    its command id or its confirmation id), with the plan's invoices as the ledger shows them now: the letter to print
    and post when the e-mail could not go. Raises :class:`PreviewError` when there is no such request."""
    found = [
        e
        for e in stream
        if e.event_type == events.PlanConfirmationRequested.TYPE
        and wanted in (e.event_id, e.data.get("confirmation_id"))
    ]
    if not found:
        raise PreviewError(f"customer {state.customer_id} has no payment plan confirmation {wanted!r}")
    event = found[0]
    command = {
        **event.data,
        "command_id": event.event_id,
        "command": events.SEND_CONFIRMATION,
        "tenant": state.tenant,
        "customer_id": state.customer_id,
        "occurred_at": event.occurred_at.isoformat(),
    }
    return confirmation_data(command, state)


def compose_confirmation(
    data: Mapping[str, Any],
    profile: Mapping[str, Any] | None,
    sender: Sender,
    language: str | None,
    templates: TemplateSet,
    mail: MailSettings,
    *,
    at: datetime | None = None,
) -> Preview:
    """A payment plan's confirmation rendered and built as the notifier sends it (Message-ID from its command id)."""
    rendered = render_confirmation(data, profile, sender, language, templates)
    recipients = recipients_of(profile or {})
    if not recipients:
        return Preview(rendered, None)
    return Preview(rendered, build_message(rendered, recipients, mail, str(data["command_id"]), at))


def compose(
    data: Mapping[str, Any],
    profile: Mapping[str, Any] | None,
    sender: Sender,
    language: str | None,
    templates: TemplateSet,
    mail: MailSettings,
    *,
    command_id: str | None = None,
    at: datetime | None = None,
) -> Preview:
    """The reminder rendered and built as the notifier sends it (``command_id`` default: the reminder id; ``at``
    default: now). Raises :class:`~services.notifier.mime.MimeError` for text that must not reach a header."""
    rendered = render(data, profile, sender, language, templates)
    recipients = recipients_of(profile or {})
    if not recipients:
        return Preview(rendered, None)
    built = build_message(rendered, recipients, mail, command_id or str(data["reminder_id"]), at)
    return Preview(rendered, built)


def write_parts(preview: Preview, directory: Path) -> list[Path]:
    """Write subject.txt, body.txt, body.html and (with an address to send it to) message.eml; return the paths."""
    rendered = preview.rendered
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "subject.txt": rendered.subject + "\n",
        "body.txt": rendered.text,
        "body.html": rendered.html,
    }
    paths = []
    for name, content in files.items():
        path = directory / name
        path.write_text(content, encoding="utf-8")
        paths.append(path)
    if preview.message is not None:
        eml = directory / "message.eml"
        eml.write_bytes(preview.message.data)
        paths.append(eml)
    return paths
