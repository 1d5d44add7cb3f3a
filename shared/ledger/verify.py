"""``relance verify``: the log checked against itself, against what is stored beside it, and against checkpoints.

What is checked, and why each part is needed:

1. **Every stream the log holds**, enumerated from ``events`` itself (never from a projection, which an attacker
   can delete a row of): versions gapless from 1, each ``prev_hash`` the previous event's hash, each hash recomputed
   from the event's content, and the stream's events in the same order by position as by version.
2. **Head rows both ways**: every stream of the log has its ``customer_state`` row at its last version and head hash,
   and no head row, projection, outbox or evidence row exists for a stream the log does not hold.
3. **Projections rebuilt from the log**: each stream's state is folded again from its events and compared with the
   stored snapshot (at the snapshot's version), ``invoice_balances``, ``credits``, ``customer_balances``, the outbox
   rows its events cause, and the stored reminder bytes its evidence events name. Every difference is named: table,
   key, column, stored value and rebuilt value.
4. **Signed checkpoints** (:mod:`shared.ledger.checkpoints`), from the database and from exported files: each one's
   signature, its Merkle root, and whether the history it covers is still the same (every stream's head at the
   checkpointed version, the global order hash, the counts); then what was appended since the newest one.

The log is read in one streamed, ordered SELECT (plus a light one for the checkpoints), in one repeatable-read
snapshot on PostgreSQL, so a verify running beside busy workers sees one consistent instant and never holds more
than a chunk of streams in memory. Projection rows are fetched a chunk of streams at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.types.json import set_json_loads
from sqlalchemy import Connection, Engine, Table, and_, exists, func, select

from shared.ledger import checkpoints as cp
from shared.ledger.db import by_tenant, is_postgres
from shared.ledger.hashing import GENESIS, HASHED_FIELDS, event_hash, utc
from shared.ledger.outbox import COMMANDS, command_rows
from shared.ledger.projections import credit_row, customer_balance_rows, invoice_balance_row
from shared.ledger.schema import (
    credits,
    customer_balances,
    customer_state,
    events,
    invoice_balances,
    outbox,
    sent_messages,
)
from shared.ledger.state import CustomerState

StreamKey = tuple[str, str]
Scope = tuple[str | None, str | None]
Progress = Callable[[str, int, int], None]  # (phase, events done, events in all)

CHUNK_STREAMS = 500  # streams whose projections are fetched and compared together
# An event that a checkpoint does not cover cannot have been recorded this long before the newest event it covers:
# its transaction got its id after theirs (that is what "not covered" means), and takes its append time just before.
# Such an event was inserted afterwards with a backdated time. The slack covers clock skew between the workers and
# the time an append spends before its first write.
RECORDED_SLACK = timedelta(minutes=15)
SHOWN_SINCE = 20  # streams listed by name in "appended since checkpoint N"
SHOWN_DIFFERENCES = 20  # differences of one snapshot listed by path


@dataclass(frozen=True, slots=True)
class Difference:
    """A stored value that is not what the log rebuilds."""

    table: str
    key: str  # tenant/customer, and the row's own key
    column: str
    stored: Any
    rebuilt: Any

    def __str__(self) -> str:
        stored, rebuilt = _shown(self.stored), _shown(self.rebuilt)
        return f"{self.table} {self.key}: {self.column} stored {stored}, rebuilt from the log {rebuilt}"


@dataclass
class VerifyReport:
    streams: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)  # each names what is wrong where; any one fails verify
    differences: list[Difference] = field(default_factory=list)  # the projection differences among the problems
    warnings: list[str] = field(default_factory=list)  # what could not be checked, and why
    checkpoints: int = 0  # checkpoints the log was checked against
    since: list[str] = field(default_factory=list)  # what was appended after the newest checkpoint

    @property
    def ok(self) -> bool:
        return not self.problems

    def differs(self, difference: Difference) -> None:
        self.differences.append(difference)
        self.problems.append(str(difference))


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
    with _snapshot(engine) as conn:
        total = conn.execute(_scoped(select(func.count()).select_from(events), events, scope)).scalar_one()
        _check_streams(conn, scope, report, total, progress)
        _check_orphans(conn, scope, report)
        _check_checkpoints(conn, scope, sources, report, total, progress)
    return report


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read transaction that sees one instant of the log and of everything written with it."""
    with engine.connect() as conn:
        if not is_postgres(engine):
            with conn.begin():
                yield conn
            return
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        driver = conn.connection.driver_connection
        set_json_loads(orjson.loads, driver)  # JSON decoding is a large part of reading the log; orjson is 4x faster
        try:
            with conn.begin():
                yield conn
        finally:
            set_json_loads(json.loads, driver)


def _scoped(query: Any, table: Table, scope: Scope) -> Any:
    tenant, customer_id = scope
    if tenant is not None:
        query = query.where(table.c.tenant == tenant)
    if customer_id is not None:
        query = query.where(table.c.customer_id == customer_id)
    return query


# ---------------------------------------------------------------------------------------------------- streams
@dataclass
class _Rebuild:
    """One stream being read: its chain checked and its state folded again, event by event."""

    key: StreamKey
    snapshot_version: int | None  # of the stream's head row, if it has one
    state: CustomerState
    events: int = 0
    position: int = -1  # of the previous event
    snapshot: dict[str, Any] | None = None  # the rebuilt state at the stored snapshot's version
    commands: list[dict[str, Any]] = field(default_factory=list)  # events that cause an outbox row
    evidence: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)  # command_id -> (v, msg id, sha)

    @property
    def where(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"


def _check_streams(conn: Connection, scope: Scope, report: VerifyReport, total: int, progress: Progress | None) -> None:
    joined = events.outerjoin(
        customer_state,
        and_(customer_state.c.tenant == events.c.tenant, customer_state.c.customer_id == events.c.customer_id),
    )
    query = select(*[events.c[name] for name in _EVENT_COLUMNS], customer_state.c.snapshot_version).select_from(joined)
    query = _scoped(query, events, scope).order_by(events.c.tenant, events.c.customer_id, events.c.version)
    chunk: list[_Rebuild] = []
    current: _Rebuild | None = None
    result = conn.execute(query, execution_options={"stream_results": True, "yield_per": 2000})
    for row in result:
        key = (row[2], row[3])
        if current is None or current.key != key:
            if current is not None:
                chunk.append(current)
                if len(chunk) >= CHUNK_STREAMS:
                    _compare_chunk(conn, chunk, report)
                    chunk = []
            current = _Rebuild(key, row[-1], CustomerState(tenant=key[0], customer_id=key[1]))
            report.streams += 1
        _fold(current, row, report)
        report.events += 1
        if progress is not None and report.events % 5000 == 0:
            progress("streams", report.events, total)
    if current is not None:
        chunk.append(current)
    if chunk:
        _compare_chunk(conn, chunk, report)
    if progress is not None:
        progress("streams", report.events, total)


_EVENT_COLUMNS = ("position", "tx_id", *HASHED_FIELDS, "hash")


def _fold(stream: _Rebuild, row: Any, report: VerifyReport) -> None:
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
        state.apply(event_type, data, occurred_at.isoformat(), event_id, recorded_at=recorded_at.isoformat())
    except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
        report.problems.append(f"events {where} v{version}: its data cannot be folded ({type(exc).__name__}: {exc})")
    state.version = version
    state.head_hash = hash_
    stream.events += 1
    if version == stream.snapshot_version:
        stream.snapshot = orjson.loads(orjson.dumps(state.to_json()))  # a copy: later events change nested dicts
    if event_type in COMMANDS:
        stream.commands.append(fields)
    if isinstance(data, dict) and data.get("sha256") and data.get("command_id") and event_type.startswith("reminder."):
        stream.evidence.setdefault(str(data["command_id"]), []).append(
            (version, str(data.get("message_id", "")), str(data["sha256"]))
        )


# ---------------------------------------------------------------------------------------------------- projections
def _compare_chunk(conn: Connection, chunk: list[_Rebuild], report: VerifyReport) -> None:
    keys = [s.key for s in chunk]
    heads = _rows(conn, customer_state, keys)
    invoices = _rows(conn, invoice_balances, keys)
    credit_rows = _rows(conn, credits, keys)
    balances = _rows(conn, customer_balances, keys)
    commands = _rows(conn, outbox, keys)
    messages = _messages(conn, keys)
    for stream in chunk:
        stream.state.changed_credits.clear()
        _compare_head(stream, heads.get(stream.key, []), report)
        state, where = stream.state, stream.where
        _compare_rows(
            report,
            "invoice_balances",
            where,
            "invoice",
            {r["invoice_id"]: r for r in invoices.get(stream.key, [])},
            {i.invoice_id: invoice_balance_row(state, i) for i in state.invoices.values()},
        )
        _compare_rows(
            report,
            "credits",
            where,
            "credit",
            {r["credit_key"]: r for r in credit_rows.get(stream.key, [])},
            {c.key: credit_row(c) for c in state.credits.values()},
        )
        _compare_rows(
            report,
            "customer_balances",
            where,
            "currency",
            {r["currency"]: r for r in balances.get(stream.key, [])},
            {r["currency"]: {**r, "version": state.version} for r in customer_balance_rows(state)},
        )
        rebuilt_commands = {r["command_id"]: r for r in command_rows(stream.commands, datetime.now(UTC))}
        for row in rebuilt_commands.values():
            del row["created_at"], row["attempts"], row["tenant"]  # delivery bookkeeping, not the log's
        _compare_rows(
            report,
            "outbox",
            where,
            "command",
            {r["command_id"]: r for r in commands.get(stream.key, [])},
            rebuilt_commands,
        )
        _compare_evidence(stream, messages.get(stream.key, {}), report)


def _rows(conn: Connection, table: Table, keys: Sequence[StreamKey]) -> dict[StreamKey, list[Mapping[str, Any]]]:
    found: dict[StreamKey, list[Mapping[str, Any]]] = {}
    for tenant, customers in by_tenant(keys):
        query = select(table).where(table.c.tenant == tenant, table.c.customer_id.in_(customers))
        for row in conn.execute(query).mappings():
            found.setdefault((row["tenant"], row["customer_id"]), []).append(dict(row))
    return found


def _messages(conn: Connection, keys: Sequence[StreamKey]) -> dict[StreamKey, dict[str, tuple[str, str, str]]]:
    """Stored reminder bytes by stream and command: (Message-ID, recorded SHA-256, SHA-256 of the bytes now)."""
    postgres = is_postgres(conn)
    content = func.encode(func.sha256(sent_messages.c.mime), "hex") if postgres else sent_messages.c.mime
    found: dict[StreamKey, dict[str, tuple[str, str, str]]] = {}
    for tenant, customers in by_tenant(keys):
        query = select(
            sent_messages.c.customer_id,
            sent_messages.c.command_id,
            sent_messages.c.message_id,
            sent_messages.c.sha256,
            content,
        ).where(sent_messages.c.tenant == tenant, sent_messages.c.customer_id.in_(customers))
        for customer_id, command_id, message_id, recorded, now in conn.execute(query):
            digest = now if postgres else hashlib.sha256(bytes(now)).hexdigest()
            found.setdefault((tenant, customer_id), {})[command_id] = (message_id, recorded, digest)
    return found


def _compare_head(stream: _Rebuild, rows: list[Mapping[str, Any]], report: VerifyReport) -> None:
    where, state = stream.where, stream.state
    if not rows:
        report.problems.append(
            f"customer_state {where}: no head row, but the log holds {stream.events} event(s) of this stream "
            "(row deleted, or the stream was inserted into the log behind relance's back)"
        )
        return
    head = rows[0]
    if head["version"] != state.version:
        report.differs(Difference("customer_state", where, "version", head["version"], state.version))
    if head["head_hash"] != state.head_hash:
        report.differs(Difference("customer_state", where, "head_hash", head["head_hash"], state.head_hash))
    snapshot_version = head["snapshot_version"]
    if not 1 <= snapshot_version <= state.version:
        report.problems.append(
            f"customer_state {where}: snapshot_version {snapshot_version} is outside the log's versions "
            f"1..{state.version}"
        )
        return
    if stream.snapshot is None:  # the stream's events skip that version: reported as missing above
        return
    if head["state"] == stream.snapshot:
        return
    found: list[tuple[str, Any, Any]] = []
    _json_differences("state", head["state"], stream.snapshot, found)
    for path, stored_value, rebuilt_value in found[:SHOWN_DIFFERENCES]:
        report.differs(
            Difference("customer_state", f"{where} snapshot at v{snapshot_version}", path, stored_value, rebuilt_value)
        )
    if len(found) > SHOWN_DIFFERENCES:
        report.problems.append(
            f"customer_state {where} snapshot at v{snapshot_version}: {len(found) - SHOWN_DIFFERENCES} more "
            "difference(s) not shown"
        )


def _json_differences(path: str, stored_value: Any, rebuilt_value: Any, found: list[tuple[str, Any, Any]]) -> None:
    if isinstance(stored_value, dict) and isinstance(rebuilt_value, dict):
        for key in sorted(stored_value.keys() | rebuilt_value.keys()):
            _json_differences(f"{path}.{key}", stored_value.get(key, _ABSENT), rebuilt_value.get(key, _ABSENT), found)
    elif stored_value != rebuilt_value:
        found.append((path, stored_value, rebuilt_value))


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def _compare_rows(
    report: VerifyReport,
    table: str,
    where: str,
    label: str,
    stored_rows: Mapping[str, Mapping[str, Any]],
    rebuilt_rows: Mapping[str, Mapping[str, Any]],
) -> None:
    for key in sorted(stored_rows.keys() | rebuilt_rows.keys()):
        stored_row, rebuilt_row = stored_rows.get(key), rebuilt_rows.get(key)
        name = f"{where} {label} {key}"
        if stored_row is None:
            report.problems.append(f"{table} {name}: missing (the log rebuilds it)")
        elif rebuilt_row is None:
            report.problems.append(f"{table} {name}: stored, but no event of the log makes it")
        else:
            for column, value in rebuilt_row.items():
                if stored_row[column] == value:
                    continue
                found: list[tuple[str, Any, Any]] = []
                _json_differences(column, stored_row[column], value, found)  # a JSON column: path by path
                for path, stored_value, rebuilt_value in found:
                    report.differs(Difference(table, name, path, stored_value, rebuilt_value))


def _compare_evidence(stream: _Rebuild, stored_messages: dict[str, tuple[str, str, str]], report: VerifyReport) -> None:
    """Each evidence event's hash must be that of stored bytes that still hash to it; no bytes without an event."""
    where = stream.where
    for command_id, facts in stream.evidence.items():
        kept = stored_messages.get(command_id)
        if kept is None:
            report.problems.append(
                f"sent_messages {where} command {command_id}: missing, but v{facts[0][0]} records a message with "
                f"SHA-256 {facts[0][2][:12]}… (the evidence was removed)"
            )
            continue
        message_id, recorded, now = kept
        name = f"{where} command {command_id}"
        for version, event_message_id, sha256 in facts:
            at = f"{name} (as v{version} records)"
            if now != sha256:
                report.differs(Difference("sent_messages", at, "SHA-256 of the stored bytes", now, sha256))
            if recorded != sha256:
                report.differs(Difference("sent_messages", at, "sha256", recorded, sha256))
            if event_message_id and event_message_id != message_id:
                report.differs(Difference("sent_messages", at, "message_id", message_id, event_message_id))
    for command_id in sorted(stored_messages.keys() - stream.evidence.keys()):
        report.warnings.append(
            f"sent_messages {where} command {command_id}: stored bytes that no event records (a notifier stopped "
            "between storing a message and recording its sending: it was not sent)"
        )


# ---------------------------------------------------------------------------------------------------- orphans
_BESIDE_THE_LOG = (invoice_balances, credits, customer_balances, outbox, sent_messages)


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
        _scoped(heads, customer_state, scope).order_by(customer_state.c.tenant, customer_state.c.customer_id)
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
            _scoped(query, table, scope).order_by(table.c.tenant, table.c.customer_id)
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


def _shown(value: Any) -> str:
    text = repr(str(value) if isinstance(value, date | Decimal) else value)
    return text if len(text) <= 160 else text[:157] + "…"
