"""Exact recovery: kill the worker at random points mid-stream (SIGKILL twice, SIGTERM
once), restart, finish, with a snapshot cadence.

Every window report must equal an uninterrupted run's (exact counts), and each drift
episode must produce exactly one trigger and one outbox row (SQLite).
The uninterrupted run is ``driftline replay`` of the same messages, which the e2e test
shows equals the live worker.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from confluent_kafka import Producer
from sqlalchemy import create_engine, text

from driftline.embedded.process import WorkerProcess
from driftline.embedded.traffic import TrafficModel
from driftline.monitoring import build_monitor
from driftline.replay import Replay, read_events
from driftline.schemas.monitors import load_monitors
from driftline.schemas.reports import DriftReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.stream.topics import Topics, ensure_topics
from tests.unit.helpers import SECRET, assert_same_reports

pytestmark = pytest.mark.integration

MODEL = "fraud"
START = 1_700_000_040


def messages() -> list[bytes]:
    """20 minutes, 300 events a minute in batches of 25; drift in minutes 6-10 and 17-19.

    Minutes 11-16 are clean long enough (2 clean 3-minute windows) to close the first
    episode, so the second drift opens a second one.
    """
    rng = np.random.default_rng(8)
    out = []
    for minute in range(20):
        model = TrafficModel(drifted=6 <= minute < 11 or minute >= 17)
        ts = np.sort(rng.uniform(START + 60 * minute, START + 60 * (minute + 1), 300))
        rows = model.rows(rng, 300, ts, minute * 1000)
        for chunk in range(0, 300, 25):
            out.append(
                orjson.dumps(
                    {"model_id": MODEL, "model_version": "v1", "events": rows[chunk : chunk + 25]}
                )
            )
    return out


def configure(directory: Path) -> Path:
    pq.write_table(
        pa.table(TrafficModel().sample(np.random.default_rng(1), 5000)),
        directory / "reference.parquet",
    )
    path = directory / "monitors.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "model_id": MODEL,
                        "reference": {"path": "reference.parquet"},
                        "window": {"duration": "3m", "panes": 3, "min_events": 100},
                        "policy": {"consecutive_windows": 2, "clean_windows_to_close": 2},
                        # Nothing listens: deliveries stay pending; this test counts them.
                        "targets": [
                            {"url": "http://127.0.0.1:9/hook", "secret": SECRET, "timeout_s": 1}
                        ],
                    }
                ]
            }
        )
    )
    return path


class Store:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    def column(self, query: str) -> list[Any]:
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(text(query)).scalars().all())
        except Exception:  # tables not created yet
            return []

    def reports(self, order: str = "window_end") -> list[DriftReport]:
        """Stored window reports, comparable with a replay (which has no reference version)."""
        rows = self.column(f"SELECT report FROM window_reports ORDER BY {order}")
        return [
            DriftReport.model_validate(
                {**(orjson.loads(r) if isinstance(r, str) else r), "reference_version": None}
            )
            for r in rows
        ]

    def offsets(self) -> dict[int, int]:
        """The stored consumer offsets by partition, in one query (a worker can store a
        partition between two)."""
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(text('SELECT partition, "offset" FROM consumer_offsets'))
                return {int(partition): int(offset) for partition, offset in rows}
        except Exception:  # tables not created yet
            return {}

    def offset(self) -> int:
        values = self.column('SELECT "offset" FROM consumer_offsets')
        return int(values[0]) if values else -1


def test_with_a_snapshot_cadence_and_a_graceful_stop(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """State stored every 200 events or 0.5 s (not with every batch), two SIGKILLs and
    one SIGTERM mid-stream: still exact. (SIGKILLs at the default cadence, on SQLite and
    PostgreSQL, with bad input and disorder: tests/reliability, "SIGKILL x3".)"""
    cadence = {"SNAPSHOT_EVERY_EVENTS": "200", "SNAPSHOT_EVERY_S": "0.5"}
    kill_and_finish(
        kafka_bootstrap, topic_prefix, tmp_path, f"sqlite:///{tmp_path / 'store.db'}", cadence
    )


def kill_and_finish(
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    database_url: str,
    extra: dict[str, str],
) -> None:
    monitors = configure(tmp_path)
    sent = messages()
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(sent) + b"\n")
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics.all(), 1)
    settings = crash_test_settings(
        kafka_bootstrap, topic_prefix, monitors, database_url, tmp_path, **extra
    )
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "enable.idempotence": True,
            "log.connection.close": False,
        }
    )
    store = Store(database_url)
    rng = random.Random(3)
    chunks = [sent[i : i + 60] for i in range(0, len(sent), 60)]  # 4 chunks of 60 messages
    produced = 0
    kills = 0
    log = tmp_path / "worker.log"
    for index, chunk in enumerate(chunks):
        worker = WorkerProcess(settings, log).start()
        for value in chunk:
            producer.produce(topics.predictions, key=MODEL, value=value)
        assert producer.flush(30) == 0
        produced += len(chunk)
        if index < len(chunks) - 1:
            # Let it get partway into what is there, then kill it without warning.
            target = produced - rng.randint(5, 40)
            wait_for(lambda t=target: store.offset() >= t, worker, 60)  # type: ignore[misc]
            time.sleep(rng.uniform(0.0, 0.3))
            if index == 1:
                worker.stop()  # SIGTERM: a graceful stop mid-stream must be exact too
            else:
                worker.kill()
            kills += 1
    del producer  # flushed above; its threads stop before the broker does
    wait_for(lambda: store.offset() >= produced - 1, worker, 90)
    assert worker.stop() == 0, worker.log_tail()
    assert kills == 3
    assert "resuming after offset" in log.read_text()

    (spec,) = load_monitors(monitors).models
    replay = Replay({MODEL: build_monitor(spec)})
    expected = list(replay.run(read_events(tmp_path / "events.jsonl")))
    expected_reports = [r for r in expected if isinstance(r, DriftReport)]
    expected_triggers = [t.data.trigger_id for t in expected if isinstance(t, RetrainingEvent)]
    stored = store.reports()
    assert_same_reports(stored, expected_reports)
    assert len(expected_triggers) == 2  # two drift episodes
    assert sorted(store.column("SELECT trigger_id FROM triggers")) == sorted(expected_triggers)
    deliveries = store.column("SELECT trigger_id FROM deliveries")
    assert sorted(deliveries) == sorted(expected_triggers)  # one outbox row per episode
    store.engine.dispose()


def crash_test_settings(
    bootstrap: str, prefix: str, monitors: Path, database_url: str, tmp_path: Path, **extra: str
) -> dict[str, str]:
    """A worker for the crash tests: small batches (kills land mid-stream), no relay."""
    return {
        "KAFKA_BOOTSTRAP": bootstrap,
        "TOPIC_PREFIX": prefix,
        "CONSUMER_GROUP": prefix,
        "MONITORS_PATH": str(monitors),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "data"),
        "SESSION_TIMEOUT_S": "6",
        "BATCH_SIZE": "4",
        "BATCH_TIMEOUT_S": "0.05",
        "RELAY_INTERVAL_S": "3600",
        "LOG_LEVEL": "info",
        **extra,
    }


def wait_for(condition: Any, worker: WorkerProcess, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if worker.returncode is not None:
            pytest.fail(f"worker exited {worker.returncode}:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; worker log:\n{worker.log_tail()}")
        time.sleep(0.05)
