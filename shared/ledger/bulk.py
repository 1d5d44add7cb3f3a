"""Bulk writes for a batch: one statement per table, whatever the number of rows.

PostgreSQL: the event log is written with COPY, and projections are copied into a temporary stage and upserted
from it with one set-based statement, so a batch of hundreds of events costs a handful of round trips. SQLite runs
in-process, where plain ``executemany`` is as fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import orjson
import psycopg
from sqlalchemy import Connection, Table, bindparam, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import JSON

from shared.ledger.db import is_postgres


def _is_json(column: Any) -> bool:
    return isinstance(column.type, JSON)  # JSONB is a JSON too


def _in_key_order(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows sorted by key (so concurrent writers lock in the same order), and the non-key columns."""
    ordered = sorted(rows, key=itemgetter(*keys))  # a tuple of the key's values, one value for a one-column key
    return ordered, [n for n in ordered[0] if n not in keys]


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Append rows (no conflict handling: a clash must fail the transaction)."""
    if not rows:
        return
    if not is_postgres(conn):
        conn.execute(table.insert(), list(rows))
        return
    _copy(conn, table.name, [c for c in table.columns if c.name in rows[0]], rows)


def _copy(conn: Connection, target: str, columns: Sequence[Any], rows: Sequence[dict[str, Any]]) -> None:
    names = ", ".join(f'"{c.name}"' for c in columns)
    fields = [(c.name, _is_json(c)) for c in columns]
    statement = f"COPY {target} ({names}) FROM STDIN"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    dumps = orjson.dumps
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([dumps(row[name]).decode() if is_json else row[name] for name, is_json in fields])
    except psycopg.Error as exc:
        # COPY runs on the driver's cursor, outside SQLAlchemy: wrap its errors as SQLAlchemy would (IntegrityError,
        # OperationalError, ...), so that callers tell a lost race or an outage from a bad row the same way.
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
    finally:
        cursor.close()


def upsert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """Insert rows, or update every non-key column of the rows that exist. Rows are written in key order."""
    if not rows:
        return
    ordered, updates = _in_key_order(rows, keys)
    names = list(ordered[0])
    if not is_postgres(conn):
        statement = sqlite.insert(table)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=list(keys), set_={n: statement.excluded[n] for n in updates}
            ),
            ordered,
        )
        return
    stage = _stage(conn, table, names, ordered)
    quoted = ", ".join(f'"{n}"' for n in names)
    assignments = ", ".join(f'"{n}" = excluded."{n}"' for n in updates)
    order = ", ".join(f'"{k}"' for k in keys)
    conn.execute(
        text(
            f"INSERT INTO {table.name} ({quoted}) SELECT {quoted} FROM {stage} ORDER BY {order} "
            f"ON CONFLICT ({order}) DO UPDATE SET {assignments}"
        )
    )


def update_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """Update existing rows, matched on ``keys``, in key order."""
    if not rows:
        return
    ordered, updates = _in_key_order(rows, keys)
    names = list(ordered[0])
    if not is_postgres(conn):
        statement = table.update().where(*[table.c[k] == bindparam(f"k_{k}") for k in keys])
        statement = statement.values({n: bindparam(f"v_{n}") for n in updates})
        conn.execute(
            statement, [{**{f"k_{k}": r[k] for k in keys}, **{f"v_{n}": r[n] for n in updates}} for r in ordered]
        )
        return
    stage = _stage(conn, table, names, ordered)
    assignments = ", ".join(f'"{n}" = u."{n}"' for n in updates)
    matches = " AND ".join(f'{table.name}."{k}" = u."{k}"' for k in keys)
    conn.execute(text(f"UPDATE {table.name} SET {assignments} FROM {stage} AS u WHERE {matches}"))


def _stage(conn: Connection, table: Table, names: list[str], rows: Sequence[dict[str, Any]]) -> str:
    """COPY the rows into a temporary table of this connection (emptied at commit and rollback) and return its name.

    COPY is PostgreSQL's fastest way in; the projection is then written with one set-based statement.
    """
    stage = f"relance_stage_{table.name}_{hashlib.sha1(','.join(names).encode()).hexdigest()[:8]}"
    quoted = ", ".join(f'"{n}"' for n in names)
    conn.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS "
            f"AS SELECT {quoted} FROM {table.name} WITH NO DATA"
        )
    )
    _copy(conn, stage, [table.c[n] for n in names], rows)
    return stage
