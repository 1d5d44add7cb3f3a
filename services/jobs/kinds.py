"""The jobs whose work lives in ``shared/``: a signed checkpoint of the log, and dead-lettered commands re-armed.

Both are safe to run again after a crash: a second checkpoint is one more valid signed checkpoint, and re-arming a
command that is already pending again is refused as such and counted, not done twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.contracts.jobs import JobContext, JobRefused


def checkpoint(args: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    """``ledger.checkpoint``: what ``relance checkpoint write`` does, with the jobs worker's key and folder."""
    from shared.ledger import checkpoints as cp

    settings = context.settings
    if settings.checkpoint_key_file is None:
        raise JobRefused(
            "no checkpoint signing key where the jobs run: set RELANCE_CHECKPOINT_KEY_FILE for `relance worker jobs` "
            "(make a key pair with `relance checkpoint keygen --out DIR`)"
        )
    try:
        key = cp.load_private_key(settings.checkpoint_key_file)
    except cp.CheckpointError as exc:
        raise JobRefused(str(exc)) from None
    context.progress(0, 1, "walking the log")
    try:
        written = cp.write(context.engine, key, settle_seconds=float(args.get("settle_seconds", 10.0)))
    except cp.CheckpointRefused as exc:
        raise JobRefused(f"{exc}: " + "; ".join(exc.problems)) from None
    except cp.CheckpointError as exc:
        raise JobRefused(str(exc)) from None
    exported: Path | None = None
    folder = settings.checkpoint_dir
    if folder is not None:
        exported = cp.export(written, folder)
    context.progress(1, 1, f"checkpoint {written.number} signed")
    return {
        "checkpoint": written.number,
        "streams": written.streams,
        "events": written.events,
        "merkle_root": written.merkle_root,
        "key_id": written.key_id,
        "exported_to": None if exported is None else str(exported),
    }


def retry_dead(args: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    """``relay.retry_dead``: the tenant's dead-lettered commands (or those named) pending again, one at a time.

    Each is re-armed in its own transaction, as ``relance outbox retry`` does, and refused when a later command of its
    customer and family went out; the refusals are the result's, with their reason.
    """
    from shared.ledger.outbox import RearmRefused, rearm, undelivered

    named = args.get("command_ids")
    if named is None:
        with context.engine.connect() as conn:
            wanted = [c.command_id for c in undelivered(conn, dead=True, tenant=context.tenant, limit=10_000)]
    else:
        wanted = list(dict.fromkeys(str(c) for c in named))
    rearmed: list[str] = []
    refused: list[dict[str, str]] = []
    for number, command_id in enumerate(wanted, 1):
        try:
            with context.engine.begin() as conn:
                rearm(conn, command_id, context.tenant)
            rearmed.append(command_id)
        except RearmRefused as exc:
            refused.append({"command_id": command_id, "reason": str(exc)})
        if number % 50 == 0 or number == len(wanted):
            context.progress(number, len(wanted), f"{len(rearmed)} pending again, {len(refused)} refused")
    return {"rearmed": rearmed, "refused": refused}
