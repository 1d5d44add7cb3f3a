"""``relance verify``, part 3: each stream's projections rebuilt from its log and compared with the stored rows; and
the report every part of verify writes to.

:mod:`shared.ledger.verify` walks the log and folds each stream again into a :class:`Rebuild`; what is stored
beside the log (head row and snapshot, ``invoice_balances``, ``credits``, ``customer_balances``, the outbox, the
stored reminder bytes) is read alongside, one streamed query per table in the same stream order (:class:`Stored`),
and as each stream ends :func:`compare_stream` names every difference: table, key, column, stored value and rebuilt
value. No query is sent per stream, and no more than one stream is held in memory. The rebuilt rows are made by
the same builders as the stored ones (:mod:`shared.ledger.projections`, :func:`shared.ledger.outbox.command_rows`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, RowMapping, Table, exists, func, select

from shared.ledger.db import is_postgres
from shared.ledger.outbox import command_rows
from shared.ledger.projections import credit_row, customer_balance_rows, invoice_balance_row
from shared.ledger.records import StreamKey
from shared.ledger.scan import STREAMED, Scope, scoped
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


@dataclass
class Rebuild:
    """One stream being read: its chain checked and its state folded again, event by event."""

    key: StreamKey
    head: dict[str, Any] | None  # the stream's head row, if it has one
    state: CustomerState
    events: int = 0
    position: int = -1  # of the previous event
    snapshot: dict[str, Any] | None = None  # the rebuilt state at the stored snapshot's version
    commands: list[dict[str, Any]] = field(default_factory=list)  # events that cause an outbox row
    evidence: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)  # command_id -> (v, msg id, sha)
    letters: dict[str, tuple[int, str]] = field(default_factory=dict)  # letter_id -> (v of letter.rendered, sha)

    @property
    def snapshot_version(self) -> int | None:
        return None if self.head is None else int(self.head["snapshot_version"])

    @property
    def where(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"


class _Merged:
    """One table's rows in stream order, taken stream by stream as the log's pass reaches each stream.

    The rows are those of streams the log holds (the query says so), in the order the log is read in, so the rows
    ahead always belong to the current stream or a later one: equality alone tells which (no ordering is compared in
    Python, whatever the database's collation). Rows of a stream the log does not hold are the orphans verify checks
    apart.
    """

    def __init__(self, rows: Iterator[RowMapping]) -> None:
        self._rows = rows
        self._ahead = next(rows, None)

    def take(self, key: StreamKey) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while self._ahead is not None and (self._ahead["tenant"], self._ahead["customer_id"]) == key:
            found.append(dict(self._ahead))
            self._ahead = next(self._rows, None)
        return found


class Stored:
    """What is stored beside the log, read alongside it: one streamed query per table, in stream order."""

    def __init__(self, conn: Connection, scope: Scope) -> None:
        def rows(query: Any, table: Table) -> _Merged:
            in_log = exists().where(events.c.tenant == table.c.tenant, events.c.customer_id == table.c.customer_id)
            query = scoped(query.where(in_log), table, scope).order_by(table.c.tenant, table.c.customer_id)
            return _Merged(iter(conn.execute(query, execution_options=STREAMED).mappings()))

        self.postgres = is_postgres(conn)
        self.heads = rows(select(customer_state), customer_state)
        self.invoices = rows(select(invoice_balances), invoice_balances)
        self.credits = rows(select(credits), credits)
        self.balances = rows(select(customer_balances), customer_balances)
        self.commands = rows(select(outbox), outbox)
        m = sent_messages.c
        content = func.encode(func.sha256(m.mime), "hex") if self.postgres else m.mime
        self.messages = rows(
            select(m.tenant, m.customer_id, m.command_id, m.message_id, m.sha256, content.label("now")), sent_messages
        )
        p = letters.c
        pdf = func.encode(func.sha256(p.pdf), "hex") if self.postgres else p.pdf
        self.letters = rows(select(p.tenant, p.customer_id, p.letter_id, p.sha256, pdf.label("now")), letters)

    def head(self, key: StreamKey) -> dict[str, Any] | None:
        """The stream's head row (taken as the stream starts: its snapshot version is needed while folding)."""
        found = self.heads.take(key)
        return found[0] if found else None


def compare_stream(stored: Stored, stream: Rebuild, report: VerifyReport) -> None:
    """Compare the stream, folded to its last event, with every row stored for it."""
    key, state, where = stream.key, stream.state, stream.where
    _compare_head(stream, [] if stream.head is None else [stream.head], report)
    _compare_rows(
        report,
        "invoice_balances",
        where,
        "invoice",
        {r["invoice_id"]: r for r in stored.invoices.take(key)},
        {i.invoice_id: invoice_balance_row(state, i) for i in state.invoices.values()},
    )
    _compare_rows(
        report,
        "credits",
        where,
        "credit",
        {r["credit_key"]: r for r in stored.credits.take(key)},
        {c.key: credit_row(c) for c in state.credits.values()},
    )
    _compare_rows(
        report,
        "customer_balances",
        where,
        "currency",
        {r["currency"]: r for r in stored.balances.take(key)},
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
        {r["command_id"]: r for r in stored.commands.take(key)},
        rebuilt_commands,
    )
    messages = {
        r["command_id"]: (
            r["message_id"],
            r["sha256"],
            r["now"] if stored.postgres else hashlib.sha256(bytes(r["now"])).hexdigest(),
        )
        for r in stored.messages.take(key)
    }
    _compare_evidence(stream, messages, report)
    pdfs = {
        r["letter_id"]: (r["sha256"], r["now"] if stored.postgres else hashlib.sha256(bytes(r["now"])).hexdigest())
        for r in stored.letters.take(key)
    }
    _compare_letters(stream, pdfs, report)


def _compare_head(stream: Rebuild, rows: list[Mapping[str, Any]], report: VerifyReport) -> None:
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


def _compare_evidence(stream: Rebuild, stored_messages: dict[str, tuple[str, str, str]], report: VerifyReport) -> None:
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


def _compare_letters(stream: Rebuild, stored_letters: dict[str, tuple[str, str]], report: VerifyReport) -> None:
    """Each ``letter.rendered`` must name a stored PDF that still hashes to what it recorded; no PDF without one."""
    where = stream.where
    for letter_id, (version, sha256) in stream.letters.items():
        kept = stored_letters.get(letter_id)
        if kept is None:
            report.problems.append(
                f"letters {where} letter {letter_id}: missing, but v{version} records a PDF with SHA-256 "
                f"{sha256[:12]}… (the evidence was removed)"
            )
            continue
        recorded, now = kept
        at = f"{where} letter {letter_id} (as v{version} records)"
        if now != sha256:
            report.differs(Difference("letters", at, "SHA-256 of the stored PDF", now, sha256))
        if recorded != sha256:
            report.differs(Difference("letters", at, "sha256", recorded, sha256))
    for letter_id in sorted(stored_letters.keys() - stream.letters.keys()):
        report.warnings.append(
            f"letters {where} letter {letter_id}: a stored PDF that no letter.rendered records (a notifier stopped "
            "between storing the letter and recording it: it was never handed out)"
        )


def _shown(value: Any) -> str:
    text = repr(str(value) if isinstance(value, date | Decimal) else value)
    return text if len(text) <= 160 else text[:157] + "…"
