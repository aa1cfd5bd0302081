"""Schema migrations (Alembic): applied by ``driftline db upgrade`` and at worker start.

Several workers may start at once: PostgreSQL serialises them with an advisory lock,
SQLite with a lock file next to the database, so each migration runs exactly once.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from driftline.exceptions import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
#: Any fixed 64-bit number: the PostgreSQL advisory lock key of driftline migrations.
ADVISORY_LOCK_KEY = 7_242_018_113


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already)."""
    with _exclusive(engine), engine.begin() as connection:
        tables = set(inspect(connection).get_table_names())
        if "alembic_version" not in tables and "window_reports" in tables:
            raise StoreError(
                f"{engine.url!r} has driftline tables but no migration history: it was "
                "created by a development build before migrations. Recreate it."
            )
        command.upgrade(_config(connection), "head")


@contextlib.contextmanager
def _exclusive(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
                connection.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
