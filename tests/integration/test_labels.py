"""Delayed labels on the real broker: predictions and labels on their own topics, the
worker killed twice with joins pending, and the performance windows, the performance
episode's one trigger and the stored offsets of both topics exact against a replay."""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from confluent_kafka import Producer

from driftline.embedded.process import WorkerProcess
from driftline.monitoring import build_monitor
from driftline.replay import Replay, read_events
from driftline.schemas.monitors import load_monitors
from driftline.schemas.reports import PerformanceReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.stream.topics import Topics, ensure_topics
from tests.integration.keys import bearer, create_key
from tests.integration.test_recovery import Store, crash_test_settings, wait_for
from tests.unit.helpers import SECRET
from tests.unit.labelled import probability, same_reports, truth

pytestmark = pytest.mark.integration

MODEL = "churn"
START = 1_700_000_040
MINUTES = 20
FLIP_MINUTE = 8


def configure(directory: Path) -> Path:
    rng = np.random.default_rng(1)
    x = rng.normal(size=4000)
    table = {"x": x, "label": truth(rng, x).tolist(), "prediction": probability(x)}
    pq.write_table(pa.table(table), directory / "reference.parquet")
    path = directory / "monitors.yaml"
    monitor = {
        "model_id": MODEL,
        "reference": {"path": "reference.parquet"},
        "features": [{"name": "x", "kind": "numeric"}],
        "window": {"duration": "3m", "panes": 3, "min_events": 100},
        "labels": {
            "task": "classification",
            "prediction": "probability",
            "horizon": "5m",
            "min_labelled": 100,
            # Detection positions depend on how the two topics interleave: tested in unit
            # tests; here every figure must equal the replay's.
            "concept": None,
        },
        "policy": {"performance": {"metric": "f1"}, "clean_windows_to_close": 2},
        "targets": [{"url": "http://127.0.0.1:9/hook", "secret": SECRET, "timeout_s": 1}],
    }
    path.write_text(yaml.safe_dump({"models": [monitor]}))
    return path


def chunks() -> list[list[tuple[str, bytes]]]:
    """Per minute: its predictions, then the labels of the minute before (60 s late)."""
    rng = np.random.default_rng(4)
    out: list[list[tuple[str, bytes]]] = []
    pending: list[dict[str, Any]] = []
    for minute in range(MINUTES):
        ts = np.sort(rng.uniform(START + 60 * minute, START + 60 * (minute + 1), 150))
        x = rng.normal(size=150)
        classes = truth(rng, x, flipped=minute >= FLIP_MINUTE)
        p = probability(x)
        rows = [
            {
                "event_id": f"{minute}-{i}",
                "ts": float(ts[i]),
                "features": {"x": float(x[i])},
                "prediction": float(p[i]),
            }
            for i in range(150)
        ]
        chunk = [
            ("predictions", orjson.dumps({"model_id": MODEL, "events": rows[j : j + 25]}))
            for j in range(0, 150, 25)
        ]
        chunk += [
            ("labels", orjson.dumps({"model_id": MODEL, "events": pending[j : j + 30]}))
            for j in range(0, len(pending), 30)
        ]
        pending = [
            {"event_id": r["event_id"], "ts": r["ts"] + 60, "label": str(c)}
            for r, c in zip(rows, classes, strict=True)
        ]
        out.append(chunk)
    return out


def offsets(store: Store) -> dict[str, int]:
    """The stored offset of each topic (one partition), by its last name part."""
    rows = store.column(
        "SELECT topic || ':' || CAST(\"offset\" AS VARCHAR(20)) FROM consumer_offsets"
    )
    return {row.split(":")[0].rsplit(".", 1)[-1]: int(row.split(":")[1]) for row in rows}


def performance(store: Store) -> list[PerformanceReport]:
    rows = store.column("SELECT report FROM performance_reports ORDER BY window_end")
    return [
        PerformanceReport.model_validate(
            {**(orjson.loads(r) if isinstance(r, str) else r), "reference_version": None}
        )
        for r in rows
    ]


def get(url: str, key: str | None = None) -> Any:
    request = urllib.request.Request(url, headers=bearer(key) if key else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return body.decode() if key is None else json.loads(body)


def check_api(api: str, database_url: str) -> None:
    """What an operator sees of the labels: API, state and metrics."""
    key = create_key(database_url)
    degraded = get(f"{api}/v1/models/{MODEL}/performance?degraded=true", key)["reports"]
    assert degraded
    assert all(r["drifted"] for r in degraded)
    assert degraded[0]["check"]["metric"] == "f1"
    labels = get(f"{api}/v1/models/{MODEL}/state", key)["labels"]
    assert labels["counts"]["joined"] > 0
    assert labels["concept"] is None
    assert labels["pending_predictions"] > 0  # the last minute's labels never came
    assert [e for e in labels["reports"] if e["drifted"]]
    metrics = get(f"{api}/metrics")
    assert f'driftline_labels_total{{model="{MODEL}",outcome="joined"}}' in metrics
    assert f'driftline_model_performance{{metric="f1",model="{MODEL}"}}' in metrics


def test_labels_join_across_restarts_exactly(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, database_url: str
) -> None:
    monitors = configure(tmp_path)
    plan = chunks()
    (tmp_path / "events.jsonl").write_bytes(
        b"\n".join(value for chunk in plan for _, value in chunk) + b"\n"
    )
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics.all(), 1)
    settings = crash_test_settings(kafka_bootstrap, topic_prefix, monitors, database_url, tmp_path)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "log.connection.close": False})
    store = Store(database_url)
    log = tmp_path / "worker.log"
    rng = random.Random(5)
    produced = {"predictions": -1, "labels": -1}
    kill_after = {6, 13}  # minutes after which the worker is killed mid-chunk
    worker = WorkerProcess(settings, log).start()
    try:
        for minute, chunk in enumerate(plan):
            for topic, value in chunk:
                producer.produce(getattr(topics, topic), key=MODEL, value=value)
                produced[topic] += 1
            assert producer.flush(30) == 0
            if minute in kill_after:
                # Partway into this minute's messages, joins pending: kill without warning.
                target = produced["predictions"] - rng.randint(1, 4)
                wait_for(lambda t=target: offsets(store).get("predictions", -1) >= t, worker, 60)  # type: ignore[misc]
                worker.kill()
                worker = WorkerProcess(settings, log).start()
            # Keep the worker within a minute of the producer, as live traffic would be.
            sent = {topic: last for topic, last in produced.items() if last >= 0}
            wait_for(lambda s=sent: offsets(store) == s, worker, 90)  # type: ignore[misc]
        del producer
        check_api(worker.api, database_url)
    finally:
        code = worker.stop()
        store.engine.dispose()
    assert code == 0, worker.log_tail()
    assert log.read_text().count("resuming after offset") >= 3

    (spec,) = load_monitors(monitors).models
    replay = Replay({MODEL: build_monitor(spec)})
    expected = list(replay.run(read_events(tmp_path / "events.jsonl")))
    assert replay.dead_lettered == {}
    windows = [r for r in expected if isinstance(r, PerformanceReport)]
    stored_windows = performance(store)
    triggers = [t for t in expected if isinstance(t, RetrainingEvent)]
    stored = store.column("SELECT trigger_id FROM triggers")
    deliveries = store.column("SELECT trigger_id FROM deliveries")
    store.engine.dispose()
    assert same_reports(stored_windows, windows)
    assert any(w.drifted for w in windows)
    assert all(w.coverage == 1.0 for w in windows if w.window_end.timestamp() < START + 60 * 18)
    assert [t.data.source for t in triggers].count("performance") == 1
    assert sorted(stored) == sorted(t.data.trigger_id for t in triggers)
    assert sorted(deliveries) == sorted(stored)
