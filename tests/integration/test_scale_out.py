"""Two workers share 8 models over 4 partitions; one is killed; the other finishes exactly."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from confluent_kafka import Producer

from driftline.embedded.process import WorkerProcess
from driftline.embedded.traffic import TrafficModel
from driftline.monitoring import build_monitor
from driftline.replay import Replay, read_events
from driftline.schemas.monitors import load_monitors
from driftline.schemas.reports import DriftReport
from driftline.stream.topics import Topics, ensure_topics
from tests.integration.test_recovery import START, Store, wait_for
from tests.unit.helpers import assert_same_reports

pytestmark = pytest.mark.integration
MODELS = [f"model-{i}" for i in range(8)]
PARTITIONS = 4


def plan(directory: Path) -> tuple[Path, list[tuple[int, bytes]]]:
    """The monitors file, and (partition, message) pairs: model i lives on partition i % 4."""
    pq.write_table(
        pa.table(TrafficModel().sample(np.random.default_rng(1), 4000)),
        directory / "reference.parquet",
    )
    monitors = directory / "monitors.yaml"
    monitors.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "model_id": model,
                        "reference": {"path": "reference.parquet"},
                        "window": {"duration": "2m", "panes": 2, "min_events": 50},
                    }
                    for model in MODELS
                ]
            }
        )
    )
    rng = np.random.default_rng(4)
    out = []
    for minute in range(10):
        for i, model in enumerate(MODELS):
            traffic = TrafficModel(drifted=minute >= 5 and i % 2 == 0)
            ts = np.sort(rng.uniform(START + 60 * minute, START + 60 * (minute + 1), 100))
            rows = traffic.rows(rng, 100, ts, minute * 1000)
            for chunk in range(0, 100, 25):
                body = {"model_id": model, "events": rows[chunk : chunk + 25]}
                out.append((i % PARTITIONS, orjson.dumps(body)))
    return monitors, out


def metric(api: str, prefix: str) -> float:
    """The sum of a metric's samples on a worker's /metrics."""
    with urllib.request.urlopen(f"{api}/metrics", timeout=10) as response:
        return sum(
            float(line.split()[-1])
            for line in response.read().decode().splitlines()
            if line.startswith(prefix)
        )


def processed(api: str) -> float:
    return metric(api, "driftline_events_processed_total{")


def assigned(api: str) -> float:
    return metric(api, "driftline_assigned_partitions ")


def test_two_workers_share_models_and_one_takes_over(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    monitors, sent = plan(tmp_path)
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(m for _, m in sent) + b"\n")
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics.all(), PARTITIONS)
    database = f"sqlite:///{tmp_path / 'driftline.db'}"

    def settings(name: str) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "TOPIC_PREFIX": topic_prefix,
            "CONSUMER_GROUP": topic_prefix,
            "MONITORS_PATH": str(monitors),
            "DATABASE_URL": database,
            "DATA_DIR": str(tmp_path / name),
            "SESSION_TIMEOUT_S": "6",
            "BATCH_SIZE": "8",
            "BATCH_TIMEOUT_S": "0.05",
            "LOG_LEVEL": "info",
        }

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "log.connection.close": False})
    half = len(sent) // 2
    store = Store(database)
    first = WorkerProcess(settings("a"), tmp_path / "a.log").start()
    second = WorkerProcess(settings("b"), tmp_path / "b.log").start()
    try:
        # Produce once the group is stable, so that both workers get partitions with work.
        wait_for(
            lambda: (
                assigned(first.api) >= 1
                and assigned(second.api) >= 1
                # predictions and labels: partition N of both go to the same worker
                and assigned(first.api) + assigned(second.api) == 2 * PARTITIONS
            ),
            second,
            90,
        )
        for partition, value in sent[:half]:
            producer.produce(topics.predictions, value=value, partition=partition)
        producer.flush(30)
        wait_for(lambda: processed(first.api) > 0 and processed(second.api) > 0, second, 90)
        first.kill()
        for partition, value in sent[half:]:
            producer.produce(topics.predictions, value=value, partition=partition)
        producer.flush(30)
        del producer
        last = {p: sum(1 for q, _ in sent if q == p) - 1 for p in range(PARTITIONS)}
        wait_for(lambda: store.offsets() == last, second, 120)
    finally:
        first.stop()
        assert second.stop() == 0, second.log_tail()
    # The survivor took over the killed worker's partitions from their snapshots. How many
    # models a snapshot holds depends on how far the killed worker got (1 or 2 per partition).
    assert re.search(
        r"restored [12] model\(s\), resuming after offset \d+", (tmp_path / "b.log").read_text()
    )
    specs = load_monitors(monitors).models
    replay = Replay({spec.model_id: build_monitor(spec) for spec in specs})
    expected = [
        r for r in replay.run(read_events(tmp_path / "events.jsonl")) if isinstance(r, DriftReport)
    ]
    stored = store.reports("model_id, window_end")
    assert_same_reports(stored, sorted(expected, key=lambda r: (r.model_id, r.window_end)))
    assert {r.model_id for r in stored} == set(MODELS)
    store.engine.dispose()
