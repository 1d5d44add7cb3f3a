"""Checkpoints in the database and in exported files: listing, reading, exporting, and signing the next one."""

from __future__ import annotations

import base64
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import IntegrityError

from shared.ledger.checkpoints.document import (
    Checkpoint,
    CheckpointError,
    CheckpointRefused,
    Horizon,
    merkle_root,
    sorted_leaves,
)
from shared.ledger.checkpoints.keys import key_id
from shared.ledger.checkpoints.walk import Cut, compare_cut, walk
from shared.ledger.db import is_postgres
from shared.ledger.hashing import utc
from shared.ledger.schema import checkpoints, events


def stored(conn: Connection) -> list[Checkpoint]:
    """Every checkpoint the database holds, oldest first."""
    rows = conn.execute(select(checkpoints.c.number, checkpoints.c.document).order_by(checkpoints.c.number))
    return [Checkpoint.from_json(document, f"checkpoint {number} in the database") for number, document in rows]


def summaries(engine: Engine) -> list[dict[str, Any]]:
    """The checkpoints of the database without their leaves (``relance checkpoint list``)."""
    columns = [c for c in checkpoints.c if c.name != "document"]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).order_by(checkpoints.c.number)).mappings()
        return [{**row, "created_at": utc(row["created_at"])} for row in rows]


def read_files(path: Path) -> list[Checkpoint]:
    """Checkpoints exported to a file, or to the ``*.json`` files of a folder."""
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise CheckpointError(f"{path} holds no checkpoint file (*.json)")
    elif path.is_file():
        files = [path]
    else:
        raise CheckpointError(f"{path}: no such file or folder of checkpoints")
    found = []
    for file in files:
        try:
            raw = orjson.loads(file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise CheckpointError(f"{file} is not a readable JSON checkpoint: {exc}") from None
        found.append(Checkpoint.from_json(raw, str(file)))
    return found


def file_name(checkpoint: Checkpoint) -> str:
    return f"checkpoint-{checkpoint.number:06d}.json"


def export(checkpoint: Checkpoint, target: Path) -> Path:
    """Write the checkpoint as JSON to ``target`` (a folder: under its canonical name); refuses to overwrite."""
    path = target / file_name(checkpoint) if target.is_dir() else target
    try:
        with path.open("xb") as out:
            out.write(orjson.dumps(checkpoint.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    except FileExistsError:
        raise CheckpointError(f"{path} exists already; an exported checkpoint is never overwritten") from None
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror}") from None
    return path


def write(
    engine: Engine, key: Ed25519PrivateKey, *, now: datetime | None = None, settle_seconds: float = 10.0
) -> Checkpoint:
    """Compute, sign and store the next checkpoint, after checking the log still matches the previous one.

    One transaction (a repeatable-read snapshot on PostgreSQL): the horizon, the walk and the insert see the same
    log. The walk reads light columns only; it does not recompute the chain (that is ``relance verify``'s work), but
    it refuses to sign if the history the previous checkpoint covers changed.
    """
    postgres = is_postgres(engine)
    if postgres:
        _settle(engine, settle_seconds)
    with engine.connect() as conn:
        if postgres:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            if postgres:
                horizon = Horizon(below_tx_id=int(conn.execute(_XMIN).scalar_one()))
            else:
                through = conn.execute(select(func.max(events.c.position))).scalar_one()
                horizon = Horizon(through_position=int(through or 0))
            previous = _latest(conn)
            horizons = [horizon] if previous is None else [previous.horizon, horizon]
            if previous is not None and previous.horizon.sort_key > horizon.sort_key:
                raise CheckpointError(
                    f"{previous.label} covers more of the log than exists now: the log or the checkpoint was changed; "
                    "run `relance verify`"
                )
            taken: dict[str, Any] = {}

            def at_horizon(index: int, cut: Cut) -> None:
                if previous is not None and index == 0:
                    problems = compare_cut(previous, cut)
                    if problems:
                        raise CheckpointRefused(previous.number, problems)
                    return
                taken.update(
                    events=cut.events,
                    last=cut.last,
                    newest_recorded_at=cut.newest_recorded_at,
                    order_hash=cut.order_hash,
                    leaves=tuple(sorted_leaves(cut.heads)),
                )

            walk(conn, horizons, at_horizon)
            public = key.public_key()
            unsigned = Checkpoint(
                number=1 if previous is None else previous.number + 1,
                created_at=(now or datetime.now(UTC)).astimezone(UTC),
                horizon=horizon,
                last=taken["last"],
                newest_recorded_at=taken["newest_recorded_at"],
                streams=len(taken["leaves"]),
                events=taken["events"],
                merkle_root=merkle_root(taken["leaves"]),
                order_hash=taken["order_hash"],
                previous=None if previous is None else previous.digest,
                key_id=key_id(public),
                signature="",
                leaves=taken["leaves"],
            )
            signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
            checkpoint = replace(unsigned, signature=signature)
            try:
                conn.execute(
                    checkpoints.insert().values(
                        number=checkpoint.number,
                        created_at=checkpoint.created_at,
                        digest=checkpoint.digest,
                        streams=checkpoint.streams,
                        events=checkpoint.events,
                        merkle_root=checkpoint.merkle_root,
                        key_id=checkpoint.key_id,
                        document=checkpoint.to_json(),
                    )
                )
            except IntegrityError:
                raise CheckpointError(
                    f"another checkpoint {checkpoint.number} was written meanwhile; run the command again"
                ) from None
    return checkpoint


def _settle(engine: Engine, seconds: float) -> None:
    """Wait, up to ``seconds``, until every event committed so far lies below the server's oldest running transaction.

    The horizon of a PostgreSQL checkpoint is ``pg_snapshot_xmin``, which any transaction running anywhere on the
    server holds back; a short wait lets the transactions in flight when the command started finish, so the
    checkpoint covers everything committed before it. Past the wait, it covers less; the next one covers the rest.
    """
    deadline = time.monotonic() + seconds
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(events.c.tx_id))).scalar()
        while newest is not None:
            conn.rollback()  # a fresh snapshot each time
            if conn.execute(_XMIN).scalar_one() > newest or time.monotonic() >= deadline:
                return
            time.sleep(0.05)


_XMIN = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")


def _latest(conn: Connection) -> Checkpoint | None:
    row = conn.execute(
        select(checkpoints.c.number, checkpoints.c.document).order_by(checkpoints.c.number.desc()).limit(1)
    ).first()
    return None if row is None else Checkpoint.from_json(row.document, f"checkpoint {row.number} in the database")
