"""``relance replay``: every escalation decision taken again from the log's ERP events and recorded clock ticks."""

from __future__ import annotations

import argparse
import sys

from services.cli.checkpoints import TerminalProgress
from services.cli.options import Commands, runs
from shared.config import Settings
from shared.runtime import open_ledger


def add_replay(commands: Commands) -> None:
    replay = commands.add_parser(
        "replay",
        help="decide again, in memory, at every recorded clock tick and compare with the recorded decisions; exit 1 "
        "on any divergence (use the policies and rates that were in force)",
    )
    replay.add_argument("--tenant", help="only this tenant's streams")
    runs(replay, replay_log, database_url=True)


def replay_log(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.replay import replay
    from services.escalation.worker import policy_books, real_rules

    terminal = TerminalProgress("replay") if sys.stderr.isatty() else None

    def progress(done: int, total: int) -> None:
        if terminal is not None:
            terminal("streams", done, total)

    with open_ledger(settings) as ledger:
        try:
            report = replay(
                ledger, None, policy_books(settings), real_rules(settings), tenant=args.tenant, progress=progress
            )
        finally:
            if terminal is not None:
                terminal.clear()
    for divergence in report.divergences:
        print(f"DIVERGES  {divergence}")
    verdict = "as recorded" if report.ok else f"{len(report.divergences)} stream(s) diverge"
    print(
        f"{report.streams:,} stream(s), {report.erp_events:,} ERP event(s), {report.ticks:,} clock tick(s), "
        f"{report.decisions:,} decision(s) replayed: {verdict}"
    )
    return 0 if report.ok else 1
