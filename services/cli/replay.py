"""``relance replay``: every escalation decision taken again from the log's ERP events and recorded clock ticks.

An auditor replays a tenant (``--tenant``, required), or one customer's stream of it (``--customer``). By default the
replay runs in memory and writes nothing; ``--into URL`` writes the replayed log into a scratch database through the
ledger's own write path (migrated first, refused unless it holds no event), ``--into`` alone into a new SQLite file
in the current directory. The summary goes to stdout (``--json``: the same as one JSON document), the progress to
stderr on a terminal (else a ``replay.progress`` log line every 10 s). Exit status: 0 as recorded, 1 divergence(s),
2 usage error (a tenant or customer the log does not hold, a target that already holds events), 78 configuration
error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.cli.options import Commands, runs
from shared.config import ConfigurationError, Settings, database_url, hide_password
from shared.runtime import open_ledger

if TYPE_CHECKING:
    from services.escalation.replay import Divergence, ReplayReport
    from shared.ledger.store import Ledger

SCRATCH = "relance-replay-{tenant}-{stamp}.db"  # what --into without a URL creates in the current directory


def add_replay(commands: Commands) -> None:
    replay = commands.add_parser(
        "replay",
        help="decide again at every recorded clock tick and compare with the recorded decisions; exit 1 on any "
        "divergence (use the policies and rates that were in force)",
        description="Replay a tenant's log as an auditor does: the ERP's events and the facts other services "
        "recorded are applied again, the engine decides again at each recorded clock tick (never the wall clock), "
        "and every stream is compared with the recorded one, event for event. In memory by default; --into writes "
        "the replayed log into a scratch database. Exit 0 as recorded, 1 on a divergence, 2 on a usage error, 78 on "
        "a configuration error.",
    )
    replay.add_argument("--tenant", required=True, help="the tenant to replay (an auditor replays one tenant)")
    replay.add_argument("--customer", help="only this customer's stream")
    replay.add_argument(
        "--into",
        nargs="?",
        const="",
        metavar="URL",
        help="write the replayed log into this empty database (migrated first; refused if it holds events); "
        "without a URL, into a new SQLite file relance-replay-<tenant>-<timestamp>.db in the current directory",
    )
    replay.add_argument("--json", action="store_true", help="the summary as one JSON document")
    runs(replay, replay_log, database_url=True)


def replay_log(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.replay import replay
    from services.escalation.worker import policy_books, real_rules

    books, rules = policy_books(settings), real_rules(settings)
    progress = TerminalRate("replay") if sys.stderr.isatty() else None
    started = time.monotonic()
    with open_ledger(settings) as source:
        streams = source.streams(args.tenant)
        if not streams:  # a mistyped tenant must not read as a log replayed as recorded
            print(f"relance: the log holds no stream of tenant {args.tenant!r}", file=sys.stderr)
            return 2
        if args.customer is not None and (args.tenant, args.customer) not in streams:
            print(f"relance: no stream for customer {args.customer!r} of tenant {args.tenant!r}", file=sys.stderr)
            return 2
        target_url = None if args.into is None else _target_url(args.into, args.tenant)
        try:
            if target_url is None:
                report = replay(
                    source, None, books, rules, tenant=args.tenant, customer=args.customer, progress=progress
                )
            else:
                with _scratch(target_url) as target:
                    if target is None:
                        return 2
                    report = replay(
                        source, target, books, rules, tenant=args.tenant, customer=args.customer, progress=progress
                    )
        finally:
            if progress is not None:
                progress.clear()
    elapsed = time.monotonic() - started
    summary = _summary(args, report, elapsed, target_url)
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(_text(summary, report))
    return 0 if report.ok else 1


def _target_url(given: str, tenant: str) -> str:
    """The target's URL: the one given (checked as RELANCE_DATABASE_URL is), or a new SQLite file's."""
    if not given:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", tenant)[:64] or "tenant"
        return f"sqlite:///{Path.cwd() / SCRATCH.format(tenant=safe, stamp=stamp)}"
    try:
        return database_url(given)
    except ValueError as exc:
        raise ConfigurationError(f"--into {hide_password(given)}: {exc}") from None


@contextmanager
def _scratch(url: str) -> Iterator[Ledger | None]:
    """The target ledger, migrated and checked empty (None, said on stderr, if it holds events); closed after."""
    from sqlalchemy import func, select

    from shared.ledger.db import make_engine
    from shared.ledger.migrate import upgrade
    from shared.ledger.schema import events
    from shared.ledger.store import Ledger

    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            held = conn.execute(select(func.count()).select_from(events)).scalar_one()
        if held:
            print(
                f"relance: the replay target {hide_password(url)} already holds {held:,} event(s): give an empty "
                "database (or --into alone for a new SQLite file)",
                file=sys.stderr,
            )
            yield None
        else:
            yield Ledger(engine)
    finally:
        engine.dispose()


def _summary(args: argparse.Namespace, report: ReplayReport, elapsed: float, target: str | None) -> dict[str, Any]:
    rate = report.events / elapsed if elapsed > 0 else 0.0
    return {
        "tenant": args.tenant,
        "customer": args.customer,
        "into": None if target is None else _shown(target),
        "events": report.events,
        "streams": report.streams,
        "erp_events": report.erp_events,
        "ticks": report.ticks,
        "decisions": report.decisions,
        "elapsed_seconds": round(elapsed, 3),
        "events_per_second": round(rate, 1),
        "verdict": "as recorded" if report.ok else "diverges",
        "divergences": [_divergence(d) for d in report.divergences],
    }


def _shown(url: str) -> str:
    """A SQLite target as its file's path, any other as its URL with the password hidden."""
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else hide_password(url)


def _divergence(divergence: Divergence) -> dict[str, Any]:
    return {
        "tenant": divergence.tenant,
        "customer_id": divergence.customer_id,
        "version": divergence.version,
        "recorded": divergence.recorded,
        "replayed": divergence.replayed,
        "differences": [
            {"field": d.field, "recorded": d.recorded, "replayed": d.replayed} for d in divergence.differences
        ],
    }


def _text(summary: dict[str, Any], report: ReplayReport) -> str:
    lines = []
    for divergence in report.divergences:
        lines.append(f"DIVERGES  {divergence.headline()}")
        width = max((len(d.field) for d in divergence.differences), default=0)
        for d in divergence.differences:
            lines.append(f"  {d.field:<{width}}  recorded {d.recorded}")
            lines.append(f"  {'':<{width}}  replayed {d.replayed}")
    if summary["into"] is not None:
        lines.append(f"replayed log written to {summary['into']}")
    verdict = "as recorded" if report.ok else f"{len(report.divergences)} stream(s) diverge"
    lines.append(
        f"{report.streams:,} stream(s), {report.erp_events:,} ERP event(s), {report.ticks:,} clock tick(s), "
        f"{report.decisions:,} decision(s) replayed in {summary['elapsed_seconds']:.1f} s "
        f"({summary['events_per_second']:,.0f} events/s): {verdict}"
    )
    return "\n".join(lines)


class TerminalRate:
    """How far the replay is, on one line of the terminal's stderr, at most four times a second: events done of
    how many, and how many a second."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.started = time.monotonic()
        self._shown = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._shown < 0.25 and done < total:
            return
        self._shown = now
        percent = 100 * done // total if total else 100
        rate = done / (now - self.started) if now > self.started else 0.0
        line = f"{self.command}: {done:,} of {total:,} events ({percent}%), {rate:,.0f} events/s"
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)

    def clear(self) -> None:
        if self._shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
