"""Index the orders still PENDING, by their last change: the order reconciler's query.

The serving shop asks for stuck orders every few seconds; without this index each ask
reads the whole orders table. Partial: it holds only the few PENDING rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_orders_pending",
        "orders",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status = 'PENDING'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_orders_pending",
        table_name="orders",
        postgresql_where=sa.text("status = 'PENDING'"),
    )
