"""What the sub-commands share: how a command is registered, the ``--database-url`` option, argument types.

Every command that opens the ledger takes the same ``--database-url``, defined once (:func:`add_database_url`). It
is added after each command's own options, where the command always listed it, rather than through ``argparse``'s
``parents=``, which would put it first in every usage line and help. :func:`runs` registers a command's handler
with the name PostgreSQL shows for its process (``application_name``): ``relance-<worker>`` for a worker, else
``relance-cli-<command>``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeAlias

from shared.config import Settings

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # what add_subparsers returns
Handler = Callable[[argparse.Namespace, Settings], int]


def runs(parser: argparse.ArgumentParser, handler: Handler, *, database_url: bool = False) -> None:
    """Make ``handler`` what the sub-command ``parser`` runs; ``database_url`` adds its option, last (see above)."""
    if database_url:
        add_database_url(parser)
    parser.set_defaults(handler=handler, process=process_name(parser.prog))


def process_name(prog: str) -> str:
    """The application_name PostgreSQL shows for a command: relance-<worker> or relance-cli-<command>."""
    words = prog.split()[1:]
    if words[:1] == ["worker"]:
        return "relance-" + "-".join(words[1:])
    return "relance-cli-" + "-".join(words)


def add_database_url(parser: argparse.ArgumentParser) -> None:
    """The option of every command that opens the ledger database (after the command's own, but for ``db upgrade``)."""
    parser.add_argument("--database-url", help="override RELANCE_DATABASE_URL")


def day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date: {value!r} (e.g. 2026-12-01)") from None


def days(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 3660:
        raise argparse.ArgumentTypeError(f"not a number of days from 0 to 3660: {value!r}")
    return int(value)


def instant(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {value!r} (e.g. 2026-12-01T08:00:00Z)") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no time zone: add Z or an offset such as +01:00")
    return moment.astimezone(UTC)


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")
