"""Signed checkpoints of the event log, kept beside their exported copies; written once, never changed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "checkpoints",
        sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("streams", sa.Integer, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("merkle_root", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("document", _json(), nullable=False),
    )
    # Evidence like the log: the database refuses to change or remove a checkpoint (an attacker who can drop the
    # trigger is what the exported copies are for).
    if postgres:
        op.execute(
            """
            CREATE FUNCTION relance_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'relance: checkpoints are evidence; % on checkpoints is refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints "
            "FOR EACH ROW EXECUTE FUNCTION relance_checkpoints_append_only()"
        )
        op.execute(
            "CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints "
            "FOR EACH STATEMENT EXECUTE FUNCTION relance_checkpoints_append_only()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER checkpoints_append_only_{operation.lower()} BEFORE {operation} ON checkpoints "
                f"BEGIN SELECT RAISE(ABORT, 'relance: checkpoints are evidence; {operation} on checkpoints "
                "is refused'); END"
            )


def downgrade() -> None:
    """Only an empty table goes: checkpoints are evidence, and relance never drops one that was written."""
    written = op.get_bind().execute(sa.text("SELECT count(*) FROM checkpoints")).scalar_one()
    if written:
        raise RuntimeError(
            f"checkpoints are evidence: relance does not drop the {written} written; restore from a backup instead"
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE checkpoints")
        op.execute("DROP FUNCTION relance_checkpoints_append_only()")
    else:
        op.drop_table("checkpoints")
