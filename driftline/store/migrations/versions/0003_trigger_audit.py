"""Trigger audit: episodes, status, source and severity of triggers; every delivery
attempt; Kubeflow run ids and Kafka offsets of deliveries; Alertmanager notifications.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 20:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("triggers") as batch:
        batch.add_column(sa.Column("episode_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("severity", sa.String(64), nullable=True))
    op.execute(
        "UPDATE triggers SET episode_id = trigger_id, status = 'fired', source = 'drift',"
        " severity = 'warning'"
    )
    with op.batch_alter_table("triggers") as batch:
        for name in ("episode_id", "status", "source", "severity"):
            batch.alter_column(name, nullable=False)
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("external_id", sa.Text(), nullable=True))
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("latency_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id"])
    op.create_table(
        "alert_notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model_id", sa.String(256), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("trigger_id", sa.String(64), nullable=True),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint", "starts_at", "status"),
    )


def downgrade() -> None:
    op.drop_table("alert_notifications")
    op.drop_index("ix_delivery_attempts_delivery_id", "delivery_attempts")
    op.drop_table("delivery_attempts")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("external_id")
    with op.batch_alter_table("triggers") as batch:
        for name in ("severity", "source", "status", "episode_id"):
            batch.drop_column(name)
