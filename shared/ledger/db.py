"""Engines for the ledger database, tuned per backend; nothing connects until first use."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


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


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
