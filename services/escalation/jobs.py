"""The escalation's background job: ``escalation.replay``, a tenant's replay summary (``relance replay --tenant``).

Read-only: it writes nothing to the ledger, so running it again after a crash only repeats the reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.contracts.jobs import JobContext
from shared.ledger.store import Ledger

MOST_DIVERGENCES = 100  # kept in the job's result; the count says how many there were


def replay_summary(args: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    from services.escalation.replay import replay
    from services.escalation.worker import policy_books, real_rules

    def progress(done: int, total: int) -> None:
        context.progress(done, total, "events read")

    settings = context.settings
    report = replay(
        Ledger(context.engine),
        None,
        policy_books(settings),
        real_rules(settings),
        tenant=context.tenant,
        progress=progress,
    )
    return {
        "verdict": "as recorded" if report.ok else f"{len(report.divergences)} stream(s) diverge",
        "ok": report.ok,
        "streams": report.streams,
        "erp_events": report.erp_events,
        "ticks": report.ticks,
        "decisions": report.decisions,
        "divergences": [str(d) for d in report.divergences[:MOST_DIVERGENCES]],
        "divergent_streams": len(report.divergences),
    }
