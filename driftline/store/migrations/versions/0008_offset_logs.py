"""Stored offsets name the log they belong to (the Kafka cluster id and topic id): an
offset of another log (a fresh embedded broker, a topic re-created, another cluster)
is reset, not trusted.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consumer_offsets") as batch:
        batch.add_column(sa.Column("log_id", sa.String(256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consumer_offsets") as batch:
        batch.drop_column("log_id")
