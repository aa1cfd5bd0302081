"""A monitor remembers when it was made, and a delivery when the monitor that fired it
was: one deleted and made again is another monitor, whose deliveries the old one's
triggers must not become. The models of deliveries without a monitor are taken for
deleted monitors (deleted before they were remembered); deliveries are found by model.
Targets' timeouts and attempts are bounded now (an attempt's lease is reckoned from
its timeout): stored monitors and deliveries beyond the bounds are brought within
them, so that they still run and send.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import logging
import math
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

log = logging.getLogger("driftline.store.migrations")

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
#: The bounds of ``driftline.schemas.monitors`` when this revision was written.
MAX_TIMEOUT_S = 3600.0
MAX_ATTEMPTS = 1000


def upgrade() -> None:
    with op.batch_alter_table("monitors") as batch:
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE monitors SET created_at = updated_at")
    with op.batch_alter_table("monitors") as batch:
        batch.alter_column("created_at", nullable=False)
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("monitor_made_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "INSERT INTO deleted_monitors (model_id, tenant, deleted_at)"
        " SELECT model_id, COALESCE(MAX(tenant), 'default'), CURRENT_TIMESTAMP"
        " FROM deliveries"
        " WHERE model_id NOT IN (SELECT model_id FROM monitors)"
        " AND model_id NOT IN (SELECT model_id FROM deleted_monitors)"
        " GROUP BY model_id"
    )
    op.create_index("ix_deliveries_model_id", "deliveries", ["model_id"])
    _bound_targets()


def _bound_targets() -> None:
    connection = op.get_bind()
    monitors = sa.table("monitors", sa.column("model_id", sa.String), sa.column("spec", JSON))
    for model_id, spec in connection.execute(sa.select(monitors.c.model_id, monitors.c.spec)):
        targets = spec.get("targets") if isinstance(spec, dict) else None
        bounded = [_bounded(t) for t in targets] if isinstance(targets, list) else targets
        if bounded != targets:
            log.warning(
                "monitor %s: targets' timeout_s or max_attempts brought within bounds", model_id
            )
            connection.execute(
                monitors.update()
                .where(monitors.c.model_id == model_id)
                .values(spec={**spec, "targets": bounded})
            )
    deliveries = sa.table(
        "deliveries",
        sa.column("id", sa.Integer),
        sa.column("status", sa.String),
        sa.column("target", JSON),
    )
    pending = sa.select(deliveries.c.id, deliveries.c.target).where(
        deliveries.c.status == "pending"
    )
    for delivery_id, target in connection.execute(pending):
        if target is not None and _bounded(target) != target:
            connection.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery_id)
                .values(target=_bounded(target))
            )


def _bounded(target: Any) -> Any:
    """A stored target with its timeout and attempts within the bounds."""
    if not isinstance(target, dict):
        return target
    bounded = dict(target)
    timeout = target.get("timeout_s")
    if isinstance(timeout, int | float) and (math.isnan(timeout) or timeout > MAX_TIMEOUT_S):
        bounded["timeout_s"] = MAX_TIMEOUT_S
    attempts = target.get("max_attempts")
    if isinstance(attempts, int) and attempts > MAX_ATTEMPTS:
        bounded["max_attempts"] = MAX_ATTEMPTS
    return bounded


def downgrade() -> None:
    op.drop_index("ix_deliveries_model_id", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("monitor_made_at")
    with op.batch_alter_table("monitors") as batch:
        batch.drop_column("created_at")
