"""What the writer looks up for a batch (its streams' versions, its event ids in the log), in one statement each.

On PostgreSQL the keys travel as two array parameters (``unnest``), so the statement text is the same whatever
the batch holds: no hundreds of placeholders for the driver to split and the server to parse at every batch, and
one statement for all tenants. SQLite, in-process, runs :mod:`shared.ledger.reader`'s portable versions.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

from shared.ledger import reader
from shared.ledger.db import is_postgres
from shared.ledger.reader import Known
from shared.ledger.records import Incoming, StreamKey

_HEADS = (
    "SELECT s.tenant, s.customer_id, s.version FROM customer_state AS s "
    "JOIN unnest(CAST(:tenants AS text[]), CAST(:customers AS text[])) AS k(tenant, customer_id) "
    "ON s.tenant = k.tenant AND s.customer_id = k.customer_id ORDER BY s.tenant, s.customer_id"
)
_KNOWN = (
    "SELECT e.tenant, e.event_id, f.fingerprint FROM events AS e "
    "JOIN unnest(CAST(:tenants AS text[]), CAST(:event_ids AS text[])) AS k(tenant, event_id) "
    "ON e.tenant = k.tenant AND e.event_id = k.event_id "
    "LEFT JOIN event_fingerprints AS f ON f.tenant = e.tenant AND f.event_id = e.event_id"
)


def heads(conn: Connection, keys: Sequence[StreamKey], *, lock: bool = False) -> dict[StreamKey, int]:
    """The versions of those streams that exist; with ``lock``, their head rows are locked in key order (see
    :func:`shared.ledger.reader.heads`)."""
    if not is_postgres(conn):
        return reader.heads(conn, keys, lock=lock)
    if not keys:
        return {}
    statement = _HEADS + (" FOR UPDATE OF s" if lock else "")
    rows = conn.execute(text(statement), {"tenants": [t for t, _ in keys], "customers": [c for _, c in keys]})
    return {(t, c): v for t, c, v in rows}


def known_in_log(conn: Connection, items: Sequence[Incoming]) -> Known:
    """The items' event ids that the log holds, with their fingerprints (None for an event without one)."""
    if not is_postgres(conn):
        return reader.known_in_log(conn, items)
    wanted = sorted({item.key for item in items})
    if not wanted:
        return {}
    rows = conn.execute(text(_KNOWN), {"tenants": [t for t, _ in wanted], "event_ids": [e for _, e in wanted]})
    return {(t, e): fingerprint for t, e, fingerprint in rows}
