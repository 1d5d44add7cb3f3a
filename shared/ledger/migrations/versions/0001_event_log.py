"""Event log and its projections (customer state, invoice, credit and currency balances); the log is append-only.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _money() -> sa.types.TypeEngine[Any]:
    # SQLite: text, because its NUMERIC affinity would store amounts as binary floats.
    return sa.Numeric(24, 6).with_variant(sa.String(40), "sqlite")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "events",
        sa.Column("position", position, primary_key=True, autoincrement=True),
        sa.Column(
            "tx_id",
            sa.BigInteger,
            nullable=not postgres,
            server_default=sa.text("(pg_current_xact_id()::text::bigint)") if postgres else None,
        ),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("data", _json(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("tenant", "customer_id", "version", name="uq_events_stream_version"),
        sa.UniqueConstraint("tenant", "event_id", name="uq_events_tenant_event_id"),
    )
    op.create_index("ix_events_tx_position", "events", ["tx_id", "position"])
    op.create_table(
        "customer_state",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("snapshot_version", sa.Integer, nullable=False),
        sa.Column("state", _json(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "customer_balances",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("balance", _money(), nullable=False),
        sa.Column("unallocated", _money(), nullable=False),
        sa.Column("open_invoices", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "credits",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("credit_key", sa.String(160), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", _money(), nullable=False),
        sa.Column("received_on", sa.Date, nullable=False),
        sa.Column("unallocated", _money(), nullable=False),
        sa.Column("applied", _json(), nullable=False),
    )
    op.create_table(
        "invoice_balances",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("invoice_id", sa.String(128), primary_key=True),
        sa.Column("number", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", _money(), nullable=False),
        sa.Column("outstanding", _money(), nullable=False),
        sa.Column("issue_date", sa.Date, nullable=False),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("disputed", sa.Boolean, nullable=False),
    )
    op.create_index("ix_invoice_balances_due", "invoice_balances", ["tenant", "status", "due_date"])

    if postgres:
        op.execute(
            """
            CREATE FUNCTION relance_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'relance: the event log is append-only; % on events is refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
            "FOR EACH ROW EXECUTE FUNCTION relance_events_append_only()"
        )
        op.execute(
            "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION relance_events_append_only()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER events_append_only_{operation.lower()} BEFORE {operation} ON events "
                f"BEGIN SELECT RAISE(ABORT, 'relance: the event log is append-only; {operation} on events "
                "is refused'); END"
            )


def downgrade() -> None:
    raise RuntimeError("the event log is evidence: relance does not drop it; restore from a backup instead")
