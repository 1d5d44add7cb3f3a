"""The two PostgreSQL roles relance runs with: the owner that migrates, and the runtime role the workers use.

The owner (the role ``relance db upgrade`` connects as) creates and alters the tables, so it can also switch the
log's protection off: ``ALTER TABLE events DISABLE TRIGGER``, ``DROP TRIGGER``, ``TRUNCATE``. The workers must not be
able to. They connect as a separate **runtime role** that owns nothing and holds only the privileges below: on the
log and the evidence it may read and append, never change; on the projections and delivery state what the code
needs. A table some migration adds must get its line in :data:`RUNTIME_GRANTS` (a test fails until it has one).

:func:`grant_runtime` (run by ``relance db upgrade --runtime-role NAME``) creates the role if it does not exist, then
revokes whatever it holds on the schema's tables and sequences and grants exactly this map again, so a privilege
granted by hand, or one dropped from the map, does not linger. Tables and sequences created later by the owner are
readable (``ALTER DEFAULT PRIVILEGES``) but not writable until the next upgrade grants them.

SQLite has no roles: a file's permissions are all there is, and the triggers remain the only guard of the log.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager

import structlog
from psycopg import sql
from sqlalchemy import Connection, text

from shared.config import ConfigurationError
from shared.ledger.db import is_postgres, make_engine

log = structlog.get_logger()

# Table -> what the runtime role may do with it. The one place to change when a migration adds a table.
RUNTIME_GRANTS: dict[str, tuple[str, ...]] = {
    # The log and the evidence: read and append, never change or remove.
    "events": ("SELECT", "INSERT"),
    "event_fingerprints": ("SELECT", "INSERT"),
    "sent_messages": ("SELECT", "INSERT"),
    "letters": ("SELECT", "INSERT"),
    # Signed checkpoints (`relance checkpoint write`): appended, never changed; the signing key is not in the database.
    "checkpoints": ("SELECT", "INSERT"),
    # Projections, written in the appending transaction (upserts; the head rows are locked FOR UPDATE).
    "customer_state": ("SELECT", "INSERT", "UPDATE"),
    "invoice_balances": ("SELECT", "INSERT", "UPDATE"),
    "credits": ("SELECT", "INSERT", "UPDATE"),
    "customer_balances": ("SELECT", "INSERT", "UPDATE"),
    # Delivery state: the relay and the webhook mark commands published or dead, timers are claimed and cleared,
    # the log follower's cursor moves, the notifier counts its sending budget.
    "outbox": ("SELECT", "INSERT", "UPDATE"),
    "timers": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "cursors": ("SELECT", "INSERT", "UPDATE"),
    "send_budget": ("SELECT", "INSERT", "UPDATE"),
    # What each customer's last evaluation saw (escalation's sweeps skip the unchanged), replaced or forgotten.
    "evaluations": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    # The workspace's people: users are added, renamed, given a password or disabled, never deleted; a role is
    # granted or revoked (revoked_at), never deleted; sessions and tokens are revoked, and expired sessions purged;
    # failed sign-ins are forgotten once out of the rate limit's window or after a successful sign-in.
    "users": ("SELECT", "INSERT", "UPDATE"),
    "user_roles": ("SELECT", "INSERT", "UPDATE"),
    "sessions": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "api_tokens": ("SELECT", "INSERT", "UPDATE"),
    "login_failures": ("SELECT", "INSERT", "DELETE"),
    # Background jobs: enqueued, claimed, their progress and outcome recorded; never deleted.
    "jobs": ("SELECT", "INSERT", "UPDATE"),
    # The schema revision, which every worker checks at start-up.
    "alembic_version": ("SELECT",),
}

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RoleError(ConfigurationError):
    """The runtime role cannot be set up as asked (a name that is not one, a role that would keep too much power)."""


def runtime_grants(
    role: str, database: str, schema: str = "public", tables: Collection[str] | None = None
) -> list[str]:
    """The statements that give ``role`` exactly its privileges, as :func:`grant_runtime` runs them (and the README
    shows them), for a database and schema already migrated by the owner; ``tables``: those that exist (default all)."""
    who, where = _ident(role), _ident(schema)
    statements = [
        f"GRANT CONNECT, TEMPORARY ON DATABASE {_ident(database)} TO {who}",  # TEMPORARY: bulk writes stage rows
        f"GRANT USAGE ON SCHEMA {where} TO {who}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {where} FROM {who}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {where} FROM {who}",
    ]
    statements += [
        f"GRANT {', '.join(privileges)} ON {where}.{_ident(table)} TO {who}"
        for table, privileges in RUNTIME_GRANTS.items()
        if tables is None or table in tables
    ]
    statements += [
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {where} TO {who}",  # events.position and outbox.id
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {where} GRANT SELECT ON TABLES TO {who}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {where} GRANT USAGE ON SEQUENCES TO {who}",
    ]
    return statements


def grant_runtime(url: str, role: str, password: str | None = None) -> list[str]:
    """Create the runtime role if needed (with ``password``, or set it anew) and grant it exactly its privileges.

    Runs as the owner, in one transaction. Returns the tables of the schema that the map does not know (they are
    left readable only), so the caller can say so. Raises :class:`RoleError` if the role would keep more power
    than the map gives: a superuser, the owner itself, a member of the owner's role, or the owner of a table.
    """
    if not ROLE_NAME.fullmatch(role):
        raise RoleError(f"runtime role {role!r} is not a plain role name: lower-case letters, digits and _ only")
    with _owner(url) as conn:
        owner, database, schema = conn.execute(text("SELECT current_user, current_database(), current_schema()")).one()
        _ensure_role(conn, role, password, owner)
        tables = set(
            conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}).scalars()
        )
        query = text("SELECT tablename FROM pg_tables WHERE schemaname = :s AND tableowner = :r")
        owned = sorted(conn.execute(query, {"s": schema, "r": role}).scalars())
        if owned:
            raise RoleError(
                f"runtime role {role} owns {', '.join(owned)}: it could switch the log's protection off. Give the "
                f"tables to the migration role (ALTER TABLE … OWNER TO {owner}) or choose another runtime role"
            )
        for statement in runtime_grants(role, database, schema, tables):
            conn.exec_driver_sql(statement)
    unknown = sorted(tables - set(RUNTIME_GRANTS))
    log.info("db.runtime_role_granted", role=role, database=database, tables=len(tables) - len(unknown))
    return unknown


def _ensure_role(conn: Connection, role: str, password: str | None, owner: str) -> None:
    if role == owner:
        raise RoleError(
            f"the runtime role must not be the migration role ({owner}): it owns the tables and could switch the "
            "log's protection off. Name another role"
        )
    found = conn.execute(
        text("SELECT rolsuper, pg_has_role(:r, current_user, 'USAGE') FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).one_or_none()
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if found is None:
            statement = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION").format(
                sql.Identifier(role)
            )
            if password:
                statement += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
            try:
                cursor.execute(statement)
            except Exception as exc:
                raise RoleError(
                    f"cannot create the runtime role {role} as {owner} ({str(exc).splitlines()[0]}): create it as an "
                    f"administrator (CREATE ROLE {role} LOGIN PASSWORD '…') and run `relance db upgrade` again"
                ) from exc
            log.info("db.runtime_role_created", role=role)
            return
        superuser, inherits_owner = found
        if superuser or inherits_owner:
            what = "a superuser" if superuser else f"a member of the migration role {owner}"
            raise RoleError(f"runtime role {role} is {what}: it could switch the log's protection off")
        if password:
            cursor.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    finally:
        cursor.close()


@contextmanager
def _owner(url: str) -> Iterator[Connection]:
    engine = make_engine(url)
    try:
        if not is_postgres(engine):
            raise RoleError("SQLite has no roles: a runtime role applies to PostgreSQL only")
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
