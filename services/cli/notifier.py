"""``relance preview`` and ``relance evidence``: a reminder as it would be sent, and the proof of those that were."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli.options import Commands, day, runs
from shared.config import Settings
from shared.runtime import open_ledger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from services.escalation.model import Policy
    from services.notifier.preview import Ladder
    from services.notifier.render import TemplateSet
    from services.notifier.sender import Sender
    from shared.ledger.records import RecordedEvent
    from shared.ledger.state import CustomerState


def add_preview(commands: Commands) -> None:
    preview = commands.add_parser(
        "preview", help="render the reminder a customer would receive at a level and write its exact parts"
    )
    preview.add_argument("--tenant", required=True)
    preview.add_argument("--customer", required=True)
    which = preview.add_mutually_exclusive_group(required=True)
    which.add_argument("--level", help="a written level of the customer's policy, e.g. reminder_1: as it would be now")
    which.add_argument(
        "--reminder",
        help="a reminder the engine decided (its reminder_id, as a send_letter task names it): the letter to print "
        "and post, as recorded, less what was paid or disputed since",
    )
    which.add_argument(
        "--confirmation",
        help="a payment plan confirmation (its command id or confirmation id, as its send_letter task names it): "
        "the letter confirming the plan, with its invoices as the ledger shows them now",
    )
    preview.add_argument("--lang", help="language (fr, en); default: the customer's, else the policy's")
    preview.add_argument("--date", type=day, help="the day to compute days late at (default: today, UTC)")
    preview.add_argument("--out", type=Path, default=Path("preview"), help="folder for the files (default ./preview)")
    runs(preview, preview_reminder, database_url=True)


def add_evidence(commands: Commands) -> None:
    evidence = commands.add_parser("evidence", help="sent reminders as an auditor checks them: exact bytes and hashes")
    evidence_commands = evidence.add_subparsers(title="evidence commands", metavar="ACTION")
    show = evidence_commands.add_parser(
        "show",
        help="a sent reminder's stored bytes, hashed again and compared with the log; exit 1 on a mismatch, "
        "2 if the Message-ID is unknown",
    )
    show.add_argument("--message-id", required=True, help="with or without the angle brackets")
    show.add_argument("--tenant", help="the tenant, when the Message-ID alone is ambiguous")
    show.add_argument("--output", type=Path, help="write the exact stored bytes to this file (.eml)")
    runs(show, evidence_show, database_url=True)
    listing = evidence_commands.add_parser("list", help="a customer's evidence events, one line each")
    listing.add_argument("--tenant", required=True)
    listing.add_argument("--customer", required=True)
    runs(listing, evidence_list, database_url=True)


def preview_reminder(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.policy import PolicyLibrary
    from services.notifier.delivery import MailSettings
    from services.notifier.mime import MimeError
    from services.notifier.preview import PreviewError, compose, recorded_reminder, reminder_data, write_parts
    from services.notifier.render import RenderSettings, load_templates
    from services.notifier.sender import load_sender

    render_settings = RenderSettings()
    templates = load_templates(render_settings.template_dir, args.tenant)
    sender = load_sender(render_settings.sender_file, args.tenant)
    with open_ledger(settings) as ledger:
        if not ledger.read_stream(args.tenant, args.customer):
            print(f"relance: no customer {args.customer!r} in tenant {args.tenant!r}", file=sys.stderr)
            return 1
        state = ledger.state(args.tenant, args.customer)
        stream = ledger.read_stream(args.tenant, args.customer) if args.reminder or args.confirmation else []
    if args.confirmation:
        return _preview_confirmation(args, settings, stream, state, templates, sender)
    if args.reminder:
        try:
            reminders = [recorded_reminder(stream, state, args.reminder)]
        except PreviewError as exc:
            print(f"relance: {exc}", file=sys.stderr)
            return 1
    else:
        policy = PolicyLibrary.load(settings.policy_dir).for_tenant(args.tenant).for_customer(state.profile)
        try:
            reminders = reminder_data(state, preview_ladder(policy), args.level, args.date or datetime.now(UTC).date())
        except PreviewError as exc:
            print(f"relance: {exc}", file=sys.stderr)
            return 1
    mail = MailSettings.from_settings(settings)
    for data in reminders:
        try:
            preview = compose(data, state.profile, sender, args.lang or data["language"], templates, mail)
            rendered = preview.rendered
            name = args.reminder or args.level
            folder = args.out / f"{args.customer}-{name}-{rendered.language}-{data['currency']}"
            write_parts(preview, folder)
        except MimeError as exc:  # the ledger holds text that must not reach an e-mail header
            print(f"relance: cannot preview this reminder: {exc}", file=sys.stderr)
            return 1
        print(f"{folder}/  subject: {rendered.subject}")
        print(f"  template {rendered.template_name} ({rendered.language}), version {rendered.template_version[:12]}")
    return 0


def _preview_confirmation(
    args: argparse.Namespace,
    settings: Settings,
    stream: Sequence[RecordedEvent],
    state: CustomerState,
    templates: TemplateSet,
    sender: Sender,
) -> int:
    from services.notifier.delivery import MailSettings
    from services.notifier.mime import MimeError
    from services.notifier.preview import PreviewError, compose_confirmation, recorded_confirmation, write_parts

    try:
        data = recorded_confirmation(stream, state, args.confirmation)
        language = args.lang or data.get("language")
        mail = MailSettings.from_settings(settings)
        preview = compose_confirmation(data, state.profile, sender, language, templates, mail)
    except PreviewError as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return 1
    except MimeError as exc:
        print(f"relance: cannot preview this confirmation: {exc}", file=sys.stderr)
        return 1
    rendered = preview.rendered
    folder = args.out / f"{args.customer}-{rendered.template_name}-{rendered.language}-{data['currency']}"
    write_parts(preview, folder)
    print(f"{folder}/  subject: {rendered.subject}")
    print(f"  template {rendered.template_name} ({rendered.language}), version {rendered.template_version[:12]}")
    return 0


def preview_ladder(policy: Policy) -> Ladder:
    """The written levels of an escalation policy, as the notifier's preview reads them."""
    from services.notifier.preview import Ladder, WrittenLevel

    written = tuple(
        WrittenLevel(level.key, level.channel, level.template, level.offset_days, tuple(sorted(level.copy_channels)))
        for level in policy.levels
        if level.template and level.channel in ("email", "letter")
    )
    return Ladder(policy.name, policy.version, policy.language, written)


def evidence_show(args: argparse.Namespace, settings: Settings) -> int:
    from services.notifier.audit import UnknownMessage, audit, render_audit

    with open_ledger(settings) as ledger:
        try:
            report = audit(ledger, args.message_id, args.tenant)
        except UnknownMessage as exc:
            print(f"relance: {exc}", file=sys.stderr)
            return 2
    print(render_audit(report))
    if args.output is not None:
        args.output.write_bytes(report.stored.mime)
        print(f"wrote the {len(report.stored.mime)} stored bytes to {args.output}")
    return 0 if report.verified else 1


def evidence_list(args: argparse.Namespace, settings: Settings) -> int:
    from services.notifier.audit import evidence_events, render_events

    with open_ledger(settings) as ledger:
        stream = ledger.read_stream(args.tenant, args.customer)
    if not stream:
        print(f"relance: no customer {args.customer!r} in tenant {args.tenant!r}", file=sys.stderr)
        return 2
    print(render_events(evidence_events(stream), args.tenant, args.customer))
    return 0
