"""Alembic environment: driftline runs migrations on a connection it passes in."""

from __future__ import annotations

from alembic import context

from driftline.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - driftline always passes a connection
    raise RuntimeError("run migrations through `driftline db upgrade` (driftline.store.migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
