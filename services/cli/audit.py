"""``relance audit``: the evidence bundle of a tenant or a customer (``export``), and its offline check (``verify``).

``audit verify`` needs no database and no settings: :func:`services.cli.app.main` runs it without reading any
``RELANCE_*`` variable (``offline`` in its defaults), and it runs :mod:`services.audit.offline`, which imports
nothing of relance's.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli.options import Commands, instant, runs
from shared.config import Settings
from shared.observability import relance_version
from shared.runtime import migrated_engine

if TYPE_CHECKING:
    pass


def add_audit(commands: Commands) -> None:
    audit = commands.add_parser("audit", help="evidence bundles for auditors: export one, check one offline")
    actions = audit.add_subparsers(title="audit commands", metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write one ZIP with the events, e-mails, letters and signed checkpoints of a tenant or a customer",
    )
    export.add_argument("--tenant", required=True)
    export.add_argument("--customer", help="only this customer (default: every customer of the tenant)")
    export.add_argument(
        "--from",
        dest="start",
        type=period_start,
        metavar="DATE",
        help="the period's first day (or instant, UTC): its evidence goes in the bundle; the events are exported "
        "from each stream's first one all the same",
    )
    export.add_argument(
        "--to",
        dest="end",
        type=period_end,
        metavar="DATE",
        help="the period's last day, included (or instant): events recorded after it are left out",
    )
    export.add_argument("--out", type=Path, required=True, metavar="FILE.zip", help="the bundle to write")
    export.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a public key the checkpoints are signed with, to bundle (repeatable; default: "
        "RELANCE_CHECKPOINT_PUBLIC_KEY_FILE, or the public half of RELANCE_CHECKPOINT_KEY_FILE)",
    )
    export.add_argument(
        "--at",
        type=instant,
        metavar="INSTANT",
        help="the export instant written in the bundle (default: now); with the same instant, two exports of the "
        "same log are byte-identical",
    )
    runs(export, audit_export, database_url=True)
    check = actions.add_parser(
        "verify",
        help="check a bundle offline (no database, no settings): exit 0 if it is valid, 1 if not, 2 if the --key "
        "file cannot be used",
    )
    check.add_argument("bundle", type=Path, metavar="FILE.zip")
    check.add_argument(
        "--key", type=Path, metavar="PUBKEY", help="the public key the company published (PEM), instead of the bundle's"
    )
    check.add_argument("--json", action="store_true", help="the verdict as JSON")
    runs(check, audit_verify)
    check.set_defaults(offline=True)


def period_start(value: str) -> datetime:
    return _bound(value, end=False)


def period_end(value: str) -> datetime:
    return _bound(value, end=True)


def _bound(value: str, *, end: bool) -> datetime:
    """A day (its first or last microsecond, UTC) or an instant."""
    if len(value) == 10:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an ISO 8601 date: {value!r} (e.g. 2026-10-31)") from None
        start = datetime.combine(day, time(), tzinfo=UTC)
        return start + timedelta(days=1, microseconds=-1) if end else start
    return instant(value)


def audit_export(args: argparse.Namespace, settings: Settings) -> int:
    from services.audit.export import AuditError, Period, export_bundle, public_keys
    from services.cli.checkpoints import TerminalProgress

    if args.start is not None and args.end is not None and args.start > args.end:
        print("relance: --from is after --to: the period is empty", file=sys.stderr)
        return 2
    keys = public_keys(args.public_key, settings)
    progress = TerminalProgress("audit export") if sys.stderr.isatty() else None
    engine = migrated_engine(settings)
    try:
        exported = export_bundle(
            engine,
            args.tenant,
            args.out,
            customer_id=args.customer,
            period=Period(args.start, args.end),
            created_at=args.at or datetime.now(UTC),
            exported_by=_who(),
            public_keys=keys,
            relance_version=relance_version(),
            progress=progress,
        )
    except AuditError as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
        if progress is not None:
            progress.clear()
    print(
        f"{exported.path}: {len(exported.streams)} customer(s), {exported.events:,} event(s), "
        f"{exported.messages} e-mail(s), {exported.letters} letter(s), {len(exported.checkpoints)} checkpoint(s), "
        f"{exported.bytes:,} bytes"
    )
    if exported.keys:
        print(
            f"  signing key(s) bundled: {', '.join(exported.keys)} (the auditor compares them with the published key)"
        )
    if exported.missing_keys:
        print(
            f"  WARNING  key(s) {', '.join(exported.missing_keys)} not bundled: give --public-key FILE, or the "
            "auditor verifies with --key FILE"
        )
    if exported.missing_evidence:
        print(
            f"  WARNING  {len(exported.missing_evidence)} file(s) the log records are not stored: "
            "the bundle will not verify"
        )
    if not exported.verify_ok:
        print("  WARNING  `relance verify` found problems over this scope (report.txt lists them)")
    print(f"  check it anywhere, offline: relance audit verify {exported.path}")
    return 0


def audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from services.audit.offline import run

    return run(args.bundle, args.key, as_json=args.json, out=sys.stdout, err=sys.stderr)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
