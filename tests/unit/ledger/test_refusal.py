"""How a refusal of SQLite (the embedded default, run in-process: a real database) is read: data, race or attention."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from shared.ledger.refusal import Refusal, classify


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE events (tenant TEXT, event_id TEXT NOT NULL, UNIQUE (tenant, event_id))"))
        conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL CHECK (length(body) < 5))"))
        conn.execute(text("CREATE TRIGGER guard BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'append-only'); END"))
        conn.execute(text("INSERT INTO events VALUES ('acme-fr', 'E-1')"))
    yield engine
    engine.dispose()


def refusal_of(engine: Engine, statement: str) -> Refusal:
    with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
        conn.execute(text(statement))
    return classify(caught.value)


def test_a_row_breaking_a_constraint_is_the_data_s_fault_and_names_the_column(engine: Engine) -> None:
    refusal = refusal_of(engine, "INSERT INTO notes (body) VALUES (NULL)")
    assert (refusal.cause, refusal.code, refusal.where) == ("data", "SQLITE_CONSTRAINT_NOTNULL", "notes.body")
    assert "notes.body" in refusal.describe() and "SQLITE_CONSTRAINT_NOTNULL" in refusal.describe()
    assert refusal_of(engine, "INSERT INTO notes (body) VALUES ('too long')").cause == "data"


def test_a_unique_violation_on_the_log_is_a_lost_race_to_retry(engine: Engine) -> None:
    assert refusal_of(engine, "INSERT INTO events VALUES ('acme-fr', 'E-1')").cause == "conflict"


def test_a_schema_out_of_step_or_a_guard_trigger_needs_a_person(engine: Engine) -> None:
    missing = refusal_of(engine, "INSERT INTO customer_balances VALUES (1)")
    assert missing.cause == "attention" and "no such table" in missing.message
    assert refusal_of(engine, "DELETE FROM events").cause == "attention"
