"""The exact MIME bytes of every reminder handed to SMTP, kept by Message-ID so an auditor can check their hash.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "sent_messages",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("message_id", sa.String(255), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("command_id", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("mime", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant", "command_id", name="uq_sent_messages_tenant_command_id"),
    )
    # Evidence: written once, never changed.
    if postgres:
        op.execute(
            """
            CREATE FUNCTION relance_sent_messages_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'relance: stored messages are evidence; % on sent_messages is refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER sent_messages_append_only BEFORE UPDATE OR DELETE ON sent_messages "
            "FOR EACH ROW EXECUTE FUNCTION relance_sent_messages_append_only()"
        )
        op.execute(
            "CREATE TRIGGER sent_messages_no_truncate BEFORE TRUNCATE ON sent_messages "
            "FOR EACH STATEMENT EXECUTE FUNCTION relance_sent_messages_append_only()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER sent_messages_append_only_{operation.lower()} BEFORE {operation} ON sent_messages "
                f"BEGIN SELECT RAISE(ABORT, 'relance: stored messages are evidence; {operation} on sent_messages "
                "is refused'); END"
            )


def downgrade() -> None:
    raise RuntimeError("stored messages are evidence: relance does not drop them; restore from a backup instead")
