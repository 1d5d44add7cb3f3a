"""The notifier's background job: ``notifier.letters_batch``, the day's print batch of letters.

The batch is written to ``RELANCE_JOBS_OUTPUT_DIR/<job id>/`` first, and only then are its letters recorded as
handed to print (:mod:`services.notifier.batch`). Run again after a crash: between the file and the record, the
same batch is made again (same letters, same id) and its events are duplicates the ledger ignores; after the
record, the file already written is the result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from shared.contracts.jobs import JobContext, JobRefused
from shared.ledger.store import Ledger


def letters_batch(args: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    from services.notifier.batch import BatchRefused, make_batch, record_batch

    on = date.fromisoformat(args["date"])
    folder = context.settings.jobs_output_dir / context.job_id
    out = folder / f"print-batch-{context.tenant}-{on.isoformat()}.pdf"
    ledger = Ledger(context.engine)

    def progress(line: str) -> None:
        context.progress(0, None, line)

    try:
        made = make_batch(ledger, on, [context.tenant], again=bool(args.get("again")), progress=progress)
        if made is None:
            if out.exists():  # this job made it, and recorded it, before it was run again
                return _result(out, on, letters=None)
            return {"date": on.isoformat(), "file": None, "letters": 0, "note": "no letter to print that day"}
        folder.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".pdf.part")
        partial.write_bytes(made.pdf)
        partial.replace(out)
        record_batch(ledger, made, source="job")
    except BatchRefused as exc:
        raise JobRefused(str(exc)) from None
    return {**_result(out, on, letters=len(made.entries)), "batch_id": made.batch_id, "pages": made.pages}


def _result(out: Path, on: date, *, letters: int | None) -> dict[str, Any]:
    return {
        "date": on.isoformat(),
        "file": str(out),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "bytes": out.stat().st_size,
        "letters": letters,
    }
