"""``relance db``, ``health``, ``ledger show`` and ``outbox``: the ledger database, its schema and its outbox.

``ledger show --as-of`` reads the customer's account at an instant in the readings of :mod:`shared.ledger.asof`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from services.cli.options import Commands, add_database_url, json_default, runs
from shared.config import Settings
from shared.runtime import migrated_engine, open_ledger

if TYPE_CHECKING:
    from shared.ledger.asof import Reading
    from shared.ledger.records import RecordedEvent


def add_db(commands: Commands) -> None:
    """``relance db upgrade|current`` and ``relance health`` (the schema a container can be checked against)."""
    db = commands.add_parser("db", help="database schema (Alembic migrations)")
    db_commands = db.add_subparsers(title="db commands", metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="create or migrate the ledger schema to the latest version")
    add_database_url(upgrade)
    upgrade.add_argument(
        "--runtime-role",
        help="PostgreSQL role for the workers (override RELANCE_RUNTIME_ROLE): created if missing, with "
        "RELANCE_RUNTIME_ROLE_PASSWORD, and granted exactly what the workers need",
    )
    runs(upgrade, db_upgrade)
    current = db_commands.add_parser("current", help="print the schema revision of the database")
    runs(current, db_current, database_url=True)
    health = commands.add_parser(
        "health",
        help="exit 0 if the settings are valid and the ledger database accepts us at the latest schema (HEALTHCHECK)",
    )
    runs(health, health_check, database_url=True)


def add_ledger(commands: Commands) -> None:
    ledger = commands.add_parser("ledger", help="inspect customer ledgers")
    ledger_commands = ledger.add_subparsers(title="ledger commands", metavar="ACTION")
    show = ledger_commands.add_parser(
        "show",
        help="print a customer's event stream and projected state, or with --as-of its account at an instant",
        description="Without --as-of: the customer's stream and its state now. With --as-of: the account as it "
        "stood at that instant (open invoices, days late, levels, claims, promises, disputes, block, pause, open "
        "tasks) in two readings: 'known', what relance knew then (the events recorded up to the instant), and "
        "'occurred', the business view then with everything known today (the events that occurred up to it, "
        "including those recorded later). Without --reading, both, then the events that make them differ.",
    )
    show.add_argument("--tenant", required=True)
    show.add_argument("--customer", required=True)
    show.add_argument(
        "--as-of",
        type=as_of_instant,
        metavar="INSTANT",
        help="an ISO 8601 instant with its offset (2026-09-30T18:00:00Z) or a date, meaning the end of that day "
        "in UTC (2026-09-30 is 2026-09-30T23:59:59.999999Z)",
    )
    show.add_argument(
        "--reading",
        choices=("known", "occurred"),
        help="with --as-of: 'known' = what relance knew at the instant (events recorded up to it); 'occurred' = "
        "the business view at the instant with everything known today (events that occurred up to it); "
        "default: both, and their differences",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    runs(show, ledger_show, database_url=True)


def add_outbox(commands: Commands) -> None:
    outbox = commands.add_parser("outbox", help="commands waiting to be delivered, and the dead-lettered ones")
    outbox_commands = outbox.add_subparsers(title="outbox commands", metavar="ACTION")
    listing = outbox_commands.add_parser("list", help="pending commands (or, with --dead, dead-lettered ones)")
    listing.add_argument("--dead", action="store_true", help="the commands an adapter gave up on")
    listing.add_argument("--tenant", help="only this tenant's commands")
    runs(listing, outbox_list, database_url=True)
    retry = outbox_commands.add_parser(
        "retry", help="make a dead-lettered command pending again (refused if a later one of its kind went out)"
    )
    retry.add_argument("--command-id", required=True)
    retry.add_argument("--tenant", help="needed only if several tenants have this command id")
    runs(retry, outbox_retry, database_url=True)


def db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.migrate import current, upgrade

    url = settings.require_database_url()
    upgrade(url)
    print(f"ledger schema at revision {current(url)}")
    role = args.runtime_role or settings.runtime_role
    if role:
        _grant_runtime_role(settings, url, role)
    return 0


def _grant_runtime_role(settings: Settings, url: str, role: str) -> None:
    from shared.ledger.roles import RUNTIME_GRANTS, grant_runtime

    if url.startswith("sqlite"):
        print(f"relance: SQLite has no roles, so no runtime role {role} was set up", file=sys.stderr)
        return
    password = settings.runtime_role_password.get_secret_value() if settings.runtime_role_password else None
    unknown = grant_runtime(url, role, password)
    print(f"runtime role {role}: read and append on the log, {len(RUNTIME_GRANTS)} tables granted")
    if unknown:
        print(
            f"relance: tables without runtime grants (readable only): {', '.join(unknown)}; "
            "add them to RUNTIME_GRANTS in shared/ledger/roles.py",
            file=sys.stderr,
        )


def db_current(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.migrate import current

    print(current(settings.require_database_url()) or "(empty database: run `relance db upgrade`)")
    return 0


def health_check(args: argparse.Namespace, settings: Settings) -> int:
    """What a container's HEALTHCHECK can honestly tell: configuration, credentials, schema. Not a worker's progress."""
    migrated_engine(settings).dispose()
    print("healthy: settings valid, the ledger database accepts this role and is at the latest schema revision")
    return 0


def as_of_instant(value: str) -> datetime:
    from shared.ledger.asof import parse_instant

    try:
        return parse_instant(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def ledger_show(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.show import render_stream, stream_document

    if args.reading is not None and args.as_of is None:
        print("relance: --reading needs --as-of (the instant to read the account at)", file=sys.stderr)
        return 2
    with open_ledger(settings, check_schema=False) as ledger:
        stream = ledger.read_stream(args.tenant, args.customer)
        if not stream:
            print(f"relance: no events for customer {args.customer!r} of tenant {args.tenant!r}", file=sys.stderr)
            return 1
        if args.as_of is not None:
            return _show_as_of(args, stream)
        state = ledger.state(args.tenant, args.customer)
    if args.json:
        print(json.dumps(stream_document(stream, state), indent=2, default=json_default, ensure_ascii=False))
    else:
        print(render_stream(stream, state))
    return 0


def _show_as_of(args: argparse.Namespace, stream: list[RecordedEvent]) -> int:
    from shared.ledger.asof import account_as_of, first_instant
    from shared.ledger.show import as_of_document, render_as_of

    readings: tuple[Reading, ...] = (args.reading,) if args.reading else ("known", "occurred")
    account = account_as_of(stream, args.as_of, readings, tenant=args.tenant, customer_id=args.customer)
    if account.empty:
        first = first_instant(stream) if args.reading != "known" else min(e.recorded_at for e in stream)
        where = "recorded" if args.reading == "known" else "known"
        print(
            f"relance: nothing {where} for customer {args.customer!r} of tenant {args.tenant!r} as of "
            f"{args.as_of.isoformat()}: its first event is of {first.isoformat() if first else '-'}; "
            "give a later instant",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(as_of_document(account), indent=2, default=json_default, ensure_ascii=False))
    else:
        print(render_as_of(account))
    return 0


def outbox_list(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.outbox import undelivered

    engine = migrated_engine(settings)
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


def outbox_retry(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.outbox import RearmRefused, rearm

    engine = migrated_engine(settings)
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
