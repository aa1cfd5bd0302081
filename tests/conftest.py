"""Shared fixtures: a real Kafka-protocol broker, real databases, per-test isolation.

Kafka: DRIFTLINE_TEST_KAFKA_BOOTSTRAP (an external broker), or
DRIFTLINE_TEST_KAFKA=testcontainers (Kafka in Docker), or by default the embedded
tansu broker. PostgreSQL: DRIFTLINE_TEST_POSTGRES_URL (a server URL; each test gets
its own database). With CI=true a missing broker or database fails instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from driftline.embedded.broker import EmbeddedBroker
from driftline.exceptions import BrokerError

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def unavailable(reason: str) -> None:
    if CI:
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("DRIFTLINE_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if os.environ.get("DRIFTLINE_TEST_KAFKA") == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    broker = EmbeddedBroker(log_path=log)
    try:
        bootstrap = broker.start()
    except BrokerError as exc:
        unavailable(f"no Kafka-protocol broker: {exc}")
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic prefix (and consumer group) per test."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = os.environ.get("DRIFTLINE_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    try:
        engine = create_engine(url)
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
    except (SQLAlchemyError, ImportError) as exc:
        unavailable(f"no PostgreSQL at {url}: {exc}")
    return url


@pytest.fixture
def postgres_database(postgres_server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (URL), dropped after the test."""
    with new_postgres_database(postgres_server_url) as url:
        yield url


@contextmanager
def new_postgres_database(postgres_server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on that server (URL), dropped on exit."""
    name = f"driftline_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database dropped after."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_database"))
