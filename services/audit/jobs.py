"""The audit's background job: ``audit.export``, an evidence bundle as ``relance audit export`` writes it.

The bundle goes to ``RELANCE_JOBS_OUTPUT_DIR/<job id>/``; the job's result names it with its SHA-256. Run again (a
worker died before the job was recorded done), it writes the same bundle again over the first: harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any

from shared.contracts.jobs import JobContext, JobRefused
from shared.observability import relance_version


def export(args: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    from services.audit.export import AuditError, Period, export_bundle, public_keys

    first, last = args.get("date_from"), args.get("date_to")
    start = datetime.combine(date.fromisoformat(first), time.min, UTC) if first else None
    end = datetime.combine(date.fromisoformat(last), time.max, UTC) if last else None
    if start is not None and end is not None and start > end:
        raise JobRefused("date_from is after date_to: the period is empty")
    customer = args.get("customer")
    folder = context.settings.jobs_output_dir / context.job_id
    folder.mkdir(parents=True, exist_ok=True)
    name = f"audit-{context.tenant}" + (f"-{customer}" if customer else "") + ".zip"
    out = folder / name

    def progress(what: str, done: int, total: int | None = None) -> None:
        context.progress(done, total, what)

    try:
        exported = export_bundle(
            context.engine,
            context.tenant,
            out,
            customer_id=customer,
            period=Period(start, end),
            created_at=datetime.now(UTC),
            exported_by=f"job {context.job_id}",
            public_keys=public_keys((), context.settings),
            relance_version=relance_version(),
            progress=progress,
        )
    except AuditError as exc:
        raise JobRefused(str(exc)) from None
    return {
        "file": str(exported.path),
        "sha256": hashlib.sha256(exported.path.read_bytes()).hexdigest(),
        "bytes": exported.bytes,
        "customers": len(exported.streams),
        "events": exported.events,
        "messages": exported.messages,
        "letters": exported.letters,
        "checkpoints": len(exported.checkpoints),
        "missing_keys": list(exported.missing_keys),
    }
