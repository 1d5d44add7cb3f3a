"""One read of the whole log (or a tenant's, or a stream's) on one snapshot: what verify and replay walk over.

:func:`read_only` opens one read transaction that sees one instant of the log and of everything written with it
(REPEATABLE READ on PostgreSQL, with JSON decoded by orjson; on SQLite a transaction, which holds the database's
lock while it runs). :func:`scoped` narrows a query to a tenant or a stream. The queries themselves stream their
rows (``stream_results``), so a pass over millions of events holds a batch of rows in memory, never the log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from psycopg.types.json import set_json_loads
from sqlalchemy import Connection, Engine, Table

from shared.ledger.db import is_postgres

Scope = tuple[str | None, str | None]  # (tenant, customer_id), None meaning every one
STREAMED = {"stream_results": True, "yield_per": 2000}  # execution options of a streamed pass


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
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


def scoped(query: Any, table: Table, scope: Scope) -> Any:
    tenant, customer_id = scope
    if tenant is not None:
        query = query.where(table.c.tenant == tenant)
    if customer_id is not None:
        query = query.where(table.c.customer_id == customer_id)
    return query
