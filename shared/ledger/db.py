"""Engines for the ledger database, tuned per backend; nothing connects until first use.

The backend is PostgreSQL or SQLite, nothing else. Code that must write one statement two ways asks
:func:`is_postgres`, and takes its INSERT with ON CONFLICT clauses from :func:`dialect_insert`, so that the switch
between the two lives here once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

# A server that answered and refused: no retry cures these, the settings must change. psycopg 3 reports a refused
# connection without its SQLSTATE, so the server's (English) message is matched as well.
REFUSED_SQLSTATES = {
    "28P01": "wrong password",
    "28000": "the role may not connect",
    "3D000": "no such database",
    "42501": "the role lacks the CONNECT privilege",
}
_REFUSALS = (
    (re.compile(r"password authentication failed for user \"([^\"]*)\""), "wrong password for role {0}"),
    (re.compile(r"no password supplied"), "the server wants a password and the URL has none"),
    (re.compile(r"role \"([^\"]*)\" does not exist"), "role {0} does not exist"),
    (re.compile(r"role \"([^\"]*)\" is not permitted to log in"), "role {0} may not log in"),
    (re.compile(r"no pg_hba\.conf entry for host [^,]*, user \"([^\"]*)\""), "pg_hba.conf lets no such role {0} in"),
    (re.compile(r"database \"([^\"]*)\" does not exist"), "database {0} does not exist"),
    (re.compile(r"permission denied for database \"?([^\"\s]*)"), "the role may not connect to database {0}"),
    (re.compile(r"unable to open database file"), "SQLite cannot open or create the file (does its folder exist?)"),
)


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)
        _sqlite_write_transactions(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # No server-side prepared statements: a plan prepared while a table was nearly empty (a sequential scan) would
    # be kept as the table grows, and ledger queries are cheap to plan.
    connect_args = {"prepare_threshold": None, **kwargs.pop("connect_args", {})}
    # JSON columns read with orjson, not the standard library: it decodes what PostgreSQL returns as json.loads does
    # but for integers past 64 bits, which the ledger never holds (its rows are written with orjson, which refuses
    # them, :mod:`shared.ledger.bulk`). Loading 2,000 escalated states: 3.1-3.9 s before, 2.7-2.9 s after.
    kwargs.setdefault("json_deserializer", orjson.loads)
    return create_engine(url, connect_args=connect_args, **kwargs)


def _sqlite_write_transactions(engine: Engine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE so concurrent writers queue instead of failing mid-transaction."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below drive transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def connection_refusal(exc: BaseException) -> str | None:
    """Why the database refused this connection for good (credentials, role, database name), or None.

    None covers what may pass by itself (a server starting, down, or out of connections): the caller retries that.
    Errors of a write on an open connection are read by :func:`shared.ledger.refusal.classify` instead.
    """
    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None)
    message = str(orig)
    for pattern, reason in _REFUSALS:
        found = pattern.search(message)
        if found:
            return reason.format(*found.groups())
    if sqlstate in REFUSED_SQLSTATES:
        return REFUSED_SQLSTATES[sqlstate]
    return None


def is_postgres(bind: Engine | Connection) -> bool:
    """Whether the engine or connection talks to PostgreSQL; else it talks to SQLite."""
    return bind.dialect.name == "postgresql"


def dialect_insert(bind: Engine | Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` in the backend's own dialect, the one that takes ``on_conflict_do_nothing`` and
    ``on_conflict_do_update`` (both dialects spell ON CONFLICT alike for what relance uses)."""
    return postgresql.insert(table) if is_postgres(bind) else sqlite.insert(table)


def has_row_locks(bind: Engine | Connection) -> bool:
    """Whether ``SELECT ... FOR UPDATE`` locks rows: on PostgreSQL. SQLite has no row locks and needs none, since
    each write transaction begins IMMEDIATE (see :func:`make_engine`) and so is the only writer until it ends."""
    return is_postgres(bind)


def by_tenant(keys: Iterable[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """(tenant, second) pairs grouped by tenant, in sorted order, in chunks small enough for one IN list."""
    grouped: dict[str, list[str]] = {}
    for tenant, second in sorted(keys):
        grouped.setdefault(tenant, []).append(second)
    for tenant, values in grouped.items():
        for start in range(0, len(values), 5000):
            yield tenant, values[start : start + 5000]
