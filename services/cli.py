"""The ``relance`` command: one entry point for the workers, the ledger tools and the demo.

Each sub-command builds what it needs from settings when it runs (nothing connects at import time) and turns
expected failures (bad configuration, unreachable server) into one clear line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.config import ConfigurationError, Settings, load_settings
from shared.logging import configure_logging

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from shared.ledger.store import Ledger

Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        overrides = {"database_url": args.database_url} if getattr(args, "database_url", None) else {}
        settings = load_settings(**overrides)
    except ConfigurationError as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    try:
        handler: Handler = args.handler
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except ConfigurationError as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return 78
    except LookupError as exc:
        # Data the rules need and nobody supplied, such as a semester's reference rate: say which, no traceback.
        from services.escalation.interest import MissingReferenceRate

        if not isinstance(exc, MissingReferenceRate):
            raise
        print(f"relance: {exc}", file=sys.stderr)
        return 78


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relance",
        description="Accounts-receivable collections engine: event-sourced customer ledgers fed by your ERP.",
        epilog="Settings come from RELANCE_* environment variables; see the README for the full table.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db = commands.add_parser("db", help="database schema (Alembic migrations)")
    db_commands = db.add_subparsers(title="db commands", metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="create or migrate the ledger schema to the latest version")
    upgrade.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    upgrade.set_defaults(handler=_db_upgrade)
    current = db_commands.add_parser("current", help="print the schema revision of the database")
    current.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    current.set_defaults(handler=_db_current)

    ledger = commands.add_parser("ledger", help="inspect customer ledgers")
    ledger_commands = ledger.add_subparsers(title="ledger commands", metavar="ACTION")
    show = ledger_commands.add_parser("show", help="print a customer's event stream and projected state")
    show.add_argument("--tenant", required=True)
    show.add_argument("--customer", required=True)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    show.set_defaults(handler=_ledger_show)

    verify = commands.add_parser("verify", help="recompute every hash chain; exit 1 if the log was altered")
    verify.add_argument("--tenant")
    verify.add_argument("--customer")
    verify.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    verify.set_defaults(handler=_verify)

    worker = commands.add_parser("worker", help="run a worker until stopped (SIGTERM or Ctrl-C)")
    workers = worker.add_subparsers(title="workers", metavar="KIND")
    ingest = workers.add_parser("ingest", help="consume ERP events from RabbitMQ into the ledger")
    ingest.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    ingest.set_defaults(handler=_worker_ingest)
    escalation = workers.add_parser(
        "escalation", help="fire due timers and evaluate customers whose ledger changed (any number of workers)"
    )
    escalation.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    escalation.set_defaults(handler=_worker_escalation)
    webhook = workers.add_parser(
        "webhook", help="POST the ERP's commands to RELANCE_WEBHOOK_URL, signed (RELANCE_ERP_TRANSPORT=webhook)"
    )
    webhook.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    webhook.set_defaults(handler=_worker_webhook)
    relay = workers.add_parser(
        "relay", help="publish outbox commands to the commands exchange with publisher confirms (any number)"
    )
    relay.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    relay.set_defaults(handler=_worker_relay)
    notifier = workers.add_parser(
        "notifier", help="send the reminders of notifier.send_reminder commands over SMTP, with evidence (any number)"
    )
    notifier.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    notifier.set_defaults(handler=_worker_notifier)

    outbox = commands.add_parser("outbox", help="commands waiting to be delivered, and the dead-lettered ones")
    outbox_commands = outbox.add_subparsers(title="outbox commands", metavar="ACTION")
    outbox_list = outbox_commands.add_parser("list", help="pending commands (or, with --dead, dead-lettered ones)")
    outbox_list.add_argument("--dead", action="store_true", help="the commands an adapter gave up on")
    outbox_list.add_argument("--tenant", help="only this tenant's commands")
    outbox_list.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    outbox_list.set_defaults(handler=_outbox_list)
    outbox_retry = outbox_commands.add_parser(
        "retry", help="make a dead-lettered command pending again (refused if a later one of its kind went out)"
    )
    outbox_retry.add_argument("--command-id", required=True)
    outbox_retry.add_argument("--tenant", help="needed only if several tenants have this command id")
    outbox_retry.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    outbox_retry.set_defaults(handler=_outbox_retry)

    clock = commands.add_parser("clock", help="drive escalation's clock by hand (backfills, tests)")
    clock_commands = clock.add_subparsers(title="clock commands", metavar="ACTION")
    tick = clock_commands.add_parser(
        "tick", help="evaluate every customer at an instant, record the decisions, set the timers, print a summary"
    )
    tick.add_argument("--at", required=True, type=_instant, help="ISO 8601 instant, e.g. 2026-12-01T08:00:00Z")
    tick.add_argument("--tenant", help="only this tenant's customers")
    tick.add_argument("--due-only", action="store_true", help="only the customers whose timer is due at that instant")
    tick.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    tick.set_defaults(handler=_clock_tick)

    agenda = commands.add_parser(
        "agenda", help="a collector's day: tasks, calls, promises due, blocked accounts; largest amount at risk first"
    )
    agenda.add_argument("--tenant", required=True)
    agenda.add_argument("--date", required=True, type=_day, help="the day, e.g. 2026-12-01")
    agenda.add_argument("--json", action="store_true", help="machine-readable output")
    agenda.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    agenda.set_defaults(handler=_agenda)

    preview = commands.add_parser(
        "preview", help="render the reminder a customer would receive at a level and write its exact parts"
    )
    preview.add_argument("--tenant", required=True)
    preview.add_argument("--customer", required=True)
    preview.add_argument("--level", required=True, help="a written level of the customer's policy, e.g. reminder_1")
    preview.add_argument("--lang", help="language (fr, en); default: the customer's, else the policy's")
    preview.add_argument("--date", type=_day, help="the day to compute days late at (default: today, UTC)")
    preview.add_argument("--out", type=Path, default=Path("preview"), help="folder for the files (default ./preview)")
    preview.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    preview.set_defaults(handler=_preview)

    evidence = commands.add_parser("evidence", help="sent reminders as an auditor checks them: exact bytes and hashes")
    evidence_commands = evidence.add_subparsers(title="evidence commands", metavar="ACTION")
    evidence_show = evidence_commands.add_parser(
        "show",
        help="a sent reminder's stored bytes, hashed again and compared with the log; exit 1 on a mismatch, "
        "2 if the Message-ID is unknown",
    )
    evidence_show.add_argument("--message-id", required=True, help="with or without the angle brackets")
    evidence_show.add_argument("--tenant", help="the tenant, when the Message-ID alone is ambiguous")
    evidence_show.add_argument("--output", type=Path, help="write the exact stored bytes to this file (.eml)")
    evidence_show.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    evidence_show.set_defaults(handler=_evidence_show)
    evidence_list = evidence_commands.add_parser("list", help="a customer's evidence events, one line each")
    evidence_list.add_argument("--tenant", required=True)
    evidence_list.add_argument("--customer", required=True)
    evidence_list.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    evidence_list.set_defaults(handler=_evidence_list)

    publish = commands.add_parser(
        "publish", help="publish ERP events from a JSON Lines file to RabbitMQ, with publisher confirms"
    )
    publish.add_argument("file", type=Path, help="one v1 message per line ('-' for standard input)")
    publish.set_defaults(handler=_publish)

    demo = commands.add_parser(
        "demo", help="run relance end to end on SQLite with an in-process broker and a generated sample"
    )
    demo.add_argument("--customers", type=int, default=300, help="how many customers (default 300)")
    demo.add_argument("--months", type=int, default=4, help="months of activity (default 4)")
    demo.add_argument("--seed", type=int, default=7, help="random seed, for a repeatable sample (default 7)")
    demo.add_argument(
        "--database-url", help="where to keep the demo ledger (default: a fresh SQLite file under ./demo-output)"
    )
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for the demo's files")
    demo.set_defaults(handler=_demo)

    contract = commands.add_parser("contract", help="the ERP message contract")
    contract_commands = contract.add_subparsers(title="contract commands", metavar="ACTION")
    export = contract_commands.add_parser("export", help="write the JSON Schema files and the AsyncAPI document")
    export.add_argument("--out", type=Path, default=Path("shared/contracts/schema"))
    export.set_defaults(handler=_contract_export)
    return parser


# ---------------------------------------------------------------------------------------------------- handlers
def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.migrate import current, upgrade

    upgrade(settings.database_url)
    print(f"ledger schema at revision {current(settings.database_url)}")
    return 0


def _db_current(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.migrate import current

    print(current(settings.database_url) or "(empty database: run `relance db upgrade`)")
    return 0


def _ledger_show(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.db import make_engine
    from shared.ledger.show import render_stream, stream_document
    from shared.ledger.store import Ledger

    ledger = Ledger(make_engine(settings.database_url))
    stream = ledger.read_stream(args.tenant, args.customer)
    if not stream:
        print(f"relance: no events for customer {args.customer!r} of tenant {args.tenant!r}", file=sys.stderr)
        return 1
    state = ledger.state(args.tenant, args.customer)
    if args.json:
        print(json.dumps(stream_document(stream, state), indent=2, default=_json_default, ensure_ascii=False))
    else:
        print(render_stream(stream, state))
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.db import make_engine
    from shared.ledger.store import Ledger

    report = Ledger(make_engine(settings.database_url)).verify(args.tenant, args.customer)
    for problem in report.problems:
        print(f"ALTERED  {problem}")
    verdict = "intact" if report.ok else f"{len(report.problems)} problem(s) found"
    print(f"{report.streams} stream(s), {report.events} event(s) checked: {verdict}")
    return 0 if report.ok else 1


def _worker_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from services.ingest.worker import run

    return run(settings)


def _worker_escalation(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.worker import run

    return run(settings)


def _worker_notifier(args: argparse.Namespace, settings: Settings) -> int:
    from services.notifier.worker import run

    return run(settings)


def _worker_relay(args: argparse.Namespace, settings: Settings) -> int:
    from shared.relay import run

    return run(settings)


def _worker_webhook(args: argparse.Namespace, settings: Settings) -> int:
    from shared.webhook import run

    return run(settings)


def _outbox_list(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.outbox import undelivered

    engine = _migrated_engine(settings)
    try:
        with engine.connect() as conn:
            rows = undelivered(conn, dead=args.dead, tenant=args.tenant)
    finally:
        engine.dispose()
    what = "dead-lettered" if args.dead else "pending"
    print(f"{len(rows)} {what} command(s)" + (" (the oldest 1000)" if len(rows) == 1000 else ""))
    for row in rows:
        when = row.dead_at if args.dead else row.next_attempt_at
        label = "dead since" if args.dead else "next try"
        created = f"{row.created_at:%Y-%m-%d %H:%M}"
        print(
            f"  {row.command_id}  {row.kind:<22} {row.tenant}/{row.customer_id}  created {created}"
            f"  attempts {row.attempts}" + (f"  {label} {when:%Y-%m-%d %H:%M:%S}" if when else "")
        )
        if row.last_error:
            print(f"      last error: {row.last_error}")
    return 0


def _outbox_retry(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.outbox import RearmRefused, rearm

    engine = _migrated_engine(settings)
    try:
        with engine.begin() as conn:
            row = rearm(conn, args.command_id, args.tenant)
    except RearmRefused as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{row.command_id} ({row.kind}, {row.tenant}/{row.customer_id}) is pending again, attempts reset")
    return 0


def _migrated_engine(settings: Settings) -> Engine:
    """An engine on the ledger database, refused (exit 78) unless its schema is the latest."""
    from shared.ledger.db import make_engine
    from shared.runtime import schema_problem

    engine = make_engine(settings.database_url)
    problem = schema_problem(engine, settings.database_url)
    if problem:
        engine.dispose()
        raise ConfigurationError(problem)
    return engine


def _clock_tick(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.worker import policy_books, real_rules, tick

    with _ledger(settings) as ledger:
        summary = tick(
            ledger, policy_books(settings), real_rules(settings), args.at, tenant=args.tenant, due_only=args.due_only
        )
    print(f"clock tick at {args.at.isoformat()}: {summary.customers} customer(s) evaluated")
    for event_type, count in sorted(summary.decisions.items()):
        print(f"  {event_type:<28} {count}")
    total = sum(summary.decisions.values())
    print(f"{total} decision(s) recorded, {summary.duplicates} already recorded, {summary.timers_set} timer(s) set")
    return 0


def _agenda(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.agenda import build_agenda, render_agenda

    with _ledger(settings) as ledger:
        keys = ledger.streams(args.tenant)
        if not keys:
            print(f"relance: tenant {args.tenant!r} has no customers in this ledger", file=sys.stderr)
            return 1
        items = build_agenda((ledger.state(tenant, customer) for tenant, customer in keys), args.date)
    if args.json:
        document = {"tenant": args.tenant, "date": args.date.isoformat(), "items": [i.to_json() for i in items]}
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(render_agenda(items, args.tenant, args.date))
    return 0


def _preview(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.policy import PolicyLibrary
    from services.notifier.mime import MimeError
    from services.notifier.preview import PreviewError, reminder_data, write_parts
    from services.notifier.render import RenderSettings, load_templates, render
    from services.notifier.sender import load_sender

    render_settings = RenderSettings()
    templates = load_templates(render_settings.template_dir, args.tenant)
    sender = load_sender(render_settings.sender_file, args.tenant)
    with _ledger(settings) as ledger:
        if not ledger.read_stream(args.tenant, args.customer):
            print(f"relance: no customer {args.customer!r} in tenant {args.tenant!r}", file=sys.stderr)
            return 1
        state = ledger.state(args.tenant, args.customer)
    policy = PolicyLibrary.load(settings.policy_dir).for_tenant(args.tenant).for_customer(state.profile)
    try:
        reminders = reminder_data(state, policy, args.level, args.date or datetime.now(UTC).date())
    except PreviewError as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return 1
    for data in reminders:
        try:
            rendered = render(data, state.profile, sender, args.lang or data["language"], templates)
            folder = args.out / f"{args.customer}-{args.level}-{rendered.language}-{data['currency']}"
            write_parts(rendered, sender, state.profile, folder)
        except MimeError as exc:  # the ledger holds text that must not reach an e-mail header
            print(f"relance: cannot preview this reminder: {exc}", file=sys.stderr)
            return 1
        print(f"{folder}/  subject: {rendered.subject}")
        print(f"  template {rendered.template_name} ({rendered.language}), version {rendered.template_version[:12]}")
    return 0


def _evidence_show(args: argparse.Namespace, settings: Settings) -> int:
    from services.notifier.audit import UnknownMessage, audit, render_audit

    with _ledger(settings) as ledger:
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


def _evidence_list(args: argparse.Namespace, settings: Settings) -> int:
    from services.notifier.audit import evidence_events, render_events

    with _ledger(settings) as ledger:
        stream = ledger.read_stream(args.tenant, args.customer)
    if not stream:
        print(f"relance: no customer {args.customer!r} in tenant {args.tenant!r}", file=sys.stderr)
        return 2
    print(render_events(evidence_events(stream), args.tenant, args.customer))
    return 0


@contextmanager
def _ledger(settings: Settings) -> Iterator[Ledger]:
    """The ledger of the settings' database, once its schema is checked; the engine is closed afterwards."""
    from shared.ledger.store import Ledger

    engine = _migrated_engine(settings)
    try:
        yield Ledger(engine)
    finally:
        engine.dispose()


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date: {value!r} (e.g. 2026-12-01)") from None


def _instant(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {value!r} (e.g. 2026-12-01T08:00:00Z)") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no time zone: add Z or an offset such as +01:00")
    return moment.astimezone(UTC)


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from services.ingest.publish import publish_file

    return publish_file(settings, args.file)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from services.demo import run_demo

    return run_demo(
        customers=args.customers,
        months=args.months,
        seed=args.seed,
        out=args.out,
        database_url=args.database_url,
    )


def _contract_export(args: argparse.Namespace, settings: Settings) -> int:
    from shared.contracts.export import write_contract

    for path in write_contract(args.out):
        print(path)
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


if __name__ == "__main__":
    raise SystemExit(main())
