"""Schema migrations: they build exactly the models' schema, and run once under concurrency."""

from __future__ import annotations

import json
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
from driftline.schemas.monitors import WebhookTarget
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


def test_an_upgrade_keeps_old_monitors_running_and_old_deliveries_of_deleted_ones_unsent(
    database_url: str,
) -> None:
    """Upgrading a database whose deliveries outlived their monitor: none of them is sent."""
    engine = create_store_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(_config(connection), "0009")
        connection.execute(
            text(
                "INSERT INTO monitors (model_id, spec, updated_at, tenant, source,"
                " paused, version) VALUES ('kept', :spec, :now, 'team-a', 'api', false, 1)"
            ),
            {"now": "2026-01-01 00:00:00", "spec": json.dumps({"targets": [LONG, LONG]})},
        )
        for number, model in enumerate(["kept", "gone", "gone"]):
            connection.execute(
                text(
                    "INSERT INTO deliveries (trigger_id, model_id, target_type, target_url,"
                    " status, attempts, next_attempt_at, created_at, tenant, target)"
                    " VALUES (:trigger, :model, 'webhook', 'http://x', 'pending', 0, :now,"
                    " :now, 'team-b', :target)"
                ),
                {
                    "trigger": f"t{number}",
                    "model": model,
                    "now": "2026-01-01 00:00:00",
                    "target": json.dumps(LONG),
                },
            )
    upgrade(engine)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT model_id, tenant FROM deleted_monitors")).all()
        spec, made, updated = connection.execute(
            text("SELECT spec, created_at, updated_at FROM monitors")
        ).one()
        targets = [t for (t,) in connection.execute(text("SELECT target FROM deliveries"))]
    assert [tuple(row) for row in rows] == [("gone", "team-b")]
    # Targets valid before their bounds: brought within them, so they still run and send.
    bounded = {**LONG, "timeout_s": 3600.0, "max_attempts": 1000}
    assert _json(spec) == {"targets": [bounded, bounded]}
    assert [_json(t) for t in targets] == [bounded] * 3
    WebhookTarget.model_validate({**bounded, "secret": "whsec_x" * 4})
    assert made == updated  # made when last changed, as far as anyone knows
    engine.dispose()


#: A target as a monitor could have it before targets' bounds.
LONG = {"type": "webhook", "url": "http://x/", "timeout_s": 86400.0, "max_attempts": 5000}


def _json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


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
