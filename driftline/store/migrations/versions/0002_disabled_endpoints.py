"""Disabled endpoints: webhook receivers that answered 410 Gone.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 19:35:52.815649
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "disabled_endpoints",
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("url"),
    )


def downgrade() -> None:
    op.drop_table("disabled_endpoints")
