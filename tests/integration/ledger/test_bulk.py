"""Bulk writes report database errors the way SQLAlchemy does, so the ledger can tell a lost race from a bad row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError

from shared.ledger.bulk import insert_rows
from shared.ledger.db import make_engine
from shared.ledger.schema import events

pytestmark = pytest.mark.integration


def test_a_clash_during_copy_is_an_integrity_error_with_its_sqlstate(pg_url: str) -> None:
    # Given two log rows of one stream claiming the same event id
    now = datetime.now(UTC)
    row = {
        "tenant": "acme-fr",
        "customer_id": "C-1",
        "version": 1,
        "event_id": "E-1",
        "event_type": "invoice.due_date_passed",
        "data": {},
        "metadata": {},
        "occurred_at": now,
        "recorded_at": now,
        "prev_hash": "0" * 64,
        "hash": "1" * 64,
    }
    engine = make_engine(pg_url)
    try:
        # When they are written with COPY, Then the unique violation surfaces as SQLAlchemy's IntegrityError
        with pytest.raises(IntegrityError) as raised, engine.begin() as conn:
            insert_rows(conn, events, [row, {**row, "version": 2}])
        assert raised.value.orig is not None and getattr(raised.value.orig, "sqlstate", None) == "23505"
    finally:
        engine.dispose()
