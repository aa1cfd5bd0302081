"""Monitor registry: tenant, source (file or API), paused and a version per monitor.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 21:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitors") as batch:
        batch.add_column(sa.Column("tenant", sa.String(128), nullable=True))
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("paused", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE monitors SET tenant = 'default', source = 'file', paused = false, version = 1"
    )
    with op.batch_alter_table("monitors") as batch:
        for name in ("tenant", "source", "paused", "version"):
            batch.alter_column(name, nullable=False)
    op.create_index("ix_monitors_tenant", "monitors", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_monitors_tenant", "monitors")
    with op.batch_alter_table("monitors") as batch:
        for name in ("version", "paused", "source", "tenant"):
            batch.drop_column(name)
