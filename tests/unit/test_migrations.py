"""Schema migrations: they build exactly the models' schema, and run once under concurrency."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from driftline.cli import cli
from driftline.exceptions import StoreError
from driftline.store import Store
from driftline.store.migrate import _config, current_revision, head_revision, upgrade
from driftline.store.models import Base
from driftline.store.repository import create_store_engine


def test_migrations_build_exactly_the_models_schema(database_url: str) -> None:
    engine = create_store_engine(database_url)
    upgrade(engine)
    upgrade(engine)  # again: nothing to do
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_concurrent_upgrades_run_once(database_url: str) -> None:
    errors: list[BaseException] = []

    def start_worker() -> None:
        try:
            Store.connect(database_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    engine = create_store_engine(database_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_models_deleted_before_they_were_remembered_are_taken_for_deleted(
    database_url: str,
) -> None:
    """Upgrading a database whose deliveries outlived their monitor: none of them is sent."""
    engine = create_store_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(_config(connection), "0009")
        connection.execute(
            text(
                "INSERT INTO monitors (model_id, spec, updated_at, tenant, source,"
                " paused, version) VALUES ('kept', '{}', :now, 'team-a', 'api', false, 1)"
            ),
            {"now": "2026-01-01 00:00:00"},
        )
        for number, model in enumerate(["kept", "gone", "gone"]):
            connection.execute(
                text(
                    "INSERT INTO deliveries (trigger_id, model_id, target_type, target_url,"
                    " status, attempts, next_attempt_at, created_at, tenant)"
                    " VALUES (:trigger, :model, 'webhook', 'http://x', 'pending', 0, :now,"
                    " :now, 'team-b')"
                ),
                {"trigger": f"t{number}", "model": model, "now": "2026-01-01 00:00:00"},
            )
    upgrade(engine)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT model_id, tenant FROM deleted_monitors")).all()
    assert [tuple(row) for row in rows] == [("gone", "team-b")]
    engine.dispose()


def test_a_database_from_before_migrations_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with pytest.raises(StoreError, match="no migration history"):
        upgrade(engine)
    engine.dispose()


def test_db_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    runner = CliRunner()
    missing = runner.invoke(cli, ["db", "current"])  # it does not create the database
    assert missing.exit_code != 0
    assert "no driftline database at" in str(missing.exception)
    assert not (tmp_path / "cli.db").exists()
    result = runner.invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0
    assert f"schema at {head_revision()} (was empty)" in result.output
    assert f"database: {head_revision()}" in runner.invoke(cli, ["db", "current"]).output
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM window_reports")).scalar() == 0
    engine.dispose()
