"""Deliveries carry their target (as it was when the trigger fired, never a secret) and
their tenant; a lease (owner, expiry) gives each attempt one sender across workers; a
reason for deliveries cancelled (their monitor deleted).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("target", JSON, nullable=True))
        batch.add_column(sa.Column("tenant", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
    # Deliveries recorded before: the tenant of their monitor (if it still exists); their
    # target stays unknown (the relay looks it up among the configured monitors).
    op.execute(
        "UPDATE deliveries SET tenant = (SELECT tenant FROM monitors"
        " WHERE monitors.model_id = deliveries.model_id)"
    )
    op.create_index("ix_deliveries_tenant", "deliveries", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_tenant", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        for name in ("reason", "lease_expires_at", "lease_owner", "tenant", "target"):
            batch.drop_column(name)
