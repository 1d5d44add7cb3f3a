"""The at-most-once delivery of one reminder, and the facts in the customer's stream that prove what became of it.

The guarantee, exactly
----------------------
For one ``notifier.send_reminder`` command (its ``command_id``), at most one message is ever accepted by the SMTP
server through relance, however often the command is delivered and wherever a worker dies; and every command ends
in exactly one of ``reminder.sent``, ``reminder.failed`` or ``reminder.unconfirmed`` (the last two with a collector
task), or, before any e-mail was attempted, ``reminder.skipped`` or ``reminder.letter_requested``, so no reminder is
lost silently. How:

0. :func:`look` reads, once per command, every fact the stream holds about it (:class:`Progress`). A command that
   already ended ends again the same way without doing anything: redeliveries are harmless.
1. The MIME bytes are built once and stored (``sent_messages``, first write wins); every attempt sends those bytes,
   with the Message-ID ``<command_id@RELANCE_MAIL_DOMAIN>``, so the hash never changes between attempts.
2. Before talking to the server, the worker appends ``reminder.sending`` (deterministic id per round). Only the
   worker whose append is *applied* may send; a concurrent duplicate sees "duplicate" and backs off
   (:class:`SendInProgress`). Before that, the bytes are parsed back (:func:`services.notifier.mime.verify`):
   headers, recipients and body must be exactly the intended ones, or the reminder ends in ``reminder.failed``
   (``refusal``: why) with a ``send_letter`` task, and nothing is sent. A text unsafe in a header (an encoded word, a
   line break) is refused the same way before the message is even built.
3. Replies the server gave before accepting the message are certain (:mod:`services.notifier.smtp` tells them
   apart): 4xx, a refused or timed-out connection, a failed login → retried with backoff in the same round; after
   ``RELANCE_SMTP_ATTEMPTS`` the round is closed with ``reminder.deferred`` and :class:`SendDeferred` is raised so
   the broker redelivers later, when a new round starts. 5xx or an invalid address → ``reminder.failed`` + a
   ``send_letter`` task. After ``MAX_ROUNDS`` deferred rounds the command is given up the same way.
4. The server's 250 after DATA → ``reminder.sent`` {recipients, accepted, refused, subject, message_id, template,
   template_version, sha256, smtp_reply}. Addresses the server refused while it accepted others are named in it
   and make one ``fix_contact`` task: the reminder is never sent again by relance once some of its recipients have
   it (resending to the others would be a second round of the same command, and a crash between the two could not
   be told apart from a duplicate).
5. Unknown outcomes are never retried: the connection lost or timed out after the message was transmitted, or a
   ``reminder.sending`` found open (no sent/failed/deferred) past ``RELANCE_SMTP_LEASE_SECONDS`` — its worker died
   between sending and recording. The server may have accepted it, so relance does not resend (a resend with the same
   Message-ID is *not* deduplicated by most servers and would reach the customer twice); it records
   ``reminder.unconfirmed`` and a ``check_delivery`` task naming the Message-ID, for a person to check the mail
   server's log and resend by hand if the message is not there. The lease must outlast a round
   (attempts * (timeout + backoff)); a redelivery within the lease raises :class:`SendInProgress` (retry later).
6. Many commands at once (:func:`deliver_all`, as the worker does): the messages of a batch are claimed in waves
   of a few more than the SMTP connections, each wave's claims committed before any of its messages is sent and
   while the previous wave's last messages are in flight; the messages go out concurrently and the outcomes are
   recorded as they come. A worker killed mid-batch leaves unconfirmed at most the messages in flight and one wave,
   never the whole batch. A message whose turn comes when its claim is half past the lease (a batch slowed by a
   failing server) is not sent in that round: the round closes as deferred, so a claim never expires while its
   message waits its turn.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import structlog
from sqlalchemy import Engine

from services.notifier import evidence, mime
from services.notifier.render import CONFIRMATION
from services.notifier.smtp import (
    Delivery,
    PermanentFailure,
    Refusal,
    SendError,
    TemporaryFailure,
    Transport,
    UnknownOutcome,
)
from shared.config import Settings
from shared.contracts import events
from shared.ledger.letters import StoredLetter
from shared.ledger.store import Incoming, Ledger, Outcome

log = structlog.get_logger()

MAX_ROUNDS = 20  # a command deferred this many times is given up (reminder.failed + task)
FINAL = ("sent", "failed", "unconfirmed", "skipped", "letter")  # the facts a command ends with
BY_EMAIL = ("sent", "failed", "unconfirmed")  # those an e-mail ends with
# The longest an outcome known waits for others to share its transaction: sends end one by one, and a transaction
# per outcome would cost a commit each, while holding all of them until the slowest ends would leave a whole batch
# in doubt if the worker died meanwhile.
OUTCOME_LINGER_SECONDS = 0.01
T = TypeVar("T")


class SendDeferred(SendError):
    """Retries are exhausted for now; nothing was accepted. Redeliver the command later."""


class SendInProgress(SendError):
    """Another worker holds this command's send (its lease has not expired). Redeliver the command later."""


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
        """From ``RELANCE_MAIL_*`` and ``RELANCE_SMTP_*``; the backoff is capped by ``RELANCE_RETRY_MAX_SECONDS``."""
        attempts, cap, lease = settings.smtp_attempts, settings.retry_max_seconds, settings.smtp_lease_seconds
        return cls(settings.mail_from, settings.mail_domain, attempts, backoff_max=cap, lease_seconds=lease)


Status = Literal["sent", "failed", "unconfirmed", "already_sent", "already_failed", "already_unconfirmed"]


@dataclass(frozen=True, slots=True)
class SendResult:
    status: Status
    message_id: str = ""
    sha256: str = ""
    reply: str = ""


@functools.lru_cache(maxsize=1 << 16)
def fact_id(command_id: str, fact: str) -> str:
    """Deterministic event id of a fact about a command (``sent``, ``failed``, ``sending/2``, ...)."""
    return "ntf-" + hashlib.sha256(f"{command_id}\x1f{fact}".encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Progress:
    """What the customer's stream holds about one command: the notifier's one look before it acts on it."""

    command_id: str
    known: Mapping[str, evidence.Fact]

    def fact(self, name: str) -> evidence.Fact | None:
        return self.known.get(fact_id(self.command_id, name))

    def ended(self, final: Sequence[str] = FINAL) -> str | None:
        """The first of ``final`` the command already ended with, if any."""
        return next((name for name in final if self.fact(name) is not None), None)

    @property
    def started(self) -> bool:
        """A first round of sending was opened: what goes out is what that round built, not a new reading."""
        return self.fact("sending/1") is not None

    @property
    def last_round(self) -> int:
        return max((n for n in range(1, MAX_ROUNDS + 1) if self.fact(f"sending/{n}") is not None), default=0)


def look(engine: Engine, command: Mapping[str, Any]) -> Progress:
    """Every fact about the command that decides what to do with it, read in one query."""
    return look_all(engine, [command])[command["tenant"], command["command_id"]]


def look_all(engine: Engine, commands: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], Progress]:
    """:func:`look` for many commands, in one query per tenant; by (tenant, command_id)."""
    wanted: dict[str, list[str]] = {}
    for command in commands:
        wanted.setdefault(command["tenant"], []).extend(_fact_ids(command["command_id"]))
    known = {tenant: evidence.facts(engine, tenant, ids) for tenant, ids in wanted.items()}
    return {(c["tenant"], c["command_id"]): Progress(c["command_id"], known[c["tenant"]]) for c in commands}


def _fact_ids(command_id: str) -> list[str]:
    rounds = range(1, MAX_ROUNDS + 1)
    return [fact_id(command_id, f) for f in FINAL] + [
        fact_id(command_id, f"{f}/{n}") for n in rounds for f in ("sending", "deferred")
    ]


class Journal:
    """Facts about many commands, appended to their streams in one transaction (one :meth:`Ledger.record` call).

    :meth:`add` queues a fact (and its task) and gives it a ticket; after :meth:`commit`, :meth:`status` says whether
    the fact was ``applied`` or was there already (``duplicate``), and :meth:`settle` turns a result that depended on
    the fact into the error saying why it could not be recorded, if it could not.
    """

    def __init__(self) -> None:
        self._items: list[Incoming] = []
        self._facts: list[tuple[int, str, str]] = []  # each fact's index in _items, command id, event type
        self._outcomes: list[Outcome] = []

    def add(
        self,
        command: Mapping[str, Any],
        fact: str,
        event: events.RelanceEvent,
        at: datetime,
        task: dict[str, Any] | None = None,
    ) -> int:
        """Queue the fact (and its task, in the same transaction); its ticket."""
        metadata = {"source": "notifier", "command_id": command["command_id"]}
        stream = (command["tenant"], command["customer_id"])

        def incoming(event_id: str, event: events.RelanceEvent) -> Incoming:
            return Incoming.of(event, stream=stream, event_id=event_id, occurred_at=at, metadata=metadata)

        self._facts.append((len(self._items), command["command_id"], event.TYPE))
        self._items.append(incoming(fact_id(command["command_id"], fact), event))
        if task is not None:
            self._items.append(incoming(task["task_id"], events.TaskCreated(**task)))
        return len(self._facts) - 1

    def commit(self, ledger: Ledger) -> None:
        """Append every fact queued, in one transaction."""
        self._outcomes = ledger.record(self._items) if self._items else []

    def status(self, ticket: int) -> str:
        return self._outcomes[self._facts[ticket][0]].status

    def settle(self, ticket: int, result: T) -> T | RuntimeError:
        """``result``, if its fact is in the stream now; else the error that says why the fact was not recorded."""
        index, command_id, event_type = self._facts[ticket]
        outcome = self._outcomes[index]
        if outcome.status in ("applied", "duplicate"):
            return result
        return RuntimeError(f"cannot record {event_type} for {command_id}: {outcome.reason}")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One reminder for :func:`deliver_all`: its command, rendering and recipients, and what :func:`look` read."""

    command: Mapping[str, Any]
    rendered: mime.Rendered
    recipients: Sequence[str]
    progress: Progress | None = None


Result = SendResult | Exception  # SendDeferred / SendInProgress: redeliver later; anything else: relance's own failure
Planned = tuple[int, SendResult]  # a result that holds once the fact with this ticket in a Journal is recorded


@dataclass(slots=True)
class _Claim:
    index: int
    command: Mapping[str, Any]
    built: mime.Built
    stored: evidence.StoredMessage
    facts: dict[str, Any]
    round: int
    event: events.ReminderSending
    ticket: int = -1  # in the journal of its wave's claims


async def deliver(
    ledger: Ledger,
    command: Mapping[str, Any],
    rendered: mime.Rendered,
    recipients: Sequence[str],
    transport: Transport,
    mail: MailSettings,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    progress: Progress | None = None,
) -> SendResult:
    """Send the reminder of a ``notifier.send_reminder`` command at most once and record the evidence.

    ``progress`` is what :func:`look` read, by a caller that already returned if the command had ended; without it
    the command is looked at here, and one that already ended by e-mail ends again the same way. Raises
    :class:`SendDeferred` or :class:`SendInProgress` when the command must be redelivered later.
    """
    outgoing = Outgoing(command, rendered, recipients, progress)
    [result] = await deliver_all(ledger, [outgoing], transport, mail, now=now, sleep=sleep)
    if isinstance(result, Exception):
        raise result
    return result


async def deliver_all(
    ledger: Ledger,
    outgoing: Sequence[Outgoing],
    transport: Transport,
    mail: MailSettings,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    journal: Journal | None = None,
) -> list[Result]:
    """:func:`deliver` for many commands at once, in as few transactions as the guarantee allows; results in order.

    One look at the commands that come without their progress; every message built and checked; their bytes stored
    in one transaction; then their ``reminder.sending`` claims appended wave by wave (:func:`wave_size`: a few more
    than the transport's connections), the first wave with the facts the caller queued in ``journal`` (skips,
    letters). A wave's messages are sent only once its claims are committed, concurrently (as many at once as the
    transport takes); the next wave is claimed as soon as every message claimed before has had its turn at a
    connection, so its claims commit while those are in flight; the outcomes are appended as they come, each
    transaction taking every outcome known by then (no outcome waits for a slower send). A claim commits before its
    message is handed to the server, so a worker dying at any point leaves at most an open ``reminder.sending``:
    ``reminder.unconfirmed`` after the lease, never a second send; and a worker killed during a batch leaves open
    only the claims of the messages in flight and of one wave claimed but not yet sent, whatever the batch size:
    a person checks those, as for any unknown outcome. The rest of the batch was never claimed and is sent by the
    next worker.
    """
    journal = journal if journal is not None else Journal()
    results: list[Result | None] = [None] * len(outgoing)
    planned: list[tuple[int, Planned]] = []  # results that hold once their fact in journal is recorded, by index
    looked = look_all(ledger.engine, [out.command for out in outgoing if out.progress is None])
    building: list[tuple[int, mime.Built, int]] = []
    for index, out in enumerate(outgoing):
        command = out.command
        command_id: str = command["command_id"]
        progress = out.progress
        if progress is None:
            progress = looked[command["tenant"], command_id]
            ended = progress.ended(BY_EMAIL)
            if ended is not None:
                found = progress.known[fact_id(command_id, ended)]
                log.info("notifier.duplicate_command", command_id=command_id, outcome=ended)
                status: Status = f"already_{ended}"  # type: ignore[assignment]  # one of BY_EMAIL
                results[index] = SendResult(status, found.data.get("message_id", ""), found.data.get("sha256", ""))
                continue
        last = progress.last_round
        if last and progress.fact(f"deferred/{last}") is None:
            opened = progress.known[fact_id(command_id, f"sending/{last}")]
            if now() - opened.recorded_at < timedelta(seconds=mail.lease_seconds):
                results[index] = SendInProgress(f"command {command_id} is being sent by another worker (round {last})")
                continue
            reason = "a worker died between sending and recording; the server may have accepted the message"
            planned.append((index, _unconfirmed(journal, command, opened.data, reason, "", now())))
            continue
        if last >= MAX_ROUNDS:
            reason = f"still deferred after {MAX_ROUNDS} rounds"
            planned.append((index, record_failed(journal, command, {}, reason, "", now())))
            continue
        try:
            building.append((index, build_message(out.rendered, out.recipients, mail, command_id, now()), last + 1))
        except mime.MimeError as exc:
            about = {"recipients": list(out.recipients)}
            planned.append((index, refuse_before_sending(journal, command, about, exc, now())))
    prepared = _prepared(ledger, outgoing, building, journal, results, planned, now)
    size = wave_size(transport.capacity)
    waves = [prepared[start : start + size] for start in range(0, len(prepared), size)] or [[]]
    ending = _Ending(gate=asyncio.Semaphore(max(1, transport.capacity)))
    sends: dict[asyncio.Future[Planned | tuple[int, Result]], _Claim] = {}

    def claim(wave: list[_Claim], claims: Journal) -> None:
        """Commit the wave's claims (with what else ``claims`` holds), then hand the messages claimed to the sends."""
        for item in wave:
            item.ticket = claims.add(item.command, f"sending/{item.round}", item.event, now())
        claims.commit(ledger)  # before any of the wave's messages is sent
        _settle_ended(claims, sends, results)
        claimed_at = now()
        for item in wave:
            status_ = claims.status(item.ticket)
            if status_ == "applied":
                ending.claimed += 1
                task = asyncio.ensure_future(_send(item, transport, mail, ending, claimed_at, now, sleep))
                sends[task] = item
            elif status_ == "duplicate":
                command_id = item.command["command_id"]
                results[item.index] = SendInProgress(
                    f"command {command_id} round {item.round} was claimed by another worker"
                )
            else:
                results[item.index] = claims.settle(item.ticket, None)
        if ending.started < ending.claimed:
            ending.turned.clear()

    claim(waves[0], journal)  # the first wave's claims, with the skips, letters and refusals queued before
    for index, (ticket, result) in planned:
        results[index] = journal.settle(ticket, result)
    for wave in waves[1:]:
        # The next wave is claimed once every message claimed so far has had its turn at a connection: its claims
        # commit while the messages in flight are sent, and no more than one wave waits claimed but not sent.
        while ending.started < ending.claimed:
            await _record_outcomes(ledger, ending, sends, results, until_turn=True)
        claim(wave, ending.take())  # with the outcomes known by now: one transaction for both
    while sends:
        await _record_outcomes(ledger, ending, sends, results, until_turn=False)
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]  # every index was filled above


def wave_size(connections: int) -> int:
    """How many messages are claimed together: the connections' worth, and a few more, so that a connection freed
    finds a message claimed and ready while the next wave's claims commit. A worker killed mid-batch leaves at most
    the messages in flight and one wave claimed but not sent (``reminder.unconfirmed`` after the lease)."""
    return max(1, connections) + max(2, connections // 4)


async def _record_outcomes(
    ledger: Ledger,
    ending: _Ending,
    sends: dict[asyncio.Future[Planned | tuple[int, Result]], _Claim],
    results: list[Result | None],
    *,
    until_turn: bool,
) -> None:
    """Wait for sends to end (or, ``until_turn``, for every claimed message to have its turn at a connection), and
    record the outcomes of every send that ended by then in one transaction. While a wave is to be claimed, the
    outcomes known wait a moment for its turn and go with its claims, in the same transaction."""
    watch: set[asyncio.Future[Any]] = set(sends)
    turned = asyncio.ensure_future(ending.turned.wait()) if until_turn else None
    try:
        if turned is not None:
            watch.add(turned)
        done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
        if turned is not None:
            if turned in done:
                return  # the next wave is claimed now, with the outcomes known
            await asyncio.wait({turned}, timeout=OUTCOME_LINGER_SECONDS)
            if turned.done():
                return
        rest = set(sends) - done
        if rest and turned is None:  # more are about to end: let them share the transaction, a moment at most
            await asyncio.wait(rest, timeout=OUTCOME_LINGER_SECONDS)
    finally:
        if turned is not None:
            turned.cancel()
    journal = ending.take()
    journal.commit(ledger)  # the outcomes of every send that ended meanwhile, in one transaction
    _settle_ended(journal, sends, results)


def _settle_ended(
    journal: Journal, sends: dict[asyncio.Future[Planned | tuple[int, Result]], _Claim], results: list[Result | None]
) -> None:
    """The results of the sends that ended, whose outcomes ``journal`` (committed) holds: a send queues its outcome
    in the journal of the next transaction and ends without awaiting anything, so every outcome taken with that
    journal is that of a send done by then, and every send done by then had its outcome in it."""
    for task in [task for task in sends if task.done()]:
        item = sends.pop(task)
        failure = task.exception()
        if failure is None:
            results[item.index] = journal.settle(*task.result())
        else:  # relance's own failure on this one send: its claim stays open
            results[item.index] = failure if isinstance(failure, Exception) else RuntimeError(repr(failure))


def _prepared(
    ledger: Ledger,
    outgoing: Sequence[Outgoing],
    building: list[tuple[int, mime.Built, int]],
    journal: Journal,
    results: list[Result | None],
    planned: list[tuple[int, Planned]],
    now: Callable[[], datetime],
) -> list[_Claim]:
    """Store the built messages' bytes (one transaction); the ``reminder.sending`` claim each is to be sent under."""
    stored = evidence.store_all(
        ledger.engine,
        [(outgoing[index].command, built.message_id, built.data) for index, built, _ in building],
    )
    claims: list[_Claim] = []
    for (index, built, round_), kept in zip(building, stored, strict=True):
        command = outgoing[index].command
        if isinstance(kept, Exception):
            results[index] = kept
            continue
        facts = {
            "command_id": command["command_id"],
            "reminder_id": command.get("reminder_id", ""),
            "level": command.get("level", ""),
            "message_id": kept.message_id,
            "sha256": kept.sha256,
            "recipients": list(built.recipients),
            "subject": built.subject,
            "template": outgoing[index].rendered.template_name,
            "template_version": outgoing[index].rendered.template_version,
        }
        if kept.mime != built.data:  # an earlier round's bytes: they are what goes out, so they are what is checked
            try:
                facts["subject"] = mime.verify(kept.mime, built, earlier=True)  # the subject those bytes carry
            except mime.RefusedMessage as exc:
                planned.append((index, refuse_before_sending(journal, command, facts, exc, now())))
                continue
        event = events.ReminderSending(**facts, round=round_)
        claims.append(_Claim(index, command, built, kept, facts, round_, event))
    return claims


@dataclass
class _Ending:
    """Where the sends in flight queue their outcomes (the journal of the next outcome transaction), and how many
    of the messages claimed have had their turn at a connection."""

    gate: asyncio.Semaphore  # as many sends at once as the transport takes
    journal: Journal = field(default_factory=Journal)
    claimed: int = 0
    started: int = 0
    turned: asyncio.Event = field(default_factory=asyncio.Event)  # set while every message claimed had its turn

    def take(self) -> Journal:
        """The outcomes queued so far, for a transaction; the sends ending from now on queue theirs anew."""
        journal, self.journal = self.journal, Journal()
        return journal

    def took_turn(self) -> None:
        self.started += 1
        if self.started >= self.claimed:
            self.turned.set()


async def _send(
    claim: _Claim,
    transport: Transport,
    mail: MailSettings,
    ending: _Ending,
    claimed_at: datetime,
    now: Callable[[], datetime],
    sleep: Callable[[float], Awaitable[None]],
) -> Planned | tuple[int, Result]:
    """Hand a claimed message to the server (retrying what is certain not to have been accepted); its outcome's
    fact is queued in the journal of the next outcome transaction as soon as it is known (without awaiting
    anything in between, so the fact is in that journal exactly when the send is done), with the result it makes."""
    command, built, stored, facts = claim.command, claim.built, claim.stored, claim.facts
    command_id: str = command["command_id"]
    for attempt in range(1, mail.attempts + 1):
        async with ending.gate:  # a send waits for its turn here, before the age of its claim is looked at
            if attempt == 1:
                ending.took_turn()
            if attempt == 1 and now() - claimed_at > timedelta(seconds=mail.lease_seconds / 2):
                # The batch took so long before this message's turn that its claim could expire while it is sent,
                # and another worker record it unconfirmed: nothing went out, so the round closes as deferred.
                reason = "the claim was half past its lease when the message's turn in the batch came"
                data = {**facts, "round": claim.round, "reason": reason, "smtp_reply": ""}
                ticket = ending.journal.add(command, f"deferred/{claim.round}", events.ReminderDeferred(**data), now())
                return ticket, SendDeferred(reason)
            try:
                # The envelope is the checked message's own From and To: what verify() read back is where it goes.
                delivery = await transport.send(built.sender, built.recipients, stored.mime)
            except TemporaryFailure as exc:
                failure = exc
            except PermanentFailure as exc:
                log.warning("notifier.send_refused", command_id=command_id, reason=exc.reason)
                return record_failed(ending.journal, command, facts, exc.reason, exc.reply, now())
            except UnknownOutcome as exc:
                log.error("notifier.send_unknown", command_id=command_id, reason=exc.reason)
                return _unconfirmed(ending.journal, command, facts, exc.reason, exc.reply, now())
            else:
                return _sent(claim, delivery, ending.journal, now())
        log.warning("notifier.send_deferred", command_id=command_id, attempt=attempt, reason=failure.reason)
        if attempt == mail.attempts:
            data = {**facts, "round": claim.round, "reason": failure.reason, "smtp_reply": failure.reply}
            ticket = ending.journal.add(command, f"deferred/{claim.round}", events.ReminderDeferred(**data), now())
            deferred = SendDeferred(failure.reason, failure.reply)
            deferred.__cause__ = failure
            return ticket, deferred
        await sleep(min(mail.backoff_max, mail.backoff_seconds * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")  # pragma: no cover


def _sent(claim: _Claim, delivery: Delivery, journal: Journal, at: datetime) -> Planned:
    """Queue ``reminder.sent`` (and the ``fix_contact`` task for addresses the server refused)."""
    command, built, stored = claim.command, claim.built, claim.stored
    refused = {r.address for r in delivery.refused}
    accepted = [r for r in built.recipients if r not in refused]
    data = {
        **claim.facts,
        "accepted": accepted,
        "refused": [r.to_json() for r in delivery.refused],
        "smtp_reply": delivery.reply,
    }
    task = _contact_task(command, delivery.refused, accepted, stored.message_id, at)
    ticket = journal.add(command, "sent", events.ReminderSent(**data), at, task)
    if delivery.refused:
        log.warning("notifier.recipients_refused", command_id=command["command_id"], refused=data["refused"])
    log.info("notifier.sent", command_id=command["command_id"], message_id=stored.message_id, sha256=stored.sha256)
    return ticket, SendResult("sent", stored.message_id, stored.sha256, delivery.reply)


def build_message(
    rendered: mime.Rendered, recipients: Sequence[str], mail: MailSettings, command_id: str, at: datetime | None
) -> mime.Built:
    """The reminder's MIME bytes as they go out (``relance preview`` writes them too): From ``RELANCE_MAIL_FROM``,
    Message-ID ``<command_id@RELANCE_MAIL_DOMAIN>``, Date ``at``."""
    return mime.build(
        rendered, sender=mail.sender, recipients=recipients, command_id=command_id, domain=mail.domain, date=at
    )


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
                f"{refusal.address} deferred ({refusal.code} {refusal.text}): it did not get the {_what(command)}; "
                f"forward it (`relance evidence show --message-id {message_id.strip('<>')} --output reminder.eml`) "
                "or check the address"
            )
    went = f"address refused by the mail server, the {_what(command)} went to {', '.join(accepted)} only: "
    note = went + "; ".join(notes)
    return task_data(command, "fix_contact", note, at)


def record_failed(
    journal: Journal,
    command: Mapping[str, Any],
    facts: Mapping[str, Any],
    reason: str,
    reply: str,
    at: datetime,
    *,
    note: str | None = None,
) -> Planned:
    """Queue ``reminder.failed`` and a ``send_letter`` task in journal; the fact's ticket and the result it makes."""
    data = {**facts, "command_id": command["command_id"], "reason": reason, "smtp_reply": reply}
    note = note or f"email refused ({reason}): send the {_what(command)} by letter or call"
    task = task_data(command, "send_letter", note, at)
    ticket = journal.add(command, "failed", events.ReminderFailed(**data), at, task)
    return ticket, SendResult("failed", str(facts.get("message_id", "")), str(facts.get("sha256", "")), reply)


def refuse_before_sending(
    journal: Journal,
    command: Mapping[str, Any],
    facts: Mapping[str, Any],
    exc: mime.MimeError,
    at: datetime,
) -> Planned:
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
    note += f": send the {_what(command)} by letter or call"
    about = {**facts, "refusal": refusal}
    return record_failed(journal, command, about, str(exc), "", at, note=note)


def _unconfirmed(
    journal: Journal,
    command: Mapping[str, Any],
    facts: Mapping[str, Any],
    reason: str,
    reply: str,
    at: datetime,
) -> Planned:
    message_id = str(facts.get("message_id", ""))
    data = {**facts, "command_id": command["command_id"], "reason": reason, "smtp_reply": reply}
    note = f"check the mail server's log for {message_id}; resend by hand only if it is not there ({reason})"
    task = task_data(command, "check_delivery", note, at)
    ticket = journal.add(command, "unconfirmed", events.ReminderUnconfirmed(**data), at, task)
    return ticket, SendResult("unconfirmed", message_id, str(facts.get("sha256", "")), reply)


def _what(command: Mapping[str, Any]) -> str:
    """What the message is, in a collector's words: a reminder, or a payment plan's confirmation."""
    return "payment plan confirmation" if command.get("level") == CONFIRMATION else "reminder"


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


def record_skipped(journal: Journal, command: Mapping[str, Any], reasons: list[dict[str, str]], at: datetime) -> int:
    """Nothing left to remind (every invoice paid, cancelled, disputed, or the reminder superseded): say why."""
    return journal.add(command, "skipped", events.ReminderSkipped(**_about(command), dropped=reasons), at)


def record_letter(
    journal: Journal,
    command: Mapping[str, Any],
    data: Mapping[str, Any],
    at: datetime,
    *,
    letter: StoredLetter | None = None,
    template_version: str | None = None,
    refusal: str | None = None,
    reason: str | None = None,
) -> int:
    """A letter is for a person to print and post: its PDF's ``letter.rendered`` and ``reminder.letter_requested``,
    with a ``send_letter`` task naming the letter and how to get it, in one transaction.

    Without a letter (``refusal``: ``no_postal_address``, or ``unrenderable`` with the ``reason``), the fact says why
    and the task is a ``postal_address_missing`` one, or a ``send_letter`` one saying what to correct: never a silent
    skip. The ticket is the ``reminder.letter_requested`` fact's.
    """
    level, tenant, customer_id = str(command["level"]), command["tenant"], command["customer_id"]
    preview = f"`relance preview --tenant {tenant} --customer {customer_id} --reminder {command['reminder_id']}`"
    facts = {**_about(command), "lines": len(data["lines"])}
    if letter is not None:
        rendered = events.LetterRendered(
            letter_id=letter.letter_id,
            command_id=command["command_id"],
            kind=letter.kind,
            sha256=letter.sha256,
            pages=letter.pages,
            reminder_id=command["reminder_id"],
            level=level,
            template=str(data.get("template") or level),
            template_version=template_version,
        )
        # The PDF's hash is letter.rendered's alone: a reminder fact's sha256 is its e-mail's (sent_messages).
        journal.add(command, "letter/rendered", rendered, at)
        note = (
            f"print and post the {level} letter {letter.letter_id} ({len(data['lines'])} invoice(s), "
            f"{letter.pages} page(s)): in the day's print batch (`relance letters batch --tenant {tenant} --date D "
            f"--out batch.pdf`), or alone: `relance letters show --tenant {tenant} --letter {letter.letter_id} "
            f"--out letter.pdf` (or the customer's page in the workspace); then record its posting "
            f"(`relance letters posted --tenant {tenant} --letter {letter.letter_id} --posted-on D ...`)"
        )
        task = task_data(command, "send_letter", note, at, key="letter")
    elif refusal == NO_POSTAL_ADDRESS:
        facts.update(refusal=refusal, reason="the customer has no postal address")
        note = (
            f"no postal address for customer {customer_id}: the {level} letter was not printed; add the address in "
            f"the ERP (customer.upserted postal_address), then print and post the letter ({preview} writes its text)"
        )
        task = task_data(command, POSTAL_ADDRESS_MISSING, note, at, key="letter")
    else:
        facts.update(refusal=refusal or "unrenderable", reason=reason)
        log.error("notifier.letter_unrenderable", command_id=command["command_id"], reason=reason)
        note = f"the {level} letter could not be rendered ({reason}): print and post it by hand ({preview})"
        task = task_data(command, "send_letter", note, at, key="letter")
    return journal.add(command, "letter", events.ReminderLetterRequested(**facts), at, task)


NO_POSTAL_ADDRESS = "no_postal_address"
POSTAL_ADDRESS_MISSING = "postal_address_missing"  # the task a letter without an address leaves


def _about(command: Mapping[str, Any]) -> dict[str, Any]:
    return {"command_id": command["command_id"], "reminder_id": command["reminder_id"], "level": command["level"]}
