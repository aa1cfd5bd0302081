"""Durable state through SQLAlchemy 2: SQLite by default, PostgreSQL in production."""

from driftline.store.repository import DeliveryRow, Snapshot, Store

__all__ = ["DeliveryRow", "Snapshot", "Store"]
