"""The ``relance`` command: one entry point for the workers, the ledger tools and the demo.

Each sub-command builds what it needs from settings when it runs (nothing connects at import time) and turns
expected failures (bad configuration, unreachable server) into one clear line on stderr and a non-zero exit. The
sub-commands live by group in the modules next to this one; :func:`build_parser` lists them in the order the help
shows them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError, OperationalError

from services.cli import (
    audit,
    checkpoints,
    claims,
    contract,
    demo_command,
    escalation,
    jobs,
    ledger,
    letters,
    notifier,
    replay,
    reports,
    users,
    workers,
    workspace,
)
from services.cli.options import Handler
from shared.config import ConfigurationError, Settings, hide_password, load_settings, with_application_name
from shared.ledger.store import LedgerUnavailable
from shared.logging import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    handler: Handler = args.handler
    if getattr(args, "offline", False):  # `relance audit verify`: no settings, no database, no RELANCE_* read
        return handler(args, Settings.model_construct())
    try:
        overrides = {"database_url": args.database_url} if getattr(args, "database_url", None) else {}
        settings = load_settings(**overrides)
        if hasattr(args, "database_url") and not getattr(args, "own_database", False):
            settings = settings.model_copy(
                update={"database_url": with_application_name(settings.require_database_url(), args.process)}
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


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command, in the order ``relance --help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="relance",
        description="Accounts-receivable collections engine: event-sourced customer ledgers fed by your ERP.",
        epilog="Settings come from RELANCE_* environment variables; see the README for the full table.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    ledger.add_db(commands)  # and health
    ledger.add_ledger(commands)
    checkpoints.add_verify(commands)
    checkpoints.add_checkpoint(commands)
    audit.add_audit(commands)
    replay.add_replay(commands)
    workers.add_worker(commands)
    jobs.add_jobs(commands)
    ledger.add_outbox(commands)
    escalation.add_clock(commands)
    escalation.add_rates(commands)
    escalation.add_agenda(commands)
    claims.add_claims(commands)
    reports.add_report(commands)
    notifier.add_preview(commands)
    notifier.add_evidence(commands)
    letters.add_letters(commands)
    contract.add_publish(commands)
    demo_command.add_demo(commands)
    workspace.add_workspace(commands)
    contract.add_contract(commands)
    users.add_user(commands)
    return parser
