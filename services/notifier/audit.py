"""What ``relance evidence`` shows an auditor: a sent reminder's exact bytes, checked against the log.

The bytes come from ``sent_messages``, the facts from the customer's stream (``reminder.sent``, or
``reminder.unconfirmed`` / ``reminder.failed``, each carrying the SHA-256 of the bytes handed to SMTP). The check is
the one :func:`services.notifier.evidence.verify` makes: the stored bytes, hashed again now, must give the hash the
log recorded when the message was sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC

from services.notifier import evidence
from services.notifier.errors import NotifierError
from shared.ledger.store import Ledger, RecordedEvent

EVIDENCE_EVENTS = ("reminder.sending", "reminder.deferred", "reminder.sent", "reminder.failed", "reminder.unconfirmed")
OUTCOMES = ("reminder.sent", "reminder.unconfirmed", "reminder.failed")  # a command ends in exactly one


class UnknownMessage(NotifierError, LookupError):
    """No stored message has that Message-ID, or several tenants have one and none was named."""


@dataclass(frozen=True, slots=True)
class Audit:
    stored: evidence.StoredMessage
    recomputed_sha256: str
    outcome: RecordedEvent | None  # the command's reminder.sent / unconfirmed / failed, if recorded yet
    recorded_in: RecordedEvent | None  # the event whose SHA-256 is compared: the outcome, else the last attempt

    @property
    def recorded_sha256(self) -> str:
        return "" if self.recorded_in is None else str(self.recorded_in.data.get("sha256", ""))

    @property
    def verified(self) -> bool:
        return bool(self.recorded_sha256) and evidence.verify(self.stored, self.recorded_sha256)


def audit(ledger: Ledger, message_id: str, tenant: str | None = None) -> Audit:
    """Find the message, hash its bytes again and find what the customer's stream recorded about its command."""
    found = evidence.with_message_id(ledger.engine, message_id, tenant)
    if not found:
        where = f" in tenant {tenant!r}" if tenant else ""
        raise UnknownMessage(f"no stored message has the Message-ID {message_id!r}{where}")
    if len(found) > 1:
        tenants = ", ".join(m.tenant for m in found)
        raise UnknownMessage(f"Message-ID {message_id!r} is stored for several tenants ({tenants}): give --tenant")
    stored = found[0]
    facts = command_events(ledger.read_stream(stored.tenant, stored.customer_id), stored.command_id)
    outcome = next((e for e in reversed(facts) if e.event_type in OUTCOMES), None)
    hashed = [e for e in facts if e.data.get("sha256")]
    recorded_in = outcome if outcome is not None and outcome.data.get("sha256") else (hashed[-1] if hashed else None)
    return Audit(stored, hashlib.sha256(stored.mime).hexdigest(), outcome, recorded_in)


def command_events(stream: list[RecordedEvent], command_id: str) -> list[RecordedEvent]:
    """The notifier's facts about one command, in stream order."""
    return [e for e in evidence_events(stream) if e.data.get("command_id") == command_id]


def evidence_events(stream: list[RecordedEvent]) -> list[RecordedEvent]:
    return [e for e in stream if e.event_type in EVIDENCE_EVENTS]


def render_audit(report: Audit) -> str:
    stored, outcome = report.stored, report.outcome
    source = report.recorded_in or outcome
    data = source.data if source is not None else {}
    verdict = "hash verified" if report.verified else "HASH MISMATCH"
    if not report.recorded_sha256:
        verdict = "HASH MISMATCH: no event of the log records a hash for this message"
    rows = [
        ("tenant", stored.tenant),
        ("customer", stored.customer_id),
        ("command id", stored.command_id),
        ("Message-ID", stored.message_id),
        ("recorded SHA-256", report.recorded_sha256 or "-"),
        ("recomputed SHA-256", report.recomputed_sha256),
        ("verdict", verdict),
    ]
    if stored.sha256 != report.recorded_sha256:
        rows.append(("stored SHA-256", f"{stored.sha256} (sent_messages; differs from the log)"))
    rows += [
        ("recipients", ", ".join(data.get("recipients", [])) or "-"),
        *_refusals(outcome),
        ("subject", data.get("subject") or "-"),
        ("template", f"{data.get('template') or '-'}, version {data.get('template_version') or '-'}"),
        ("SMTP reply", (outcome.data.get("smtp_reply") if outcome else "") or "-"),
    ]
    if outcome is None:
        rows.append(("outcome", "none recorded yet (the send is in progress, deferred, or its worker died)"))
    elif outcome.event_type == "reminder.sent":
        rows.append(("sent at", f"{_instant(outcome)} UTC"))
    else:
        reason = outcome.data.get("reason", "")
        rows.append(("outcome", f"{outcome.event_type} at {_instant(outcome)} UTC: {reason}"))
    if report.recorded_in is not None:
        event = report.recorded_in
        rows.append(("evidence event", f"{event.event_type} {event.event_id}, stream version {event.version}"))
    rows.append(("stored bytes", f"{len(stored.mime)} bytes, stored at {stored.created_at.isoformat()}"))
    return "\n".join(f"{label:<19} {value}" for label, value in rows)


def _refusals(outcome: RecordedEvent | None) -> list[tuple[str, str]]:
    """Who got a reminder that some of its recipients' servers refused (``reminder.sent`` names both)."""
    refused = outcome.data.get("refused") if outcome is not None else None
    if not refused:
        return []
    accepted = ", ".join(outcome.data.get("accepted", [])) if outcome is not None else ""
    listed = "; ".join(f"{r['address']} ({r['code']} {r['reply']}, {r['kind']})" for r in refused)
    return [("accepted by", accepted or "-"), ("refused by", listed)]


def render_events(events: list[RecordedEvent], tenant: str, customer_id: str) -> str:
    if not events:
        return f"no evidence events for customer {customer_id} of {tenant}"
    lines = [f"{'ver':>4}  {'occurred (UTC)':<19}  {'type':<20}  {'SHA-256':<16}  Message-ID, detail"]
    for event in events:
        data = event.data
        detail = data.get("smtp_reply") if event.event_type == "reminder.sent" else data.get("reason", "")
        if event.event_type == "reminder.sending":
            detail = f"round {data.get('round', '?')}"
        sha256 = str(data.get("sha256", "-"))[:16]
        lines.append(
            f"{event.version:>4}  {_instant(event):<19}  {event.event_type:<20}  {sha256:<16}"
            f"  {data.get('message_id', '-')}" + (f"  {detail}" if detail else "")
        )
    return "\n".join(lines)


def _instant(event: RecordedEvent) -> str:
    return f"{event.occurred_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"
