"""The models of deliveries without a monitor are taken for deleted monitors (deleted
before they were remembered), so that none of their deliveries is sent; deliveries are
found by model.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO deleted_monitors (model_id, tenant, deleted_at)"
        " SELECT model_id, COALESCE(MAX(tenant), 'default'), CURRENT_TIMESTAMP"
        " FROM deliveries"
        " WHERE model_id NOT IN (SELECT model_id FROM monitors)"
        " AND model_id NOT IN (SELECT model_id FROM deleted_monitors)"
        " GROUP BY model_id"
    )
    op.create_index("ix_deliveries_model_id", "deliveries", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_model_id", "deliveries")
