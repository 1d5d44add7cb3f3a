"""Why the database refused a write: the data, an outage, a lost race, or something a person must fix.

The ledger must tell these apart, because each calls for something else:

- **data**: the rows themselves break a rule of the database (SQLSTATE class 22 *data exception*, such as a NUL
  character in JSON, 22P05, or a balance beyond ``numeric(24,6)``, 22003; class 23 *integrity constraint violation*
  other than the races below; class 54 *program limit exceeded*, such as an index row too large). Retrying can never
  cure it: the writer must find the culprit and set it aside (ingest dead-letters it with kind ``storage``).
- **outage**: the database cannot do the work right now (class 08 *connection exception*, 53 *insufficient
  resources* such as a full disk, 57 *operator intervention* such as a shutdown or a statement timeout, 58 *system
  error*, 55 *object not in prerequisite state* such as a lock timeout, 25 *invalid transaction state* such as a
  read-only standby after a fail-over, a lost connection, a timeout). Retry with backoff.
- **conflict**: another writer won a race (40001 serialization failure, 40P01 deadlock, a unique violation on the
  log's stream version or event id). Retry at once with fresh state.
- **attention**: anything else (class 42 such as an undefined table or a missing grant, 0A, 28, 3D, XX *internal
  error*, a trigger refusing to change the log): a schema out of step with the code, a role without its grants, a
  damaged database. Neither the data's fault nor cured by waiting alone: a person must act. It is retried with
  backoff meanwhile (and logged as an error), so nothing is dead-lettered for a fault of the database's own.

SQLite (the embedded default) has no SQLSTATE; its result codes (``sqlite_errorcode``) are mapped the same way.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Literal

import psycopg
from sqlalchemy.exc import DBAPIError

Cause = Literal["data", "outage", "conflict", "attention"]

# Unique constraints whose violation means a concurrent writer appended first (see Ledger.record).
RACE_CONSTRAINTS = frozenset(
    {"uq_events_stream_version", "uq_events_tenant_event_id", "customer_state_pkey", "event_fingerprints_pkey"}
)
_RACE_TABLES = ("events.", "customer_state.", "event_fingerprints.")

_DATA_CLASSES = frozenset({"22", "23", "54"})
_OUTAGE_CLASSES = frozenset({"08", "25", "53", "55", "57", "58"})
_CONFLICT_STATES = frozenset({"40001", "40P01"})

# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CONSTRAINT = 5, 6, 19
_SQLITE_DATA = frozenset({18, 20})  # TOOBIG, MISMATCH
_SQLITE_OUTAGE = frozenset({7, 8, 9, 10, 13, 14, 15})  # NOMEM, READONLY, INTERRUPT, IOERR, FULL, CANTOPEN, PROTOCOL
_SQLITE_CONSTRAINT_TRIGGER = 1811  # RAISE(ABORT) in a trigger: the append-only guard

_COPY_CONTEXT = re.compile(r"COPY (\w+), line \d+, column (\w+)")
_STAGE = re.compile(r"^relance_stage_(\w+)_[0-9a-f]{8}$")  # shared/ledger/bulk.py's temporary tables
_SQLITE_WHERE = re.compile(r"constraint failed: ([\w.]+)")


@dataclass(frozen=True, slots=True)
class Refusal:
    cause: Cause
    code: str | None  # "SQLSTATE 22003" on PostgreSQL, "SQLITE_FULL" on SQLite, None if the driver gave none
    condition: str  # the driver's name for it, e.g. NumericValueOutOfRange
    message: str  # the database's message, first line and detail
    where: str | None = None  # table.column when the database said

    def describe(self) -> str:
        """One line for a log or a dead-letter header: where, what, and the code to look up."""
        tag = ", ".join(part for part in (self.code, self.condition) if part)
        return f"{self.where + ': ' if self.where else ''}{self.message} ({tag})"


def classify(exc: DBAPIError) -> Refusal:
    """Read a driver error wrapped by SQLAlchemy; see the module docstring for what each cause means."""
    orig = exc.orig
    if isinstance(orig, psycopg.Error):
        return _postgresql(exc, orig)
    if isinstance(orig, sqlite3.Error):
        return _sqlite(exc, orig)
    message = _first_line(str(orig or exc))
    return Refusal(_by_class(exc), None, type(orig or exc).__name__, message)


def _postgresql(exc: DBAPIError, orig: psycopg.Error) -> Refusal:
    sqlstate = orig.sqlstate
    diag = orig.diag
    message = _first_line(diag.message_primary or str(orig))
    if diag.message_detail:
        message = f"{message} ({diag.message_detail.rstrip('.')})"
    where = _postgresql_where(diag.context, diag.table_name, diag.column_name, diag.constraint_name)
    condition = type(orig).__name__
    if exc.connection_invalidated:
        return Refusal("outage", _sqlstate(sqlstate), condition, message, where)
    if sqlstate is None:
        # Raised by psycopg itself before the server saw anything: a NUL in a text value is a DataError.
        return Refusal(_by_class(exc), None, condition, message, where)
    if sqlstate in _CONFLICT_STATES:
        cause: Cause = "conflict"
    elif sqlstate == "23505" and (diag.constraint_name is None or diag.constraint_name in RACE_CONSTRAINTS):
        cause = "conflict"
    elif sqlstate[:2] in _DATA_CLASSES:
        cause = "data"
    elif sqlstate[:2] in _OUTAGE_CLASSES or sqlstate.startswith("40"):
        cause = "outage"
    else:
        cause = "attention"
    return Refusal(cause, _sqlstate(sqlstate), condition, message, where)


def _sqlstate(sqlstate: str | None) -> str | None:
    return f"SQLSTATE {sqlstate}" if sqlstate else None


def _postgresql_where(context: str | None, table: str | None, column: str | None, constraint: str | None) -> str | None:
    found = _COPY_CONTEXT.search(context or "")
    if found:
        table, column = found.group(1), found.group(2)
    if table:
        stage = _STAGE.match(table)
        table = stage.group(1) if stage else table
        return f"{table}.{column}" if column else table
    return constraint


def _sqlite(exc: DBAPIError, orig: sqlite3.Error) -> Refusal:
    extended: int | None = getattr(orig, "sqlite_errorcode", None)
    name: str | None = getattr(orig, "sqlite_errorname", None)
    message = _first_line(str(orig))
    found = _SQLITE_WHERE.search(message)
    where = found.group(1) if found else None
    if extended is None:
        if "database is locked" in message:
            return Refusal("conflict", None, type(orig).__name__, message)
        return Refusal(_by_class(exc), None, type(orig).__name__, message, where)
    primary = extended & 0xFF
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        cause: Cause = "conflict"
    elif primary == _SQLITE_CONSTRAINT:
        if extended == _SQLITE_CONSTRAINT_TRIGGER:
            cause = "attention"
        elif "UNIQUE" in message and where is not None and where.startswith(_RACE_TABLES):
            cause = "conflict"
        else:
            cause = "data"
    elif primary in _SQLITE_DATA:
        cause = "data"
    elif primary in _SQLITE_OUTAGE:
        cause = "outage"
    else:
        cause = "attention"
    return Refusal(cause, name, type(orig).__name__, message, where)


def _by_class(exc: DBAPIError) -> Cause:
    """The driver gave no code: go by the DB-API exception class."""
    from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError

    if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
        return "outage"
    if isinstance(exc, DataError | IntegrityError):
        return "data"
    return "attention"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
