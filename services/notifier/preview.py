"""``relance preview``: the reminder a customer would receive at a level, built from the ledger and rendered.

The data is assembled the way the escalation engine assembles a ``reminder.requested`` event (one reminder per
currency, the open overdue invoices not in dispute, interest and fee as ``state.escalations`` holds them), so what
is previewed is what the templates will be given.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path
from typing import Any

from services.escalation.model import Policy
from services.notifier import mime
from services.notifier.errors import NotifierError
from services.notifier.render import RenderedReminder
from services.notifier.sender import Sender
from shared.ledger.state import ZERO, CustomerState


class PreviewError(NotifierError):
    """The preview cannot be built: unknown customer or level, nothing to remind."""


def reminder_data(state: CustomerState, policy: Policy, level_key: str, today: date) -> list[dict[str, Any]]:
    """One ``reminder.requested``-shaped payload per currency with something to remind at ``level_key``."""
    written = [lv for lv in policy.levels if lv.template and lv.channel in ("email", "letter")]
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
        interest = record.interest if record is not None and record.interest is not None else ZERO
        fee = record.fee if record is not None and record.fee is not None else ZERO
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
            }
        )
    reminders = []
    for currency, lines in sorted(by_currency.items()):
        reminders.append(
            {
                "reminder_id": f"preview:{state.customer_id}:{level.key}:{currency}",
                "level": level.key,
                "channel": level.channel,
                "copy_channels": sorted(level.copy_channels),
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


def build_message(
    rendered: RenderedReminder, sender: Sender, to: list[str], *, from_address: str | None = None
) -> EmailMessage:
    """A multipart/alternative message (text, then HTML) of a rendered reminder, for a person to look at.

    Every header value is refused if unsafe (:func:`services.notifier.mime.check_header_text`), as when sending.
    """
    message = EmailMessage()
    message["Subject"] = mime.check_header_text(rendered.subject, "the subject")
    company = mime.check_header_text(sender.company, "the sender's company")
    message["From"] = formataddr((company, mime.check_header_text(from_address or sender.email, "the sender's email")))
    if to:
        message["To"] = ", ".join(mime.check_header_text(address, "the customer's email") for address in to)
    message.set_content(rendered.text, subtype="plain", charset="utf-8")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return message


def write_parts(
    rendered: RenderedReminder, sender: Sender, profile: Mapping[str, Any] | None, directory: Path
) -> list[Path]:
    """Write subject.txt, body.txt, body.html and message.eml into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    emails = (profile or {}).get("emails") or []
    to = [str(e) for e in emails] if isinstance(emails, list) else [str(emails)]
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
    eml = directory / "message.eml"
    eml.write_bytes(bytes(build_message(rendered, sender, to)))
    paths.append(eml)
    return paths
