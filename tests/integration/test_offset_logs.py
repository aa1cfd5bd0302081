"""Stored offsets belong to the log they were read from: a worker restarted on a fresh
embedded broker (the default setup), or on a topic deleted and re-created, counts every
new event instead of skipping them all as "already counted"; it says so (an ERROR
naming the topic, ``driftline_offset_resets_total``) and keeps the models' windows."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from driftline.embedded.broker import EmbeddedBroker, free_port
from driftline.embedded.process import WorkerProcess
from driftline.embedded.traffic import TrafficModel
from driftline.store import Store
from driftline.stream.topics import Topics, ensure_topics
from tests.integration.test_worker_e2e import metric_values

pytestmark = pytest.mark.integration

MODEL = "fraud"
START = 1_700_000_040


def configure(directory: Path) -> Path:
    pq.write_table(
        pa.table(TrafficModel().sample(np.random.default_rng(1), 3000)),
        directory / "reference.parquet",
    )
    path = directory / "monitors.yaml"
    spec = {
        "model_id": MODEL,
        "reference": {"path": "reference.parquet"},
        # Tumbling 1-minute windows: each event is in exactly one window report.
        "window": {"duration": "1m", "panes": 1, "min_events": 10},
    }
    path.write_text(yaml.safe_dump({"models": [spec]}))
    return path


def minutes(first: int, last: int, seed: int) -> list[bytes]:
    """150 events a minute, minutes ``first`` to ``last``, as EventBatches of 50."""
    rng = np.random.default_rng(seed)
    messages = []
    for minute in range(first, last + 1):
        ts = np.sort(rng.uniform(START + 60 * minute, START + 60 * (minute + 1), 150))
        rows = TrafficModel().rows(rng, 150, ts, minute * 1000)
        for chunk in range(0, 150, 50):
            messages.append(orjson.dumps({"model_id": MODEL, "events": rows[chunk : chunk + 50]}))
    return messages


def produce(bootstrap: str, topic: str, messages: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in messages:
        producer.produce(topic, key=MODEL.encode(), value=value)
    assert producer.flush(30) == 0


def scrape(worker: WorkerProcess) -> str:
    with urllib.request.urlopen(f"{worker.api}/metrics", timeout=5) as response:
        return str(response.read().decode())


def wait_counted(worker: WorkerProcess, expected: int, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    counted = 0.0
    while time.monotonic() < deadline:
        assert worker.returncode is None, worker.log_tail()
        counted = sum(metric_values(scrape(worker), "driftline_events_processed_total").values())
        if counted >= expected:
            assert counted == expected
            return
        time.sleep(0.3)
    pytest.fail(f"{counted} of {expected} events counted; log:\n{worker.log_tail()}")


def window_sizes(database_url: str) -> list[int]:
    """The events of each stored window report (stored by the worker's graceful stop)."""
    store = Store.connect(database_url)
    try:
        return sorted(r["n"] for r in store.reports(MODEL, limit=1000))
    finally:
        store.close()


def errors_about(log: Path, topic: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [
        line
        for line in lines
        if line["level"] == "error"
        and topic in line["message"]
        and "another log" in line["message"]
    ]


def settings_for(directory: Path, database_url: str, prefix: str) -> dict[str, str]:
    return {
        "TOPIC_PREFIX": prefix,
        "CONSUMER_GROUP": prefix,
        "MONITORS_PATH": str(configure(directory)),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(directory / "data"),
        "SESSION_TIMEOUT_S": "6",
        "BATCH_TIMEOUT_S": "0.2",
    }


def test_a_restart_on_a_fresh_embedded_broker_counts_every_new_event(
    database_url: str, tmp_path: Path, topic_prefix: str
) -> None:
    """The default setup (no DRIFTLINE_KAFKA_BOOTSTRAP), stopped and started again with
    the same database: the new broker's log starts at offset 0 again."""
    port = free_port()
    settings = {
        **settings_for(tmp_path, database_url, topic_prefix),
        "EMBEDDED_BROKER_PORT": str(port),
    }
    bootstrap = f"127.0.0.1:{port}"
    topic = Topics(topic_prefix).predictions
    first, second = minutes(0, 3, seed=1), minutes(4, 7, seed=2)
    with WorkerProcess(settings, tmp_path / "run1.log") as worker:
        produce(bootstrap, topic, first)
        wait_counted(worker, 150 * 4)
    assert errors_about(tmp_path / "run1.log", topic) == []  # a new database: nothing to reset
    with WorkerProcess(settings, tmp_path / "run2.log") as worker:
        produce(bootstrap, topic, second)
        wait_counted(worker, 150 * 4)  # before: 0 (every event "already counted")
        resets = metric_values(scrape(worker), "driftline_offset_resets_total")
        assert resets == {(("topic", topic),): 1.0}
    (error,) = errors_about(tmp_path / "run2.log", topic)
    assert "the cluster id changed" in error["message"]
    assert "the models' state is kept" in error["message"]
    # Minutes 0-6 closed, minute 7 open; minute 3 was open when run 1 stopped and went on.
    assert window_sizes(database_url) == [150] * 7


def test_a_topic_deleted_and_recreated_is_read_from_its_start(
    kafka_bootstrap: str, database_url: str, tmp_path: Path, topic_prefix: str
) -> None:
    settings = {
        **settings_for(tmp_path, database_url, topic_prefix),
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
    }
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics.all(), 1)
    with WorkerProcess(settings, tmp_path / "run1.log") as worker:
        produce(kafka_bootstrap, topics.predictions, minutes(0, 3, seed=3))
        wait_counted(worker, 600)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_topics([topics.predictions]).values():
        future.result(15)
    deadline = time.monotonic() + 15
    while topics.predictions in admin.list_topics(timeout=5).topics:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for future in admin.create_topics([NewTopic(topics.predictions, 1, -1)]).values():
        future.result(15)
    produce(kafka_bootstrap, topics.predictions, minutes(4, 7, seed=4))  # before the restart
    with WorkerProcess(settings, tmp_path / "run2.log") as worker:
        wait_counted(worker, 600)
        resets = metric_values(scrape(worker), "driftline_offset_resets_total")
        assert resets == {(("topic", topics.predictions),): 1.0}
    (error,) = errors_about(tmp_path / "run2.log", topics.predictions)
    assert "the topic id changed" in error["message"]
    assert window_sizes(database_url) == [150] * 7


def test_another_cluster_with_the_groups_offsets_carried_over_is_read_from_its_start(
    kafka_bootstrap: str, database_url: str, tmp_path: Path, topic_prefix: str
) -> None:
    """A failover to another cluster whose consumer group offsets were carried over (as
    MirrorMaker does): Kafka's committed offset is in the middle of the new log, so
    the partition is read from its start only if the worker seeks there."""
    settings = {
        **settings_for(tmp_path, database_url, topic_prefix),
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
    }
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics.all(), 1)
    with WorkerProcess(settings, tmp_path / "run1.log") as worker:
        produce(kafka_bootstrap, topics.predictions, minutes(0, 3, seed=5))
        wait_counted(worker, 600)
    with EmbeddedBroker(log_path=tmp_path / "other.log") as other:
        ensure_topics(other, topics.all(), 1)
        produce(other, topics.predictions, minutes(4, 7, seed=6))
        group = Consumer({"bootstrap.servers": other, "group.id": topic_prefix})
        try:
            group.commit(offsets=[TopicPartition(topics.predictions, 0, 300)], asynchronous=False)
        finally:
            group.close()
        with WorkerProcess({**settings, "KAFKA_BOOTSTRAP": other}, tmp_path / "run2.log") as worker:
            wait_counted(worker, 600)  # before: 300 (from the committed offset on)
            resets = metric_values(scrape(worker), "driftline_offset_resets_total")
            assert resets == {(("topic", topics.predictions),): 1.0}
    (error,) = errors_about(tmp_path / "run2.log", topics.predictions)
    assert "the cluster id changed" in error["message"]
    assert window_sizes(database_url) == [150] * 7
