"""The exact PDF of every letter relance rendered, kept by letter id so an auditor can check its hash.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "letters",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("letter_id", sa.String(128), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("command_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("pdf", sa.LargeBinary, nullable=False),
        sa.Column("pages", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant", "command_id", name="uq_letters_tenant_command_id"),
    )
    op.create_index("ix_letters_tenant_created_at", "letters", ["tenant", "created_at"])
    # Evidence: written once, never changed (as sent_messages).
    if postgres:
        op.execute(
            """
            CREATE FUNCTION relance_letters_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'relance: stored letters are evidence; % on letters is refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER letters_append_only BEFORE UPDATE OR DELETE ON letters "
            "FOR EACH ROW EXECUTE FUNCTION relance_letters_append_only()"
        )
        op.execute(
            "CREATE TRIGGER letters_no_truncate BEFORE TRUNCATE ON letters "
            "FOR EACH STATEMENT EXECUTE FUNCTION relance_letters_append_only()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER letters_append_only_{operation.lower()} BEFORE {operation} ON letters "
                f"BEGIN SELECT RAISE(ABORT, 'relance: stored letters are evidence; {operation} on letters "
                "is refused'); END"
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM letters LIMIT 1")).first() is not None:
        raise RuntimeError("stored letters are evidence: relance does not drop them; restore from a backup instead")
    # No letter was ever kept: going back loses nothing.
    op.drop_index("ix_letters_tenant_created_at", table_name="letters")
    op.drop_table("letters")
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS relance_letters_append_only()")
