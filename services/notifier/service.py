"""The notifier's work on one ``notifier.send_reminder`` command, whatever carries it (RabbitMQ, the demo's queue).

A ``notifier.send_confirmation`` command (the written confirmation of a payment plan a person agreed) goes the same
way, with its own checks (:func:`confirmation_still_due`) and letter (``payment_plan_confirmation``); its evidence is
the reminder's facts, keyed by its command id, with ``reminder_id`` = its ``confirmation_id`` and ``level`` =
``payment_plan_confirmation``, so ``relance evidence show`` and the customer's timeline read it like any e-mail.

For each command, in this order:

0. The body is read with the contract's model (:func:`services.notifier.command.read`); one that is not a command
   of the contract raises ``BadCommand`` naming the first problem, and the worker dead-letters it.
1. A command that already ended (``reminder.sent`` / ``failed`` / ``unconfirmed`` / ``skipped``) ends again the same
   way without doing anything: redeliveries are harmless. What became of the command is read once
   (:func:`services.notifier.delivery.look`) and decides everything that follows.
2. Before the first attempt, the reminder is checked against the ledger *as it is now*, not as it was when the
   escalation engine decided it: invoices paid, cancelled or disputed since are dropped, outstanding amounts are
   today's, claims paid or waived since are dropped, and a reminder overtaken by a newer one for the same currency is
   not sent. With nothing left to remind,
   ``reminder.skipped`` records why. relance never reminds a customer of an invoice the ledger knows is settled or
   disputed, nor a customer paused on the sending day (``customer.paused``: skipped as "customer paused until D
   (reason)"; the engine decides nothing during a pause, this catches a reminder decided before it).
3. A letter (``channel: letter``) is rendered to PDF (:mod:`services.notifier.letters`: the e-mail of the level under
   a letter's heading, the customer's postal address in the envelope's window), stored once in ``letters``
   (:mod:`shared.ledger.letters`) and recorded as ``letter.rendered`` (its SHA-256 and pages) with
   ``reminder.letter_requested`` and a ``send_letter`` task naming the letter, in one transaction. A customer with no
   postal address gets no PDF: the fact says ``refusal: no_postal_address`` and a ``postal_address_missing`` task asks
   for the address. An e-mail copy, when the level asks for one, goes out like any e-mail.
4. Quiet hours hold the command back (:class:`NotNow`; the worker retries it later); the tenant's rate limit makes
   the worker wait for the next minute.
5. The reminder is rendered with the tenant's templates and sender, for the recipients of the customer's profile, and
   handed to :func:`services.notifier.delivery.deliver`, which sends it at most once and records the evidence.
   Ledger text that must not reach an e-mail header (a customer name carrying an RFC 2047 encoded word or a line
   break, written by an older ERP or straight into the database) is refused at rendering: ``reminder.failed`` with
   ``refusal: unsafe_header_text`` and a ``send_letter`` task saying what to correct; nothing is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine

from services.notifier import delivery, evidence, letters
from services.notifier.command import BadCommand, read
from services.notifier.delivery import MailSettings
from services.notifier.errors import NotifierError
from services.notifier.evidence import take_slot
from services.notifier.mime import UnsafeHeaderText
from services.notifier.render import (
    CONFIRMATION,
    DEFAULT_LANGUAGE,
    LANGUAGES,
    RenderSettings,
    TemplateSet,
    load_templates,
    render,
    render_confirmation,
    render_letter,
    template_dirs,
)
from services.notifier.rules import SendingRules, load_rules
from services.notifier.sender import Sender, load_sender
from services.notifier.smtp import Transport
from shared.config import ConfigurationError, Settings
from shared.contracts.commands import SendConfirmation, SendReminder
from shared.contracts.events import CLAIMS_STATEMENT
from shared.ledger import letters as stored_letters
from shared.ledger.state import ZERO, CustomerState
from shared.ledger.store import Ledger, remember
from shared.ledger.tasks import paused_on

Parsed = SendReminder | SendConfirmation
CONFIRMATION_FINAL = (*delivery.BY_EMAIL, "skipped")  # the facts a confirmation ends with (it is never a letter)

log = structlog.get_logger()


class NotNow(NotifierError):
    """The command may not be sent yet (quiet hours); retry it in about ``seconds``."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # sent, failed, unconfirmed, skipped, letter, or already_<one of those>
    command_id: str
    tenant: str
    level: str = ""
    language: str = ""
    message_id: str = ""
    dropped: tuple[str, ...] = ()
    letter: bool = False  # a send_letter task was recorded for a person to post the letter


@dataclass
class TenantSetup:
    templates: TemplateSet
    sender: Sender
    rules: SendingRules


@dataclass
class Notifier:
    """Checks, renders and sends reminders; one per process, shared by the commands it handles (many at a time)."""

    settings: Settings
    engine: Engine
    transport: Transport
    render_settings: RenderSettings = field(default_factory=RenderSettings)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    shared_ledger: Ledger | None = None  # the process's ledger (and its cache of states); default: a new one
    _tenants: dict[str, TenantSetup] = field(default_factory=dict)
    _template_sets: dict[tuple[Path, ...], TemplateSet] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ledger = self.shared_ledger or Ledger(self.engine)
        self.mail = MailSettings.from_settings(self.settings)

    def load(self) -> None:
        """Load and try every template set, sender and sending rule now, so a mistake stops start-up, not a send;
        and WeasyPrint's libraries, so that letters cannot fail for want of them in the middle of a batch."""
        letters.check_libraries()
        self.setup("")
        template_dir = self.render_settings.template_dir
        if template_dir is not None and template_dir.is_dir():
            for tenant_dir in sorted(p for p in template_dir.iterdir() if p.is_dir()):
                if tenant_dir.name not in LANGUAGES:  # fr/, en/: overrides for every tenant, not a tenant
                    self.setup(tenant_dir.name)

    def setup(self, tenant: str) -> TenantSetup:
        found = self._tenants.get(tenant)
        if found is None:
            name = tenant or None
            sender_file: Path | None = self.render_settings.sender_file
            # A tenant without a template folder of its own renders with the same set as the others: loaded (and
            # tried on every sample) once per process, not once per tenant.
            folders = tuple(template_dirs(self.render_settings.template_dir, name))
            templates = self._template_sets.get(folders)
            if templates is None:
                templates = self._template_sets[folders] = load_templates(self.render_settings.template_dir, name)
            found = TenantSetup(
                templates=templates,
                sender=load_sender(sender_file, name),
                rules=load_rules(self.settings, sender_file, name),
            )
            self._tenants[tenant] = found
        return found

    async def handle(self, command: Mapping[str, Any]) -> Outcome:
        """Do what the command asks, once; raises :class:`NotNow`, ``SendDeferred`` or ``SendInProgress`` to retry.

        Raises :class:`~services.notifier.command.BadCommand` for a body that is not a command of the contract.
        """
        [result] = await self.handle_all([command])
        if isinstance(result, Exception):
            raise result
        return result

    async def handle_all(self, commands: Sequence[Mapping[str, Any]]) -> list[Outcome | Exception]:
        """:meth:`handle` for many commands at once; for each, in order, its outcome or what :meth:`handle` raises.

        The commands are looked at, checked and rendered together, their facts and claims recorded in one
        transaction and their outcomes in one more (:func:`services.notifier.delivery.deliver_all`). Two copies of
        one command in the same call are not handled side by side: the later one is handled once the first ended,
        and ends the same way (``already_...``).
        """
        results: list[Outcome | Exception | None] = [None] * len(commands)
        unique: dict[tuple[str, str], tuple[int, Parsed]] = {}
        copies: list[int] = []
        for index, command in enumerate(commands):
            try:
                reminder = read(command)  # the typed reading decides; the command's JSON is what templates get
            except BadCommand as exc:
                results[index] = exc
                continue
            if (reminder.tenant, reminder.command_id) in unique:
                copies.append(index)
            else:
                unique[reminder.tenant, reminder.command_id] = (index, reminder)
        handled = await self._handle_unique([(commands[i], reminder) for i, reminder in unique.values()])
        for (index, _), result in zip(unique.values(), handled, strict=True):
            results[index] = result
        if copies:
            for index, result in zip(copies, await self.handle_all([commands[i] for i in copies]), strict=True):
                results[index] = result
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]  # every index was filled above

    async def _handle_unique(self, batch: Sequence[tuple[Mapping[str, Any], Parsed]]) -> list[Outcome | Exception]:
        """The commands of :meth:`handle_all`, no two with the same id."""
        results: list[Outcome | Exception | None] = [None] * len(batch)
        progress = delivery.look_all(self.engine, [command for command, _ in batch])  # the one look at each command
        journal = delivery.Journal()  # skips, letters and failures before sending: committed with the claims
        planned: list[tuple[int, int, Outcome]] = []  # (index, ticket in journal, the outcome once it is recorded)
        sending: list[tuple[int, int, delivery.Outgoing, Outcome]] = []  # (index, letter ticket or -1, ...)
        todo: list[tuple[int, Mapping[str, Any], Parsed, delivery.Progress]] = []
        for index, (command, reminder) in enumerate(batch):
            looked = progress[reminder.tenant, reminder.command_id]
            if isinstance(reminder, SendConfirmation):
                ended, level = looked.ended(CONFIRMATION_FINAL), CONFIRMATION
            else:
                email = reminder.channel != "letter" or "email" in reminder.copy_channels
                final = delivery.FINAL if not email else tuple(f for f in delivery.FINAL if f != "letter")
                ended, level = looked.ended(final), reminder.level
            if ended is not None:
                log.info("notifier.duplicate_command", command_id=reminder.command_id, outcome=ended)
                results[index] = Outcome(f"already_{ended}", reminder.command_id, reminder.tenant, level)
            else:
                todo.append((index, command, reminder, looked))
        states = evidence.states(self.engine, [(reminder.tenant, reminder.customer_id) for _, _, reminder, _ in todo])
        # The ledger's writer takes them as they are when it records the batch's facts (not read a second time);
        # nothing below looks at a state once the first of those transactions began.
        remember(self.ledger, states.values())
        for index, command, reminder, looked in todo:
            state = states[reminder.tenant, reminder.customer_id]
            try:
                if isinstance(reminder, SendConfirmation):
                    step = await self._prepare_confirmation(command, reminder, looked, state, journal)
                else:
                    step = await self._prepare(command, reminder, looked, state, journal)
            except NotNow as exc:
                results[index] = exc
                continue
            ticket, out, outcome = step
            if out is not None:
                sending.append((index, ticket, out, outcome))
            else:
                planned.append((index, ticket, outcome))
        now = self.now
        outgoing = [out for _, _, out, _ in sending]
        sent = await delivery.deliver_all(
            self.ledger, outgoing, self.transport, self.mail, now=now, sleep=self.sleep, journal=journal
        )
        for index, ticket, outcome in planned:
            results[index] = journal.settle(ticket, outcome)
        for (index, letter, _, about), result in zip(sending, sent, strict=True):
            if isinstance(result, Exception):
                results[index] = result
            else:
                done = replace(about, status=result.status, message_id=result.message_id)
                results[index] = done if letter < 0 else journal.settle(letter, done)
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]  # every index was filled above

    async def _prepare(
        self,
        command: Mapping[str, Any],
        reminder: SendReminder,
        progress: delivery.Progress,
        state: CustomerState,
        journal: delivery.Journal,
    ) -> tuple[int, delivery.Outgoing | None, Outcome]:
        """Steps 2-5 of one command: what to send (an Outgoing, and the outcome it makes), or nothing and the outcome
        that holds once the fact with the ticket in journal is recorded. Raises :class:`NotNow`."""
        command_id, tenant, level = reminder.command_id, reminder.tenant, reminder.level
        letter = reminder.channel == "letter"
        email = not letter or "email" in reminder.copy_channels
        data = dict(command)
        dropped: tuple[str, ...] = ()  # ids of the invoices no longer due
        if not progress.started:  # nothing went out yet: remind only what is still due
            paused = pause_reason(state, self.now().astimezone(self.setup(tenant).rules.quiet.zone).date())
            if paused is not None:
                reasons = [{"invoice_id": "*", "reason": paused}]
                ticket = delivery.record_skipped(journal, command, reasons, self.now())
                log.info("notifier.skipped", command_id=command_id, reasons=reasons)
                return ticket, None, Outcome("skipped", command_id, tenant, level, dropped=("*",))
            data, reasons = still_due(command, state)
            dropped = tuple(reason["invoice_id"] for reason in reasons)
            if not data["lines"] and not data.get("claims"):
                ticket = delivery.record_skipped(journal, command, reasons, self.now())
                log.info("notifier.skipped", command_id=command_id, reasons=reasons)
                return ticket, None, Outcome("skipped", command_id, tenant, level, dropped=dropped)
        setup = self.setup(tenant)
        profile = state.profile or {}
        language = str(data.get("language") or profile.get("language") or DEFAULT_LANGUAGE)
        ticket = -1  # the ticket of a fact in journal the outcome depends on (the letter's, with an e-mail copy)
        if letter:
            ticket = self._letter(command, data, profile, setup, language, journal)
            if not email:
                return ticket, None, Outcome("letter", command_id, tenant, level, letter=True)
        now = await self._sending_slot(setup, tenant)
        recipients = recipients_of(profile)
        try:
            rendered = render(data, profile, setup.sender, language, setup.templates)
        except ConfigurationError as exc:  # the templates passed their start-up trial; this data broke them
            reason = f"cannot render the reminder: {exc}"
            ticket, failed = delivery.record_failed(journal, command, {}, reason, "", now)
            return ticket, None, Outcome(failed.status, command_id, tenant, level, language, letter=letter)
        except UnsafeHeaderText as exc:  # ledger text (a name, an invoice number) that must not reach a header
            ticket, failed = delivery.refuse_before_sending(journal, command, {"recipients": recipients}, exc, now)
            return ticket, None, Outcome(failed.status, command_id, tenant, level, language, letter=letter)
        about = Outcome("", command_id, tenant, level, rendered.language, dropped=dropped, letter=letter)
        return ticket, delivery.Outgoing(command, rendered, recipients, progress), about

    def _letter(
        self,
        command: Mapping[str, Any],
        data: Mapping[str, Any],
        profile: Mapping[str, Any],
        setup: TenantSetup,
        language: str,
        journal: delivery.Journal,
    ) -> int:
        """Render the reminder's letter to PDF, store it (once per command) and queue its facts; the ticket of the
        ``reminder.letter_requested`` fact. A customer without a postal address gets no PDF, and the fact and its
        task say so; a letter its data cannot render is recorded with the reason, and a task to post it by hand."""
        now = self.now()
        tenant, command_id = str(command["tenant"]), str(command["command_id"])
        address = letters.address_of(profile)
        if address is None:
            log.warning("notifier.no_postal_address", command_id=command_id, customer_id=command["customer_id"])
            return delivery.record_letter(journal, command, data, now, refusal=delivery.NO_POSTAL_ADDRESS)
        day = now.astimezone(setup.rules.quiet.zone).date()
        letter_id = stored_letters.letter_id(tenant, command_id)
        heading = letters.heading(letter_id, address, setup.sender, language, day)
        try:
            rendered = render_letter(data, profile, setup.sender, language, setup.templates, letter=heading)
            pdf = letters.to_pdf(rendered.html)
        except (ConfigurationError, UnsafeHeaderText) as exc:
            return delivery.record_letter(journal, command, data, now, refusal="unrenderable", reason=str(exc))
        kept = stored_letters.store(
            self.engine,
            tenant=tenant,
            customer_id=str(command["customer_id"]),
            command_id=command_id,
            kind=stored_letters.REMINDER,
            pdf=pdf.data,
            pages=pdf.pages,
            at=now,
        )
        log.info("notifier.letter_rendered", command_id=command_id, letter_id=kept.letter_id, pages=kept.pages)
        return delivery.record_letter(
            journal, command, data, now, letter=kept, template_version=rendered.template_version
        )

    async def _sending_slot(self, setup: TenantSetup, tenant: str, now: datetime | None = None) -> datetime:
        """The instant a message of ``tenant`` may go: :class:`NotNow` in its quiet hours, else once its rate limit
        gives a slot (waiting for one as long as it takes)."""
        now = self.now() if now is None else now
        if setup.rules.quiet.is_quiet(now):
            opens = setup.rules.quiet.next_open(now)
            raise NotNow(f"quiet hours for tenant {tenant} until {opens.isoformat()}", (opens - now).total_seconds())
        while (wait := take_slot(self.engine, tenant, setup.rules.rate_per_minute, now)) > 0:
            log.info("notifier.rate_limited", tenant=tenant, wait_seconds=round(wait, 2))
            await self.sleep(wait)
            now = self.now()
        return now

    async def _prepare_confirmation(
        self,
        command: Mapping[str, Any],
        confirmation: SendConfirmation,
        progress: delivery.Progress,
        state: CustomerState,
        journal: delivery.Journal,
    ) -> tuple[int, delivery.Outgoing | None, Outcome]:
        """A plan's confirmation: checked against the ledger as it is now, then sent like a reminder's e-mail.

        Before the first round: a plan the ledger no longer shows as agreed (changed since: its new terms have their
        own confirmation) or whose invoices are all settled is skipped with the reason; a customer with no e-mail
        address ends in ``reminder.failed`` (``refusal: no_address``) with a ``send_letter`` task to post it. A pause
        does not hold it back: the customer is told what was agreed with it, whatever the reminders do meanwhile.
        Quiet hours and the tenant's rate limit apply as to reminders.
        """
        command_id, tenant = confirmation.command_id, confirmation.tenant
        data = confirmation_data(command, state)
        facts = as_reminder(data)  # what the reminder's facts and tasks read: reminder_id, level, totals
        if not progress.started:
            reasons = confirmation_still_due(confirmation, state)
            if reasons:
                ticket = delivery.record_skipped(journal, facts, reasons, self.now())
                log.info("notifier.skipped", command_id=command_id, reasons=reasons)
                return ticket, None, Outcome("skipped", command_id, tenant, CONFIRMATION)
        setup = self.setup(tenant)
        profile = state.profile or {}
        language = str(confirmation.language or profile.get("language") or DEFAULT_LANGUAGE)
        recipients = recipients_of(profile)
        now = self.now()
        if not recipients and not progress.started:
            reason = "the customer has no e-mail address"
            note = (
                f"{reason}: print and post the payment plan confirmation "
                f"(`relance preview --tenant {tenant} --customer {confirmation.customer_id} "
                f"--confirmation {command_id}` writes it), and add the address in the ERP"
            )
            refusal = {"refusal": "no_address"}
            ticket, failed = delivery.record_failed(journal, facts, refusal, reason, "", now, note=note)
            return ticket, None, Outcome(failed.status, command_id, tenant, CONFIRMATION, language)
        now = await self._sending_slot(setup, tenant, now)
        try:
            rendered = render_confirmation(data, profile, setup.sender, language, setup.templates)
        except ConfigurationError as exc:
            reason = f"cannot render the payment plan confirmation: {exc}"
            ticket, failed = delivery.record_failed(journal, facts, {}, reason, "", now)
            return ticket, None, Outcome(failed.status, command_id, tenant, CONFIRMATION, language)
        except UnsafeHeaderText as exc:
            ticket, failed = delivery.refuse_before_sending(journal, facts, {"recipients": recipients}, exc, now)
            return ticket, None, Outcome(failed.status, command_id, tenant, CONFIRMATION, language)
        about = Outcome("", command_id, tenant, CONFIRMATION, rendered.language)
        return -1, delivery.Outgoing(facts, rendered, recipients, progress), about


def pause_reason(state: CustomerState, day: date) -> str | None:
    """Why the customer gets no reminder on ``day`` (its local sending day), or None: a pause in force
    (:func:`shared.ledger.tasks.paused_on`: through its ``until``, inclusive, unless resumed)."""
    if not paused_on(state, day):
        return None
    pause = state.pause
    assert pause is not None
    reason = " ".join(str(pause.get("reason") or "").split())
    return f"customer paused until {pause['until']}" + (f" ({reason})" if reason else "")


def confirmation_data(command: Mapping[str, Any], state: CustomerState) -> dict[str, Any]:
    """The command with ``invoices``: the invoices the plan covers as the ledger shows them now (number, dates,
    amount, outstanding), for the letter; an invoice the ledger does not know is left out (the rules skip a plan
    none of whose invoices is known)."""
    invoices = []
    for invoice_id in command["invoice_ids"]:
        invoice = state.invoices.get(str(invoice_id))
        if invoice is None:
            continue
        invoices.append(
            {
                "invoice_id": invoice.invoice_id,
                "number": invoice.number,
                "issue_date": invoice.issue_date.isoformat(),
                "due_date": invoice.due_date.isoformat(),
                "amount": str(invoice.amount),
                "outstanding": str(invoice.outstanding if invoice.is_open else ZERO),
            }
        )
    return {**command, "invoices": invoices}


def as_reminder(data: Mapping[str, Any]) -> dict[str, Any]:
    """A confirmation's command as the reminder's facts and tasks read one (its evidence is the same facts)."""
    total = sum((Decimal(str(i["amount"])) for i in data["instalments"]), ZERO)
    return {
        **data,
        "reminder_id": data["confirmation_id"],
        "level": CONFIRMATION,
        "template": CONFIRMATION,
        "totals": {"outstanding": str(total)},
    }


def confirmation_still_due(confirmation: SendConfirmation, state: CustomerState) -> list[dict[str, str]]:
    """Why the confirmation is not to be sent any more (empty: send it): the plan still stands as agreed, and some
    invoice it covers is still open."""
    plan = state.plans.get(confirmation.plan_id)
    if plan is None:
        return [{"invoice_id": "*", "reason": f"payment plan {confirmation.plan_id} unknown to the ledger"}]
    agreed = [(str(i["due_date"])[:10], Decimal(str(i["amount"]))) for i in plan.get("instalments", [])]
    asked = [(i.due_date.isoformat(), i.amount) for i in confirmation.instalments]
    if agreed != asked or sorted(plan.get("invoice_ids", [])) != sorted(confirmation.invoice_ids):
        reason = f"payment plan {confirmation.plan_id} changed since (its new terms are confirmed apart)"
        return [{"invoice_id": "*", "reason": reason}]
    reasons = [{"invoice_id": i, "reason": why} for i in confirmation.invoice_ids if (why := _settled(state, i))]
    return reasons if len(reasons) == len(confirmation.invoice_ids) else []


def _settled(state: CustomerState, invoice_id: str) -> str | None:
    invoice = state.invoices.get(invoice_id)
    if invoice is None:
        return "unknown to the ledger"
    if invoice.status == "cancelled":
        return "cancelled"
    if not invoice.is_open or invoice.outstanding <= ZERO:
        return "paid"
    return None


def still_due(command: Mapping[str, Any], state: CustomerState) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The command's data reduced to what the ledger still shows as due today, and why the rest was dropped.

    A reminder whose lines carry their level demands each invoice once: a line is dropped as superseded only when a
    later reminder demanded that invoice again (the ladder only climbs, so at a level at least as firm), and the rest
    still goes out, since no later message repeats it. A reminder recorded before lines had a level listed every
    overdue invoice again, so a newer one of the currency supersedes it whole, as it always did.

    The claims a message asks for (``claims``: owed on invoices already settled) follow the fold's claims: one paid
    or waived since is dropped, one partly paid asks for what is left. A message with no line left but claims still
    owed goes out as a claims statement (a claims statement has no lines from the start); with nothing owed any
    more, it is skipped.
    """
    currency = str(command["currency"])
    reasons: list[dict[str, str]] = []
    per_line = any("level" in line for line in command["lines"])
    latest = state.reminded.get(currency)
    superseded = latest is not None and latest.get("reminder_id") not in (None, command["reminder_id"])
    if latest is not None and command["lines"] and not per_line and superseded:
        reason = f"superseded by reminder {latest['reminder_id']} ({latest.get('level')})"
        return {**command, "lines": []}, [{"invoice_id": "*", "reason": reason}]
    lines: list[dict[str, Any]] = []
    for line in command["lines"]:
        invoice_id = str(line["invoice_id"])
        why = _not_due(state, invoice_id) or (_superseded(state, invoice_id, command) if per_line else None)
        if why is None:
            lines.append({**line, "outstanding": str(state.invoices[invoice_id].outstanding)})
        else:
            reasons.append({"invoice_id": invoice_id, "reason": why})
    # The invoices listed apart (not demanded) follow the ledger too, silently: they are not what the message is for.
    also = [
        {**line, "outstanding": str(state.invoices[str(line["invoice_id"])].outstanding)}
        for line in command.get("also") or []
        if _not_due(state, str(line["invoice_id"])) is None
    ]
    totals = {
        **(
            command.get("totals") or {}
        ),  # what the lines do not make (the claims on invoices already settled) stays as decided
        "outstanding": str(sum((Decimal(line["outstanding"]) for line in lines), ZERO)),
        "interest": str(sum((Decimal(str(line.get("interest", "0"))) for line in lines), ZERO)),
        # a fee in another currency (fee_currency) is never added to the message's own
        "fees": str(sum((Decimal(str(line.get("fee", "0"))) for line in lines if not line.get("fee_currency")), ZERO)),
    }
    claims = []
    for claim in command.get("claims") or []:
        known = state.claims.get(str(claim["invoice_id"]), str(claim["kind"]))
        if known is None or known.owed <= ZERO:
            reasons.append({"invoice_id": str(claim["invoice_id"]), "reason": f"{claim['kind']} paid or waived"})
        else:
            claims.append({**claim, "amount": str(min(known.owed, Decimal(str(claim["amount"]))))})
    if "claims" in command:
        totals["claims"] = str(sum((Decimal(c["amount"]) for c in claims if c["currency"] == currency), ZERO))
    reduced = {**command, "lines": lines, "invoice_ids": [line["invoice_id"] for line in lines], "totals": totals}
    if "also" in command:
        reduced["also"] = also
    if "claims" in command:
        reduced["claims"] = claims
        if not lines and claims:  # the invoices demanded were paid since: what is left is a claims statement
            reduced["template"] = CLAIMS_STATEMENT
    return reduced, reasons


def _superseded(state: CustomerState, invoice_id: str, command: Mapping[str, Any]) -> str | None:
    """The later reminder that demanded the invoice again after this one, if any."""
    record = state.escalations.get(invoice_id)
    if record is None:
        return None
    ids = [notice["reminder_id"] for notice in record.notices]
    if command["reminder_id"] not in ids:
        return None
    later = record.notices[ids.index(command["reminder_id"]) + 1 :]
    return None if not later else f"superseded by reminder {later[-1]['reminder_id']} ({later[-1]['level']})"


def _not_due(state: CustomerState, invoice_id: str) -> str | None:
    """Why the ledger no longer shows the invoice as due today, or None."""
    invoice = state.invoices.get(invoice_id)
    if invoice is None:
        return "unknown to the ledger"
    if invoice.status == "cancelled":
        return "cancelled"
    if invoice.status != "open" or invoice.outstanding <= ZERO:
        return "paid"
    if invoice_id in state.disputes:
        return "disputed"
    return None


def recipients_of(profile: Mapping[str, Any]) -> list[str]:
    emails = profile.get("emails") or []
    return [str(e) for e in emails] if isinstance(emails, list) else [str(emails)]
