"""Each event's content fingerprint, so an event_id reused for another event is told from a redelivery.

The log itself is not changed: fingerprints live in their own table, keyed like the log's (tenant, event_id), and
the events recorded before this revision get theirs computed from their stored type, customer, instant and data.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from shared.ledger.hashing import fingerprint

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BATCH = 5000


def _json() -> sa.types.TypeEngine[Any]:
    from sqlalchemy.dialects import postgresql

    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    table = op.create_table(
        "event_fingerprints",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
    )
    assert table is not None
    events = sa.table(
        "events",
        sa.column("position", sa.BigInteger),
        sa.column("tenant", sa.String),
        sa.column("event_id", sa.String),
        sa.column("event_type", sa.String),
        sa.column("customer_id", sa.String),
        sa.column("occurred_at", sa.DateTime(timezone=True)),
        sa.column("data", _json()),
    )
    conn = op.get_bind()
    after = -1
    while True:
        rows = conn.execute(
            sa.select(events).where(events.c.position > after).order_by(events.c.position).limit(_BATCH)
        ).all()
        if not rows:
            return
        conn.execute(
            table.insert(),
            [
                {
                    "tenant": row.tenant,
                    "event_id": row.event_id,
                    "fingerprint": fingerprint(
                        event_type=row.event_type,
                        customer_id=row.customer_id,
                        occurred_at=row.occurred_at,
                        data=row.data,
                    ),
                }
                for row in rows
            ],
        )
        after = rows[-1].position


def downgrade() -> None:
    op.drop_table("event_fingerprints")
