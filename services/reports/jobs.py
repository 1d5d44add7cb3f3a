"""The reports' background job: ``reports.committee``, the credit committee's pack as ``relance report committee``
writes it (committee.html, .csv and .json) in ``RELANCE_JOBS_OUTPUT_DIR/<job id>/``.

Read-only on the ledger: run again, it writes the same files again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from shared.contracts.jobs import JobContext
from shared.ledger.store import Ledger


def committee(args: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    from services.reports import dso
    from services.reports.committee import committee_pack
    from services.reports.formats import COMMITTEE_FILES, write_committee

    as_of = date.fromisoformat(args["as_of"]) if args.get("as_of") else datetime.now(UTC).date()
    period = dso.PeriodLength(int(args["period_months"]), "m")
    context.progress(0, 2, "folding the ledger")
    report = committee_pack(Ledger(context.engine), context.tenant, as_of, int(args["months"]), period)
    context.progress(1, 2, "writing the pack")
    written = write_committee(report, context.settings.jobs_output_dir / context.job_id, list(COMMITTEE_FILES))
    context.progress(2, 2, "written")
    return {
        "as_of": as_of.isoformat(),
        "files": [
            {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}
            for path in written
        ],
    }
