"""Sending reminders over SMTP, at most once per command, with evidence in the customer's stream.

The guarantee, exactly
----------------------
For one ``notifier.send_reminder`` command (its ``command_id``), at most one message is ever accepted by the SMTP
server through relance, however often the command is delivered and wherever a worker dies; and every command ends
in exactly one of ``reminder.sent``, ``reminder.failed`` or ``reminder.unconfirmed`` (the last two with a collector
task), so no reminder is lost silently. How:

1. The MIME bytes are built once and stored (``sent_messages``, first write wins); every attempt sends those bytes,
   with the Message-ID ``<command_id@RELANCE_MAIL_DOMAIN>``, so the hash never changes between attempts.
2. Before talking to the server, the worker appends ``reminder.sending`` (deterministic id per round). Only the
   worker whose append is *applied* may send; a concurrent duplicate sees "duplicate" and backs off.
   Before that, the bytes are parsed back (:func:`services.notifier.mime.verify`): headers, recipients and body
   must be exactly the intended ones, or the reminder ends in ``reminder.failed`` (``refusal``: why) with a
   ``send_letter`` task, and nothing is sent. A text unsafe in a header (an encoded word, a line break) is refused
   the same way before the message is even built.
3. Replies the server gave before accepting the message are certain: 4xx, a refused or timed-out connection, a
   failed login → retried with backoff in the same round; after ``RELANCE_SMTP_ATTEMPTS`` the round is closed with
   ``reminder.deferred`` and :class:`SendDeferred` is raised so the broker redelivers later, when a new round starts.
   5xx or an invalid address → ``reminder.failed`` + a ``send_letter`` task.
4. The server's 250 after DATA → ``reminder.sent`` {recipients, accepted, refused, subject, message_id, template,
   template_version, sha256, smtp_reply}.

Several addresses, some refused
-------------------------------
Each address is offered at RCPT TO on its own. When the server accepts at least one, the message goes to those
(one DATA, once) and ``reminder.sent`` names the ``accepted`` addresses and the ``refused`` ones, each with the
server's code and text and whether the refusal was ``permanent`` (5xx) or ``temporary`` (4xx). The refused
addresses, permanent or temporary, also make one ``fix_contact`` task for a collector, naming each (a 5xx: the
address is wrong, correct it in the ERP; a 4xx: the address missed this reminder, forward it), because the
reminder is never sent again by relance once some of its recipients have it: resending the same message to the
others later would be a second round of the same command, and a crash between the two could not be told apart from
a duplicate. When every address is refused, it is as before: all permanent → ``reminder.failed``; any temporary →
retried and deferred, since that address may accept it later.
5. Unknown outcomes are never retried: the connection lost or timed out after the message was transmitted, or a
   ``reminder.sending`` found open (no sent/failed/deferred) past ``RELANCE_SMTP_LEASE_SECONDS`` — its worker died
   between sending and recording. The server may have accepted it, so relance does not resend (a resend with the same
   Message-ID is *not* deduplicated by most servers and would reach the customer twice); it records
   ``reminder.unconfirmed`` and a ``check_delivery`` task naming the Message-ID, for a person to check the mail
   server's log and resend by hand if the message is not there. The lease must outlast a round
   (attempts * (timeout + backoff)); a redelivery within the lease raises :class:`SendInProgress` (retry later).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import aiosmtplib
import structlog

from services.notifier import evidence, mime
from shared.config import Settings
from shared.contracts import events
from shared.ledger.store import Incoming, Ledger

log = structlog.get_logger()

IDLE_CHECK_SECONDS = 10.0  # a connection unused this long is checked with NOOP before it is used again
MAX_ROUNDS = 20  # a command deferred this many times is given up (reminder.failed + task)


# ------------------------------------------------------------------------------------------------------ errors
class SendError(Exception):
    """Base of the notifier's sending errors; ``reply`` is the server's reply or the local reason."""

    def __init__(self, reason: str, reply: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class TemporaryFailure(SendError):
    """The server certainly did not accept the message, and may later (4xx, refused, timeout before DATA)."""


class PermanentFailure(SendError):
    """The server refused the message for good (5xx) or it cannot be sent as asked (invalid address)."""


class UnknownOutcome(SendError):
    """The message was transmitted but its fate is unknown (connection lost before the final reply)."""


class SendDeferred(SendError):
    """Retries are exhausted for now; nothing was accepted. Redeliver the command later."""


class SendInProgress(SendError):
    """Another worker holds this command's send (its lease has not expired). Redeliver the command later."""


# --------------------------------------------------------------------------------------------------- transports
@dataclass(frozen=True, slots=True)
class Refusal:
    """The server's reply to one RCPT TO it did not accept."""

    address: str
    code: int
    text: str

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def to_json(self) -> dict[str, Any]:
        kind = "permanent" if self.permanent else "temporary"
        return {"address": self.address, "code": self.code, "reply": self.text, "kind": kind}


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the server accepted: its final reply after DATA, and the recipients it refused at RCPT TO (if any)."""

    reply: str
    refused: tuple[Refusal, ...] = ()


class Transport(Protocol):
    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivery:
        """Hand the bytes to the server; the server's final reply and the refused recipients, or a SendError.

        Raises :class:`PermanentFailure` / :class:`TemporaryFailure` when no recipient is accepted (temporary when
        any of the refusals is).
        """
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            ca_file=settings.smtp_ca_file,
            timeout=settings.smtp_timeout,
        )


class SmtpTransport:
    """aiosmtplib behind :class:`Transport`: one connection, reused for message after message, reopened if lost."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: aiosmtplib.SMTP | None = None
        self._used_at = 0.0
        self.connections = 0  # how many times a connection was opened (reuse is observable)

    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivery:
        client = await self._connected()
        refused: list[Refusal] = []
        try:
            await client.mail(sender)
            for recipient in recipients:
                try:
                    await client.rcpt(recipient)
                except aiosmtplib.SMTPRecipientRefused as exc:  # this address only: the others may be accepted
                    if exc.code == 421:  # the server is closing the connection: nothing more will be accepted
                        raise
                    refused.append(Refusal(recipient, exc.code, exc.message))
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            raise _by_code(exc) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop()
            raise TemporaryFailure(f"connection lost before the message was sent: {exc}") from exc
        if len(refused) == len(recipients):
            await self._reset()
            raise nobody_accepted(refused)
        try:
            response = await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:  # the server answered: it did not take the message
            await self._reset()
            raise _by_code(exc) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop()
            raise UnknownOutcome(f"connection lost while the message was transmitted: {exc}") from exc
        return Delivery(f"{response.code} {response.message}", tuple(refused))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            if time.monotonic() - self._used_at < IDLE_CHECK_SECONDS:
                self._used_at = time.monotonic()
                return self._client
            try:  # idle for a while: servers drop quiet connections, so check before MAIL FROM
                await self._client.noop()
                self._used_at = time.monotonic()
                return self._client
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                self._drop()
        config = self.config
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.tls == "implicit",
            start_tls=config.tls == "starttls",
            tls_context=context if config.tls != "none" else None,
            timeout=config.timeout,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            reply = f"{exc.code} {exc.message}" if isinstance(exc, aiosmtplib.SMTPResponseException) else ""
            raise TemporaryFailure(f"cannot connect to {config.host}:{config.port}: {exc}", reply) from exc
        self._client = client
        self._used_at = time.monotonic()
        self.connections += 1
        return client

    async def _reset(self) -> None:
        if self._client is None:
            return
        try:
            await self._client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None


def nobody_accepted(refused: Sequence[Refusal]) -> SendError:
    """Every recipient refused at RCPT TO: temporary if any of them may accept later, permanent otherwise."""
    listed = reply = "; ".join(f"{r.address}: {r.code} {r.text}" for r in refused)
    if len(refused) == 1:  # the server's reply as it gave it, as for any other refusal
        reply = f"{refused[0].code} {refused[0].text}"
    if all(r.permanent for r in refused):
        return PermanentFailure(f"server refused every recipient: {listed}", reply)
    return TemporaryFailure(f"server deferred the recipients: {listed}", reply)


def _by_code(exc: aiosmtplib.SMTPResponseException) -> SendError:
    reply = f"{exc.code} {exc.message}"
    if 400 <= exc.code < 500:
        return TemporaryFailure(f"server deferred the message: {reply}", reply)
    return PermanentFailure(f"server refused the message: {reply}", reply)


@dataclass
class MemoryTransport:
    """In-memory fake: records what it is given; ``script`` lists failures to raise first, in order; ``refuse``
    maps a recipient to the ``(code, text)`` it is refused with at RCPT TO."""

    script: list[SendError] = field(default_factory=list)
    sent: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)

    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivery:
        if self.script:
            raise self.script.pop(0)
        refused = tuple(Refusal(r, *self.refuse[r]) for r in recipients if r in self.refuse)
        if len(refused) == len(recipients):
            raise nobody_accepted(refused)
        self.sent.append((sender, tuple(r for r in recipients if r not in self.refuse), data))
        return Delivery("250 OK queued", refused)

    async def close(self) -> None:
        return None


# ----------------------------------------------------------------------------------------------------- sending
@dataclass(frozen=True, slots=True)
class MailSettings:
    sender: str
    domain: str
    attempts: int = 5
    backoff_seconds: float = 1.0
    backoff_max: float = 30.0
    lease_seconds: float = 900.0

    @classmethod
    def from_settings(cls, settings: Settings) -> MailSettings:
        return cls(
            sender=settings.mail_from,
            domain=settings.mail_domain,
            attempts=settings.smtp_attempts,
            backoff_max=settings.retry_max_seconds,
            lease_seconds=settings.smtp_lease_seconds,
        )


Status = Literal["sent", "failed", "unconfirmed", "already_sent", "already_failed", "already_unconfirmed"]


@dataclass(frozen=True, slots=True)
class SendResult:
    status: Status
    message_id: str = ""
    sha256: str = ""
    reply: str = ""


def fact_id(command_id: str, fact: str) -> str:
    """Deterministic event id of a fact about a command (``sent``, ``failed``, ``sending/2``, ...)."""
    return "ntf-" + hashlib.sha256(f"{command_id}\x1f{fact}".encode()).hexdigest()[:40]


async def send_reminder(
    ledger: Ledger,
    command: Mapping[str, Any],
    rendered: mime.Rendered,
    recipients: Sequence[str],
    transport: Transport,
    mail: MailSettings,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> SendResult:
    """Send the reminder of a ``notifier.send_reminder`` command at most once and record the evidence.

    Raises :class:`SendDeferred` or :class:`SendInProgress` when the command must be redelivered later.
    """
    command_id: str = command["command_id"]
    tenant: str = command["tenant"]
    rounds = range(1, MAX_ROUNDS + 1)
    wanted = [fact_id(command_id, f) for f in ("sent", "failed", "unconfirmed")]
    wanted += [fact_id(command_id, f"{f}/{n}") for n in rounds for f in ("sending", "deferred")]
    known = evidence.facts(ledger.engine, tenant, wanted)
    done = (("sent", "already_sent"), ("failed", "already_failed"), ("unconfirmed", "already_unconfirmed"))
    for fact, status in done:
        found = known.get(fact_id(command_id, fact))
        if found is not None:
            log.info("notifier.duplicate_command", command_id=command_id, outcome=fact)
            return SendResult(status, found.data.get("message_id", ""), found.data.get("sha256", ""))  # type: ignore[arg-type]
    last = max((n for n in rounds if fact_id(command_id, f"sending/{n}") in known), default=0)
    if last and fact_id(command_id, f"deferred/{last}") not in known:
        opened = known[fact_id(command_id, f"sending/{last}")]
        if now() - opened.recorded_at < timedelta(seconds=mail.lease_seconds):
            raise SendInProgress(f"command {command_id} is being sent by another worker (round {last})")
        reason = "a worker died between sending and recording; the server may have accepted the message"
        return _unconfirmed(ledger, command, opened.data, reason, "", now())
    if last >= MAX_ROUNDS:
        return record_failed(ledger, command, {}, f"still deferred after {MAX_ROUNDS} rounds", "", now())

    try:
        built = mime.build(
            rendered, sender=mail.sender, recipients=recipients, command_id=command_id, domain=mail.domain, date=now()
        )
    except mime.MimeError as exc:
        return refuse_before_sending(ledger, command, {"recipients": list(recipients)}, exc, now())
    stored = evidence.store(
        ledger.engine,
        tenant=tenant,
        customer_id=command["customer_id"],
        command_id=command_id,
        message_id=built.message_id,
        mime=built.data,
    )
    facts = {
        "command_id": command_id,
        "reminder_id": command.get("reminder_id", ""),
        "level": command.get("level", ""),
        "message_id": stored.message_id,
        "sha256": stored.sha256,
        "recipients": list(built.recipients),
        "subject": built.subject,
        "template": rendered.template_name,
        "template_version": rendered.template_version,
    }
    if stored.mime != built.data:  # an earlier round's bytes: they are what goes out, so they are what is checked
        try:
            facts["subject"] = mime.verify(stored.mime, built, earlier=True)  # the subject those bytes carry
        except mime.RefusedMessage as exc:
            return refuse_before_sending(ledger, command, facts, exc, now())
    round_ = last + 1
    claim = record_fact(ledger, command, f"sending/{round_}", events.ReminderSending(**facts, round=round_), now())
    if claim != "applied":
        raise SendInProgress(f"command {command_id} round {round_} was claimed by another worker")

    for attempt in range(1, mail.attempts + 1):
        try:
            # The envelope is the checked message's own From and To: what verify() read back is where it goes.
            delivery = await transport.send(built.sender, built.recipients, stored.mime)
        except TemporaryFailure as exc:
            log.warning("notifier.send_deferred", command_id=command_id, attempt=attempt, reason=exc.reason)
            if attempt == mail.attempts:
                data = {**facts, "round": round_, "reason": exc.reason, "smtp_reply": exc.reply}
                record_fact(ledger, command, f"deferred/{round_}", events.ReminderDeferred(**data), now())
                raise SendDeferred(exc.reason, exc.reply) from exc
            await sleep(min(mail.backoff_max, mail.backoff_seconds * 2 ** (attempt - 1)))
            continue
        except PermanentFailure as exc:
            log.warning("notifier.send_refused", command_id=command_id, reason=exc.reason)
            return record_failed(ledger, command, facts, exc.reason, exc.reply, now())
        except UnknownOutcome as exc:
            log.error("notifier.send_unknown", command_id=command_id, reason=exc.reason)
            return _unconfirmed(ledger, command, facts, exc.reason, exc.reply, now())
        refused = {r.address for r in delivery.refused}
        accepted = [r for r in built.recipients if r not in refused]
        data = {
            **facts,
            "accepted": accepted,
            "refused": [r.to_json() for r in delivery.refused],
            "smtp_reply": delivery.reply,
        }
        task = _contact_task(command, delivery.refused, accepted, stored.message_id, now())
        record_fact(ledger, command, "sent", events.ReminderSent(**data), now(), task)
        if delivery.refused:
            log.warning("notifier.recipients_refused", command_id=command_id, refused=data["refused"])
        log.info("notifier.sent", command_id=command_id, message_id=stored.message_id, sha256=stored.sha256)
        return SendResult("sent", stored.message_id, stored.sha256, delivery.reply)
    raise AssertionError("unreachable")  # pragma: no cover


def _contact_task(
    command: Mapping[str, Any], refused: Sequence[Refusal], accepted: Sequence[str], message_id: str, at: datetime
) -> dict[str, Any] | None:
    """The ``fix_contact`` task for the addresses the server refused while others got the reminder."""
    if not refused:
        return None
    notes = []
    for refusal in refused:
        if refusal.permanent:
            notes.append(f"{refusal.address} refused ({refusal.code} {refusal.text}): correct the address in the ERP")
        else:
            notes.append(
                f"{refusal.address} deferred ({refusal.code} {refusal.text}): it did not get the reminder; forward "
                f"it (`relance evidence show --message-id {message_id.strip('<>')} --output reminder.eml`) "
                "or check the address"
            )
    note = f"address refused by the mail server, the reminder went to {', '.join(accepted)} only: " + "; ".join(notes)
    return task_data(command, "fix_contact", note, at)


def record_failed(
    ledger: Ledger,
    command: Mapping[str, Any],
    facts: Mapping[str, Any],
    reason: str,
    reply: str,
    at: datetime,
    *,
    note: str | None = None,
) -> SendResult:
    data = {**facts, "command_id": command["command_id"], "reason": reason, "smtp_reply": reply}
    note = note or f"email refused ({reason}): send the reminder by letter or call"
    task = task_data(command, "send_letter", note, at)
    record_fact(ledger, command, "failed", events.ReminderFailed(**data), at, task)
    return SendResult("failed", str(facts.get("message_id", "")), str(facts.get("sha256", "")), reply)


def refuse_before_sending(
    ledger: Ledger, command: Mapping[str, Any], facts: Mapping[str, Any], exc: mime.MimeError, at: datetime
) -> SendResult:
    """Record a reminder that relance itself refuses to send (``reminder.failed`` with its ``refusal``, a task).

    An unsafe text or a message that does not parse back as intended is someone's data to correct, maybe an attack:
    it is logged as an error and the collector is told what to fix, as well as to remind the customer another way.
    """
    refusal = {
        mime.UnsafeHeaderText: "unsafe_header_text",
        mime.RefusedMessage: "message_mismatch",
        mime.InvalidAddress: "invalid_address",
    }.get(type(exc), "unbuildable")
    log.error("notifier.refused_before_sending", command_id=command["command_id"], refusal=refusal, reason=str(exc))
    note = f"email not sent ({exc})"
    if refusal in ("unsafe_header_text", "message_mismatch"):
        note += "; correct the customer's details in the ERP (this may be an attempt to forge e-mail headers)"
    note += ": send the reminder by letter or call"
    return record_failed(ledger, command, {**facts, "refusal": refusal}, str(exc), "", at, note=note)


def _unconfirmed(
    ledger: Ledger, command: Mapping[str, Any], facts: Mapping[str, Any], reason: str, reply: str, at: datetime
) -> SendResult:
    message_id = str(facts.get("message_id", ""))
    data = {**facts, "command_id": command["command_id"], "reason": reason, "smtp_reply": reply}
    note = f"check the mail server's log for {message_id}; resend by hand only if it is not there ({reason})"
    task = task_data(command, "check_delivery", note, at)
    record_fact(ledger, command, "unconfirmed", events.ReminderUnconfirmed(**data), at, task)
    return SendResult("unconfirmed", message_id, str(facts.get("sha256", "")), reply)


def task_data(
    command: Mapping[str, Any], kind: str, note: str, at: datetime, *, key: str | None = None
) -> dict[str, Any]:
    """A ``task.created`` event's data for a person to act on the command (one per command and ``key``)."""
    totals = command.get("totals") or {}
    return {
        "task_id": fact_id(command["command_id"], f"task/{key or kind}"),
        "kind": kind,
        "due_on": at.date().isoformat(),
        "invoice_ids": list(command.get("invoice_ids", [])),
        "currency": command.get("currency", ""),
        "amount_at_risk": str(totals.get("outstanding", "0")),
        "note": note,
        "reminder_id": command.get("reminder_id", ""),
        "command_id": command["command_id"],
    }


def record_fact(
    ledger: Ledger,
    command: Mapping[str, Any],
    fact: str,
    event: events.RelanceEvent,
    at: datetime,
    task: dict[str, Any] | None = None,
) -> str:
    """Append the fact (and its task, in the same transaction); the fact's outcome status."""

    def incoming(event_id: str, event: events.RelanceEvent) -> Incoming:
        return Incoming(
            tenant=command["tenant"],
            customer_id=command["customer_id"],
            event_id=event_id,
            event_type=event.TYPE,
            data=event.data(),
            occurred_at=at,
            metadata={"source": "notifier", "command_id": command["command_id"]},
            event=event,
        )

    items = [incoming(fact_id(command["command_id"], fact), event)]
    if task is not None:
        items.append(incoming(task["task_id"], events.TaskCreated(**task)))
    outcomes = ledger.record(items)
    if outcomes[0].status not in ("applied", "duplicate"):
        raise RuntimeError(f"cannot record {event.TYPE} for {command['command_id']}: {outcomes[0].reason}")
    return outcomes[0].status
