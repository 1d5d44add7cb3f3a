"""The ``relance`` command: one entry point for the workers, the ledger tools and the demo.

Each sub-command builds what it needs from settings when it runs (nothing connects at import time) and turns
expected failures (bad configuration, unreachable server) into one clear line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError, OperationalError

from shared.config import ConfigurationError, Settings, hide_password, load_settings, with_application_name
from shared.ledger.store import LedgerUnavailable
from shared.logging import configure_logging

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from services.escalation.model import Policy
    from services.notifier.preview import Ladder
    from shared.ledger.store import Ledger
    from shared.ledger.verify import CheckpointSources

Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    handler: Handler = args.handler
    try:
        overrides = {"database_url": args.database_url} if getattr(args, "database_url", None) else {}
        settings = load_settings(**overrides)
        if hasattr(args, "database_url") and handler is not _demo:  # the demo alone makes its own database
            settings = settings.model_copy(
                update={"database_url": with_application_name(settings.require_database_url(), _process(handler))}
            )
    except ConfigurationError as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    try:
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except ConfigurationError as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return 78
    except LedgerUnavailable as exc:
        # The database went away (or refused the work for a reason of its own) in the middle of the command: what
        # was committed stays, each unit of work being its own transaction; say so in one line, not a traceback.
        print(
            f"relance: the database could not finish the command: {exc}; what was already committed stays, run the "
            "command again once the database answers",
            file=sys.stderr,
        )
        return 69  # EX_UNAVAILABLE
    except DBAPIError as exc:
        # A database that refuses us (role, password, database name) is configuration; one that does not answer
        # is down. Either way one line, not a traceback; anything else is relance's own failure and shows as such.
        code = _database_failed(exc, settings)
        if code is None:
            raise
        return code
    except ValueError as exc:
        # A checkpoint or key file relance was pointed at that it cannot use: say which and why.
        from shared.ledger.checkpoints import CheckpointError

        if not isinstance(exc, CheckpointError):
            raise
        print(f"relance: {exc}", file=sys.stderr)
        return 78
    except LookupError as exc:
        # Data the rules need and nobody supplied, such as a semester's reference rate: say which, no traceback.
        from services.escalation.interest import MissingReferenceRate

        if not isinstance(exc, MissingReferenceRate):
            raise
        print(f"relance: {exc}", file=sys.stderr)
        return 78


def _process(handler: Handler) -> str:
    """The application_name PostgreSQL shows for this process: relance-<worker> or relance-cli-<command>."""
    name = handler.__name__.strip("_").replace("_", "-")
    return "relance-" + name.removeprefix("worker-") if name.startswith("worker-") else "relance-cli-" + name


def _database_failed(exc: DBAPIError, settings: Settings) -> int | None:
    """Say in one line why the database could not be used, and return the exit status; None if not that."""
    from shared.ledger.db import connection_refusal
    from shared.runtime import database_refused

    url = settings.database_url or "(unset)"
    refused = connection_refusal(exc)
    if refused:
        print(f"relance: {database_refused(url, refused)}", file=sys.stderr)
        return 78
    if not isinstance(exc, OperationalError):
        return None
    reason = str(exc.orig or exc).strip().splitlines()[0]
    print(f"relance: cannot use the database {hide_password(url)}: {reason}", file=sys.stderr)
    return 69  # EX_UNAVAILABLE: try again once the server answers


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
    upgrade.add_argument(
        "--runtime-role",
        help="PostgreSQL role for the workers (override RELANCE_RUNTIME_ROLE): created if missing, with "
        "RELANCE_RUNTIME_ROLE_PASSWORD, and granted exactly what the workers need",
    )
    upgrade.set_defaults(handler=_db_upgrade)
    current = db_commands.add_parser("current", help="print the schema revision of the database")
    current.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    current.set_defaults(handler=_db_current)

    health = commands.add_parser(
        "health",
        help="exit 0 if the settings are valid and the ledger database accepts us at the latest schema (HEALTHCHECK)",
    )
    health.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    health.set_defaults(handler=_health)

    ledger = commands.add_parser("ledger", help="inspect customer ledgers")
    ledger_commands = ledger.add_subparsers(title="ledger commands", metavar="ACTION")
    show = ledger_commands.add_parser("show", help="print a customer's event stream and projected state")
    show.add_argument("--tenant", required=True)
    show.add_argument("--customer", required=True)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    show.set_defaults(handler=_ledger_show)

    verify = commands.add_parser(
        "verify",
        help="check every hash chain, rebuild every projection and check the signed checkpoints; exit 1 on any "
        "difference",
    )
    verify.add_argument("--tenant", help="only this tenant's streams")
    verify.add_argument("--customer", help="only this customer's stream (with --tenant)")
    verify.add_argument(
        "--checkpoints",
        type=Path,
        metavar="FILE|DIR",
        help="exported checkpoints to check the log and the database's checkpoints against "
        "(default: RELANCE_CHECKPOINT_DIR)",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="public key of the checkpoint signatures (default: RELANCE_CHECKPOINT_PUBLIC_KEY_FILE)",
    )
    verify.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    verify.set_defaults(handler=_verify)

    checkpoint = commands.add_parser("checkpoint", help="signed checkpoints that anchor the log outside the database")
    checkpoint_commands = checkpoint.add_subparsers(title="checkpoint commands", metavar="ACTION")
    keygen = checkpoint_commands.add_parser("keygen", help="make an Ed25519 key pair for signing checkpoints")
    keygen.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for checkpoint.key and .pub")
    keygen.set_defaults(handler=_checkpoint_keygen)
    checkpoint_write = checkpoint_commands.add_parser(
        "write", help="sign and store a checkpoint of the log now, and export it (refused if history changed)"
    )
    checkpoint_write.add_argument(
        "--out",
        type=Path,
        metavar="FILE|DIR|-",
        help="also write it as JSON to this file or folder, or '-' for standard output "
        "(default: RELANCE_CHECKPOINT_DIR)",
    )
    checkpoint_write.add_argument(
        "--key-file", type=Path, metavar="FILE", help="private key (default: RELANCE_CHECKPOINT_KEY_FILE)"
    )
    checkpoint_write.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="PostgreSQL: how long to wait for transactions in flight to finish so the checkpoint covers every event "
        "committed before it (default 10)",
    )
    checkpoint_write.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    checkpoint_write.set_defaults(handler=_checkpoint_write)
    checkpoint_export = checkpoint_commands.add_parser(
        "export", help="write the database's checkpoints that a folder does not hold yet into it, as JSON"
    )
    checkpoint_export.add_argument(
        "--out", type=Path, metavar="DIR", help="the folder (default: RELANCE_CHECKPOINT_DIR)"
    )
    checkpoint_export.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    checkpoint_export.set_defaults(handler=_checkpoint_export)
    checkpoint_list = checkpoint_commands.add_parser("list", help="the checkpoints the database holds")
    checkpoint_list.add_argument("--json", action="store_true", help="machine-readable output")
    checkpoint_list.add_argument("--database-url", help="override RELANCE_DATABASE_URL")
    checkpoint_list.set_defaults(handler=_checkpoint_list)

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

    rates = commands.add_parser("rates", help="the reference rate table late interest is computed with")
    rates_commands = rates.add_subparsers(title="rates commands", metavar="ACTION")
    rates_show = rates_commands.add_parser(
        "show", help="the table in effect: the shipped rates and RELANCE_RATES_FILE's, with the source of each row"
    )
    rates_show.set_defaults(handler=_rates_show)
    rates_check = rates_commands.add_parser(
        "check", help="exit 1 if a semester in effect or beginning within DAYS has no rate, with the line to add"
    )
    rates_check.add_argument("--at", type=_day, help="the day to check from (default: today, UTC)")
    rates_check.add_argument(
        "--within", type=_days, default=None, metavar="DAYS", help="how far ahead to look (default 45 days)"
    )
    rates_check.set_defaults(handler=_rates_check)

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


def _db_current(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.migrate import current

    print(current(settings.require_database_url()) or "(empty database: run `relance db upgrade`)")
    return 0


def _health(args: argparse.Namespace, settings: Settings) -> int:
    """What a container's HEALTHCHECK can honestly tell: configuration, credentials, schema. Not a worker's progress."""
    _migrated_engine(settings).dispose()
    print("healthy: settings valid, the ledger database accepts this role and is at the latest schema revision")
    return 0


def _ledger_show(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.db import make_engine
    from shared.ledger.show import render_stream, stream_document
    from shared.ledger.store import Ledger

    ledger = Ledger(make_engine(settings.require_database_url()))
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
    from shared.ledger.verify import verify

    if args.customer and not args.tenant:
        print("relance: --customer needs --tenant (customer ids are per tenant)", file=sys.stderr)
        return 2
    sources = _checkpoint_sources(args.checkpoints, args.public_key, settings)
    progress = _Progress() if sys.stderr.isatty() else None
    engine = _migrated_engine(settings)
    try:
        report = verify(engine, args.tenant, args.customer, sources=sources, progress=progress)
    finally:
        engine.dispose()
        if progress is not None:
            progress.clear()
    for problem in report.problems:
        print(f"PROBLEM  {problem}")
    for warning in report.warnings:
        print(f"WARNING  {warning}")
    for line in report.since:
        print(line)
    if report.checkpoints:
        how = "signatures checked" if sources.public_key is not None else "signatures NOT checked"
        print(f"{report.checkpoints} checkpoint(s) checked ({how})")
    verdict = "intact" if report.ok else f"{len(report.problems)} problem(s) found"
    print(f"{report.streams:,} stream(s), {report.events:,} event(s) checked: {verdict}")
    return 0 if report.ok else 1


class _Progress:
    """How far a long verify is, on one line of the terminal's stderr, at most four times a second."""

    def __init__(self) -> None:
        self._shown = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._shown < 0.25:
            return
        self._shown = now
        percent = 100 * done // total if total else 100
        print(
            f"\r\033[Kverify: {phase}, {done:,} of {total:,} events ({percent}%)", end="", file=sys.stderr, flush=True
        )

    def clear(self) -> None:
        if self._shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def _checkpoint_sources(exported: Path | None, public_key: Path | None, settings: Settings) -> CheckpointSources:
    """The exported checkpoints and the public key verify uses: the options', else the settings'."""
    from shared.ledger import checkpoints as cp
    from shared.ledger.verify import CheckpointSources

    folder = settings.checkpoint_dir
    if exported is not None:
        copies = cp.read_files(exported)
    elif folder is not None and folder.is_dir() and any(folder.glob("*.json")):
        copies = cp.read_files(folder)
    else:
        copies = []
    if public_key is not None:
        key = cp.load_public_key(public_key)
    elif settings.checkpoint_public_key_file is not None:
        key = cp.load_public_key(settings.checkpoint_public_key_file)
    elif settings.checkpoint_key_file is not None:
        key = cp.load_private_key(settings.checkpoint_key_file).public_key()
    else:
        key = None
    return CheckpointSources(exported=copies, public_key=key)


def _checkpoint_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger import checkpoints as cp

    private, public = cp.generate_keys(args.out)
    print(f"private key {private} (mode 0600): set RELANCE_CHECKPOINT_KEY_FILE={private} where checkpoints are")
    print("  written, and keep it off the database server and its backups")
    print(f"public key  {public} (key id {cp.key_id(cp.load_public_key(public))}): give it to whoever runs")
    print("  `relance verify` (--public-key or RELANCE_CHECKPOINT_PUBLIC_KEY_FILE)")
    return 0


def _checkpoint_write(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger import checkpoints as cp

    key_file = args.key_file or settings.checkpoint_key_file
    if key_file is None:
        raise ConfigurationError(
            "no checkpoint signing key: set RELANCE_CHECKPOINT_KEY_FILE or give --key-file "
            "(make a key pair with `relance checkpoint keygen --out DIR`)"
        )
    key = cp.load_private_key(key_file)
    target: Path | None = args.out or settings.checkpoint_dir
    to_stdout = target is not None and str(target) == "-"
    if target is not None and not to_stdout:
        _check_export_target(target)
    engine = _migrated_engine(settings)
    try:
        checkpoint = cp.write(engine, key, settle_seconds=max(0.0, args.wait))
    except cp.CheckpointRefused as exc:
        print(f"relance: {exc}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    summary = (
        f"checkpoint {checkpoint.number}: {checkpoint.streams} stream(s), {checkpoint.events} event(s), "
        f"Merkle root {checkpoint.merkle_root[:16]}…, signed with key {checkpoint.key_id}"
    )
    if to_stdout:
        print(json.dumps(checkpoint.to_json(), indent=2, ensure_ascii=False))
        print(summary, file=sys.stderr)
        return 0
    if target is not None:
        summary += f", exported to {cp.export(checkpoint, target)}"
    print(summary)
    return 0


def _check_export_target(target: Path) -> None:
    """Refuse, before anything is signed, a place the checkpoint could not be exported to."""
    folder = target if target.is_dir() else target.parent
    if not target.is_dir() and target.exists():
        raise ConfigurationError(f"{target} exists already; an exported checkpoint is never overwritten")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigurationError(f"cannot export checkpoints to {target}: {folder} is not a writable folder")


def _checkpoint_export(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger import checkpoints as cp

    folder: Path | None = args.out or settings.checkpoint_dir
    if folder is None:
        raise ConfigurationError("no folder to export to: give --out DIR or set RELANCE_CHECKPOINT_DIR")
    if not folder.is_dir():
        raise ConfigurationError(f"{folder} is not a folder")
    engine = _migrated_engine(settings)
    try:
        with engine.connect() as conn:
            kept = cp.stored(conn)
    finally:
        engine.dispose()
    written = 0
    for checkpoint in kept:
        path = folder / cp.file_name(checkpoint)
        if path.exists():
            if cp.read_files(path)[0].to_json() != checkpoint.to_json():
                print(f"relance: {path} differs from checkpoint {checkpoint.number} in the database", file=sys.stderr)
                return 1
            continue
        cp.export(checkpoint, path)
        written += 1
    print(f"{written} checkpoint(s) exported to {folder}, {len(kept) - written} were there already")
    return 0


def _checkpoint_list(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger import checkpoints as cp

    engine = _migrated_engine(settings)
    try:
        rows = cp.summaries(engine)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(rows, indent=2, default=_json_default))
        return 0
    if not rows:
        print("no checkpoint yet: `relance checkpoint write` signs one")
        return 0
    for row in rows:
        print(
            f"{row['number']:>6}  {row['created_at']:%Y-%m-%d %H:%M:%S}  {row['streams']:>8} stream(s)  "
            f"{row['events']:>10} event(s)  root {row['merkle_root'][:16]}…  key {row['key_id']}"
        )
    return 0


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
    from services.relay.worker import run

    return run(settings)


def _worker_webhook(args: argparse.Namespace, settings: Settings) -> int:
    from services.webhook.worker import run

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

    url = settings.require_database_url()
    engine = make_engine(url)
    problem = schema_problem(engine, url)
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
    if not summary.failed:
        return 0
    print(f"{summary.failures} customer(s) could not be evaluated (see escalation.evaluation_failed in the log):")
    for failure in summary.failed:
        print(f"  {failure.tenant}/{failure.customer_id}: {failure.reason}")
    return 1


def _rates_show(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.interest import RateTable

    table = RateTable.default(settings.rates_file)
    override = str(settings.rates_file) if settings.rates_file else "(RELANCE_RATES_FILE unset)"
    print(f"reference rates in effect (annual percent, in force on each semester's first day); overrides: {override}")
    print(f"  {'semester':<10}  {'rate':>7}  source")
    for row in table.rows():
        replaced = f" (replaces {row.replaces[0]} from {row.replaces[1]})" if row.replaces else ""
        print(f"  {row.semester.isoformat():<10}  {row.rate:>7}  {row.source}{replaced}")
    return 0


def _rates_check(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.interest import RATES_WARNING_DAYS, RateTable, rate_line

    table = RateTable.default(settings.rates_file)
    on: date = args.at or datetime.now(UTC).date()
    within: int = RATES_WARNING_DAYS if args.within is None else args.within
    gaps = table.gaps(on, within)
    if not gaps:
        print(f"ok: every semester from {on.isoformat()} through the next {within} day(s) has a reference rate")
        return 0
    target = settings.rates_file or "a CSV file named by RELANCE_RATES_FILE (create it, header semester_start,rate)"
    for gap in gaps:
        when = (
            f"began {-gap.days_left} day(s) ago: interest on its days cannot be computed"
            if gap.begun
            else f"begins in {gap.days_left} day(s): add its rate by then"
        )
        print(f"missing: no reference rate for the semester starting {gap.semester.isoformat()}, which {when}")
    print(f'add to {target}, with the official rate in force on that day (see the README, "Reference rates"):')
    for gap in gaps:
        print(f"  {rate_line(gap.semester)}")
    return 1


def _agenda(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.agenda import build_agenda, render_agenda
    from services.escalation.interest import RateTable

    rates = RateTable.default(settings.rates_file)
    with _ledger(settings) as ledger:
        keys = ledger.streams(args.tenant)
        if not keys:
            print(f"relance: tenant {args.tenant!r} has no customers in this ledger", file=sys.stderr)
            return 1
        items = build_agenda((ledger.state(tenant, customer) for tenant, customer in keys), args.date, rates)
    if args.json:
        document = {"tenant": args.tenant, "date": args.date.isoformat(), "items": [i.to_json() for i in items]}
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(render_agenda(items, args.tenant, args.date))
    return 0


def _preview(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.policy import PolicyLibrary
    from services.notifier.delivery import MailSettings
    from services.notifier.mime import MimeError
    from services.notifier.preview import PreviewError, compose, reminder_data, write_parts
    from services.notifier.render import RenderSettings, load_templates
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
        reminders = reminder_data(state, preview_ladder(policy), args.level, args.date or datetime.now(UTC).date())
    except PreviewError as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return 1
    mail = MailSettings.from_settings(settings)
    for data in reminders:
        try:
            preview = compose(data, state.profile, sender, args.lang or data["language"], templates, mail)
            rendered = preview.rendered
            folder = args.out / f"{args.customer}-{args.level}-{rendered.language}-{data['currency']}"
            write_parts(preview, folder)
        except MimeError as exc:  # the ledger holds text that must not reach an e-mail header
            print(f"relance: cannot preview this reminder: {exc}", file=sys.stderr)
            return 1
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


def _days(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 3660:
        raise argparse.ArgumentTypeError(f"not a number of days from 0 to 3660: {value!r}")
    return int(value)


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
    try:
        import aiosmtpd  # noqa: F401  (the demo's SMTP server on loopback)
    except ImportError:
        print("relance demo needs its extra, which the workers do not: pip install 'relance[demo]'", file=sys.stderr)
        return 69
    from services.cli.demo import run_demo

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
