"""Delivery state: outbox rows an adapter gave up on (dead letters), and each tenant's sending budget.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        # When to try a failed delivery again (webhook backoff); NULL: as soon as possible.
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        # Set when an adapter gave up after its last attempt; the row is no longer pending.
        batch.add_column(sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_error", sa.Text, nullable=True))
    # The notifier's rate limit per tenant: messages sent in the current one-minute window, shared by every worker.
    op.create_table(
        "send_budget",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("send_budget")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("last_error")
        batch.drop_column("dead_at")
        batch.drop_column("next_attempt_at")
