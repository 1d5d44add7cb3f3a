"""``relance verify``: the log checked against itself, against what is stored beside it, and against checkpoints.

What is checked, and why each part is needed:

1. **Every stream the log holds**, enumerated from ``events`` itself (never from a projection, which an attacker
   can delete a row of): versions gapless from 1, each ``prev_hash`` the previous event's hash, each hash recomputed
   from the event's content, and the stream's events in the same order by position as by version.
2. **Head rows both ways**: every stream of the log has its ``customer_state`` row at its last version and head hash,
   and no head row, projection, outbox or evidence row exists for a stream the log does not hold.
3. **Projections rebuilt from the log**: each stream's state is folded again from its events and compared with the
   stored snapshot (at the snapshot's version), ``invoice_balances``, ``credits``, ``customer_balances``, the outbox
   rows its events cause, and the stored reminder bytes and letters' PDFs its evidence events name. Every difference
   is named: table, key, column, stored value and rebuilt value (:mod:`shared.ledger.compare`).
4. **Signed checkpoints** (:mod:`shared.ledger.checkpoints`), from the database and from exported files: each one's
   signature, its Merkle root, and whether the history it covers is still the same (every stream's head at the
   checkpointed version, the global order hash, the counts); then what was appended since the newest one.

The log is read in one streamed SELECT in stream order (plus a light one in commit order for the checkpoints), in
one repeatable-read snapshot on PostgreSQL, so a verify running beside busy workers sees one consistent instant.
What is stored beside the log is read alongside it in the same order, one streamed query per table, and compared as
each stream ends: no query per stream, and one stream in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, Table, exists, func, select

from shared.contracts.events import parse
from shared.ledger import checkpoints as cp
from shared.ledger.compare import Difference, Rebuild, Stored, VerifyReport, compare_stream
from shared.ledger.hashing import GENESIS, HASHED_FIELDS, event_hash, utc
from shared.ledger.outbox import may_cause_command
from shared.ledger.scan import STREAMED, Scope, read_only, scoped
from shared.ledger.schema import (
    credits,
    customer_balances,
    customer_state,
    events,
    invoice_balances,
    letters,
    outbox,
    sent_messages,
)
from shared.ledger.state import CustomerState

__all__ = ["CheckpointSources", "Difference", "VerifyReport", "verify"]

Progress = Callable[[str, int, int], None]  # (phase, events done, events in all)

# An event that a checkpoint does not cover cannot have been recorded this long before the newest event it covers:
# its transaction got its id after theirs (that is what "not covered" means), and takes its append time just before.
# Such an event was inserted afterwards with a backdated time. The slack covers clock skew between the workers and
# the time an append spends before its first write.
RECORDED_SLACK = timedelta(minutes=15)
SHOWN_SINCE = 20  # streams listed by name in "appended since checkpoint N"


@dataclass(frozen=True, slots=True)
class CheckpointSources:
    """Where verify takes checkpoints from: the database's, the exported copies, and the key to check them with."""

    exported: Sequence[cp.Checkpoint] = ()
    public_key: Ed25519PublicKey | None = None


def verify(
    engine: Engine,
    tenant: str | None = None,
    customer_id: str | None = None,
    *,
    sources: CheckpointSources = CheckpointSources(),
    progress: Progress | None = None,
) -> VerifyReport:
    """Check the log, the state stored beside it and the checkpoints; see the module docstring."""
    scope: Scope = (tenant, customer_id)
    report = VerifyReport()
    with read_only(engine) as conn:
        total = conn.execute(scoped(select(func.count()).select_from(events), events, scope)).scalar_one()
        _check_streams(conn, scope, report, total, progress)
        _check_orphans(conn, scope, report)
        _check_checkpoints(conn, scope, sources, report, total, progress)
    return report


# ---------------------------------------------------------------------------------------------------- streams
def _check_streams(conn: Connection, scope: Scope, report: VerifyReport, total: int, progress: Progress | None) -> None:
    query = scoped(select(*[events.c[name] for name in _EVENT_COLUMNS]), events, scope)
    query = query.order_by(events.c.tenant, events.c.customer_id, events.c.version)
    stored = Stored(conn, scope)
    current: Rebuild | None = None
    for row in conn.execute(query, execution_options=STREAMED):
        key = (row[2], row[3])
        if current is None or current.key != key:
            if current is not None:
                compare_stream(stored, current, report)
            current = Rebuild(key, stored.head(key), CustomerState(tenant=key[0], customer_id=key[1]))
            report.streams += 1
        _fold(current, row, report)
        report.events += 1
        if progress is not None and report.events % 5000 == 0:
            progress("streams", report.events, total)
    if current is not None:
        compare_stream(stored, current, report)
    if progress is not None:
        progress("streams", report.events, total)


_EVENT_COLUMNS = ("position", "tx_id", *HASHED_FIELDS, "hash")


def _fold(stream: Rebuild, row: Any, report: VerifyReport) -> None:
    position, version, event_id, event_type, data = row[0], row[4], row[5], row[6], row[7]
    fields = dict(zip(HASHED_FIELDS, row[2:12], strict=True))
    occurred_at, recorded_at, hash_ = utc(row[9]), utc(row[10]), row[12]
    where, state = stream.where, stream.state
    expected = state.version + 1
    if version != expected:
        what = "missing" if version > expected else "repeated or out of order"
        report.problems.append(f"events {where}: version {expected} {what} (found {version})")
    if fields["prev_hash"] != state.head_hash:
        report.problems.append(f"events {where} v{version}: chain broken (prev_hash does not match)")
    if event_hash(**fields) != hash_:
        report.problems.append(f"events {where} v{version}: content altered (hash does not match)")
    # Within a stream, positions follow versions: each append takes the next position under the stream's lock.
    # (Transaction ids need not: a transaction may get its id before it waits for the lock.)
    if position <= stream.position:
        report.problems.append(
            f"events {where} v{version}: position {position} comes before that of v{state.version} "
            f"({stream.position}): positions were moved"
        )
    stream.position = max(position, stream.position)
    try:
        state.apply(parse(event_type, data), occurred_at, event_id, recorded_at=recorded_at)
    except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
        report.problems.append(f"events {where} v{version}: its data cannot be folded ({type(exc).__name__}: {exc})")
    state.version = version
    state.head_hash = hash_
    stream.events += 1
    if version == stream.snapshot_version:
        stream.snapshot = orjson.loads(orjson.dumps(state.to_json()))  # a copy: later events change nested dicts
    if may_cause_command(event_type):
        stream.commands.append(fields)
    if isinstance(data, dict) and data.get("sha256") and data.get("command_id") and event_type.startswith("reminder."):
        stream.evidence.setdefault(str(data["command_id"]), []).append(
            (version, str(data.get("message_id", "")), str(data["sha256"]))
        )
    if event_type == "letter.rendered" and isinstance(data, dict):
        stream.letters[str(data["letter_id"])] = (version, str(data["sha256"]))


# ---------------------------------------------------------------------------------------------------- orphans
_BESIDE_THE_LOG = (invoice_balances, credits, customer_balances, outbox, sent_messages, letters)


def _check_orphans(conn: Connection, scope: Scope, report: VerifyReport) -> None:
    """Rows kept for streams the log does not hold: the other direction of the head check."""

    def without_events(table: Table) -> Any:
        return ~exists().where(events.c.tenant == table.c.tenant, events.c.customer_id == table.c.customer_id)

    heads = select(
        customer_state.c.tenant,
        customer_state.c.customer_id,
        customer_state.c.version,
        customer_state.c.head_hash,
        customer_state.c.snapshot_version,
        customer_state.c.state,
    ).where(without_events(customer_state))
    for tenant, customer_id, version, head_hash, snapshot_version, state in conn.execute(
        scoped(heads, customer_state, scope).order_by(customer_state.c.tenant, customer_state.c.customer_id)
    ):
        if (version, head_hash, snapshot_version, state) == (0, GENESIS, 0, {}):
            continue  # a stream whose first events were all refused: its row was locked, nothing appended
        report.problems.append(
            f"customer_state {tenant}/{customer_id}: head row at version {version}, but the log holds no event of "
            "this stream (its events were removed, or the row was forged)"
        )
    for table in _BESIDE_THE_LOG:
        query = (
            select(table.c.tenant, table.c.customer_id, func.count())
            .where(without_events(table))
            .group_by(table.c.tenant, table.c.customer_id)
        )
        for tenant, customer_id, count in conn.execute(
            scoped(query, table, scope).order_by(table.c.tenant, table.c.customer_id)
        ):
            report.problems.append(
                f"{table.name} {tenant}/{customer_id}: {count} row(s) for a stream of which the log holds no event"
            )


# ---------------------------------------------------------------------------------------------------- checkpoints
def _check_checkpoints(
    conn: Connection,
    scope: Scope,
    sources: CheckpointSources,
    report: VerifyReport,
    total: int,
    progress: Progress | None,
) -> None:
    try:
        in_database = cp.stored(conn)
    except cp.CheckpointError as exc:
        report.problems.append(str(exc))
        in_database = []
    reconciled = cp.reconcile(in_database, sources.exported, sources.public_key)
    report.problems.extend(reconciled.problems)
    report.warnings.extend(reconciled.warnings)
    trusted = reconciled.checkpoints
    if not trusted:
        return
    report.checkpoints = len(trusted)
    if scope != (None, None):
        report.warnings.append(
            "only the streams in scope were checked against the checkpoints; their Merkle roots and global order "
            "need a verify of the whole log"
        )
    seen = 0

    def at_horizon(index: int, cut: cp.Cut) -> None:
        report.problems.extend(cp.compare_cut(trusted[index], cut, scope=scope))

    def on_event(event: cp.Seen, passed: int) -> None:
        nonlocal seen
        seen += 1
        if progress is not None and seen % 20000 == 0:
            progress("checkpoints", seen, total)
        if not passed:
            return
        latest = trusted[passed - 1]  # the newest checkpoint that does not cover this event
        newest = latest.newest_recorded_at
        if newest is not None and event.recorded_at < newest - RECORDED_SLACK:
            report.problems.append(
                f"events {event.tenant}/{event.customer_id} v{event.version}: recorded at "
                f"{event.recorded_at.isoformat(timespec='seconds')}, before events that {latest.label} covers "
                f"(up to {newest.isoformat(timespec='seconds')}), yet not covered by it: inserted afterwards with a "
                "backdated time"
            )

    final = cp.walk(conn, [c.horizon for c in trusted], at_horizon, scope=scope, on_event=on_event)
    latest = max(trusted, key=lambda c: c.number)
    appended = list(cp.iter_since(latest, final.heads))
    count = sum(now - then for _, then, now in appended)
    new = sum(1 for _, then, _ in appended if then == 0)
    report.since.append(
        f"since {latest.label}: {count} event(s) appended to {len(appended)} stream(s), {new} of them new"
        + (":" if appended else "")
    )
    for (tenant, customer_id), then, now in appended[:SHOWN_SINCE]:
        report.since.append(f"  {tenant}/{customer_id}: " + (f"new, v1..v{now}" if then == 0 else f"v{then} -> v{now}"))
    if len(appended) > SHOWN_SINCE:
        report.since.append(f"  … and {len(appended) - SHOWN_SINCE} more stream(s)")
