"""The real path: confluent-kafka producer -> broker -> worker process -> SQLite -> webhook."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from standardwebhooks import Webhook

from driftline.embedded.process import WorkerProcess
from driftline.embedded.receiver import WebhookReceiver
from driftline.embedded.traffic import TrafficModel
from driftline.monitoring import build_monitor
from driftline.replay import Replay, read_events
from driftline.schemas.monitors import load_monitors
from driftline.schemas.reports import DriftReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.stream.deadletter import DeadLetter
from driftline.stream.topics import Topics, ensure_topics
from tests.integration.keys import bearer, create_key
from tests.unit.helpers import assert_same_reports

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
PANE = 60
START = 1_700_000_040  # a pane boundary (multiple of 60)
SECRET = "whsec_" + base64.b64encode(b"integration-test-secret-32bytes!").decode()


def write_config(
    directory: Path,
    webhook_url: str,
    policy: dict[str, Any] | None = None,
    kafka_target: bool = True,
) -> Path:
    pq.write_table(
        pa.table(TrafficModel().sample(np.random.default_rng(1), 4000)),
        directory / "reference.parquet",
    )
    targets: list[dict[str, Any]] = [
        {"url": webhook_url, "secret_env": "E2E_WEBHOOK_SECRET", "timeout_s": 5}
    ]
    if kafka_target:
        targets.append({"type": "kafka", "name": "retraining-topic"})
    config = {
        "models": [
            {
                "model_id": MODEL,
                "reference": {"path": "reference.parquet"},
                "window": {"duration": "5m", "panes": 5, "min_events": 100},
                "policy": policy or {"consecutive_windows": 1, "clean_windows_to_close": 2},
                "targets": targets,
            }
        ]
    }
    path = directory / "monitors.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def traffic() -> tuple[list[bytes], list[float], dict[str, int]]:
    """Messages to send, the event times of the valid rows, and the bad rows by reason."""
    rng = np.random.default_rng(3)
    messages: list[bytes] = []
    valid_ts: list[float] = []
    for pane in range(10):
        model = TrafficModel(drifted=pane >= 5)
        ts = np.sort(rng.uniform(START + pane * PANE, START + (pane + 1) * PANE, 300))
        rows = model.rows(rng, 300, ts, pane * 1000)
        valid_ts.extend(ts.tolist())
        # Half as single events, half as one EventBatch.
        for row in rows[:150]:
            messages.append(orjson.dumps({"model_id": MODEL, "model_version": "v1", **row}))
        messages.append(
            orjson.dumps({"model_id": MODEL, "model_version": "v1", "events": rows[150:]})
        )
        if pane == 2:
            messages.extend(bad_messages(rng))
            valid_ts.extend([START + 150.0, START + 151.0])  # the good rows among them
    # One event far ahead moves the watermark past every pane sent (it is counted too).
    far = START + 30 * PANE
    messages.append(
        orjson.dumps(
            {"model_id": MODEL, "event_id": "far", "ts": far, "features": {"amount": 20.0}}
        )
    )
    valid_ts.append(far)
    # Events of a model nobody monitors are skipped, not dead-lettered.
    messages.append(orjson.dumps({"model_id": "other", "event_id": "o", "ts": far, "features": {}}))
    bad = {"decode": 1, "schema": 2, "feature_type": 1, "late": 1, "future": 1}
    return stamp(messages), valid_ts, bad


def stamp(messages: list[bytes]) -> list[bytes]:
    """Each JSON message with the Kafka timestamp a producer sending in real time would
    give it (``kafka_ts``: its newest event time, epoch ms), which ``produce`` sets; and
    one event a year ahead of its message in the middle (dead-lettered: future)."""
    out = []
    for value in messages:
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            out.append(value)
            continue
        rows = body.get("events", [body])
        times = [r["ts"] for r in rows if isinstance(r.get("ts"), int | float)]
        sent = max(times) if times else START + 150.0
        out.append(orjson.dumps({**body, "kafka_ts": int(sent * 1000)}))
    future = {"model_id": MODEL, "event_id": "future", "ts": START + 365 * 86400.0}
    sent = orjson.loads(out[len(out) // 2])["kafka_ts"]
    middle = {**future, "features": {"amount": 5.0}, "kafka_ts": sent}
    out.insert(len(out) // 2, orjson.dumps(middle))
    return out


def bad_messages(rng: np.random.Generator) -> list[bytes]:
    good = TrafficModel().rows(rng, 2, np.array([START + 150.0, START + 151.0]), 90_000)
    return [
        b'{"model_id": "fraud-detector", "event_id": "broken", ',  # decode
        orjson.dumps({"model_id": MODEL, "event_id": "no-ts", "features": {}}),  # schema
        orjson.dumps(
            {
                "model_id": MODEL,
                "event_id": "str-amount",
                "ts": START + 150,
                "features": {"amount": "12.5"},
            }
        ),  # feature_type
        orjson.dumps(
            {
                "model_id": MODEL,
                "events": [  # one bad row (schema) between good ones
                    good[0],
                    {"event_id": "bad-row", "ts": "not a time", "features": {}},
                    good[1],
                ],
            }
        ),
        orjson.dumps(
            {"model_id": MODEL, "event_id": "late", "ts": START + 1, "features": {"amount": 1.0}}
        ),  # late: pane 0 closed by now
    ]


def produce(bootstrap: str, topic: str, messages: list[bytes]) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "log.connection.close": False}
    )
    for value in messages:
        sent = _kafka_ts(value)
        if sent is None:
            producer.produce(topic, key=MODEL, value=value)
        else:  # as `driftline replay` reads the line: kafka_ts is the message's timestamp
            producer.produce(topic, key=MODEL, value=value, timestamp=sent)
    assert producer.flush(30) == 0


def _kafka_ts(value: bytes) -> int | None:
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return body.get("kafka_ts") if isinstance(body, dict) else None


def consume_all(bootstrap: str, topic: str, expected: int, within_s: float = 30) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{topic}",
            "auto.offset.reset": "earliest",
            "log.connection.close": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + within_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    return messages


async def wait_for(condition: Any, within_s: float, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + within_s
    while not await condition():
        if worker.returncode is not None:
            pytest.fail(f"worker exited {worker.returncode}:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; worker log:\n{worker.log_tail()}")
        await asyncio.sleep(0.3)


def metric_values(text_body: str, name: str) -> dict[tuple[str, ...], float]:
    """The samples of a metric that are not zero (known label sets start at zero)."""
    values = {}
    for family in text_string_to_metric_families(text_body):
        for sample in family.samples:
            if sample.name == name and sample.value:
                values[tuple(sorted(sample.labels.items()))] = sample.value
    return values


def test_end_to_end(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_end_to_end(kafka_bootstrap, topic_prefix, tmp_path))
    monkeypatch.delenv("E2E_WEBHOOK_SECRET", raising=False)  # replay sends nothing
    check_replay_matches_the_worker(tmp_path)


async def _end_to_end(bootstrap: str, prefix: str, tmp_path: Path) -> None:
    receiver = WebhookReceiver(SECRET)
    url = await receiver.start()
    topics = Topics(prefix)
    ensure_topics(bootstrap, topics.all(), 1)
    database = tmp_path / "driftline.db"
    settings = {
        "KAFKA_BOOTSTRAP": bootstrap,
        "TOPIC_PREFIX": prefix,
        "CONSUMER_GROUP": prefix,
        "MONITORS_PATH": str(write_config(tmp_path, url)),
        "DATABASE_URL": f"sqlite:///{database}",
        "DATA_DIR": str(tmp_path / "data"),
        "SESSION_TIMEOUT_S": "6",
        "BATCH_TIMEOUT_S": "0.2",
        # No polling to speak of: the webhooks below arrive because storing a trigger
        # (from the stream, and from Alertmanager) wakes the relay.
        "RELAY_INTERVAL_S": "600",
        "LOG_LEVEL": "info",
    }
    messages, valid_ts, bad = traffic()
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(messages) + b"\n")
    worker = WorkerProcess(settings, tmp_path / "worker.log", {"E2E_WEBHOOK_SECRET": SECRET})
    try:
        worker.start()
        key = create_key(settings["DATABASE_URL"], scope="write")
        await asyncio.to_thread(produce, bootstrap, topics.predictions, messages)
        async with aiohttp.ClientSession(headers=bearer(key)) as http:

            async def all_counted() -> bool:
                async with http.get(f"{worker.api}/metrics") as response:
                    body = await response.text()
                counted = sum(metric_values(body, "driftline_events_processed_total").values())
                return counted == len(valid_ts)

            await wait_for(all_counted, 90, "every valid event to be counted", worker)
            await wait_for(lambda: _true(receiver.verified), 30, "the webhook", worker)
            await check_alertmanager(http, worker, receiver)
            await check_api(http, worker.api, bad, len(valid_ts))
    finally:
        assert worker.stop() == 0, worker.log_tail()
        await receiver.stop()
    check_reports(database, valid_ts)
    check_webhook(receiver, database)
    check_dead_letters(bootstrap, topics.dlq, bad)


async def _true(value: object) -> bool:
    return bool(value)


ALERT = {
    "version": "4",
    "groupKey": '{}:{alertname="ModelDrift"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "driftline",
    "groupLabels": {"alertname": "ModelDrift"},
    "commonLabels": {"alertname": "ModelDrift"},
    "commonAnnotations": {},
    "externalURL": "http://127.0.0.1:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "ModelDrift", "model": MODEL, "driftline_retrain": "true"},
            "annotations": {"summary": "accuracy dropped"},
            "startsAt": "2026-11-22T10:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": "5f2a9c1e0d3b4a67",
        }
    ],
}


async def check_alertmanager(
    http: aiohttp.ClientSession, worker: WorkerProcess, receiver: WebhookReceiver
) -> None:
    """The same notification twice: one trigger, one more webhook; a bad body is a problem."""
    answers = []
    for _ in range(2):
        async with http.post(f"{worker.api}/v1/alertmanager", json=ALERT) as response:
            assert response.status == 200
            answers.append([a["outcome"] for a in (await response.json())["alerts"]])
    assert answers == [["fired"], ["duplicate"]]
    await wait_for(lambda: _true(len(receiver.verified) == 2), 30, "the alert's webhook", worker)
    async with http.post(f"{worker.api}/v1/alertmanager", json={"version": "3"}) as response:
        assert response.status == 400
        assert response.content_type == "application/problem+json"
    async with http.get(f"{worker.api}/v1/triggers?model_id={MODEL}") as response:
        triggers = (await response.json())["triggers"]
    assert sorted(t["source"] for t in triggers) == ["alertmanager", "drift"]

    async def all_delivered() -> bool:
        async with http.get(f"{worker.api}/v1/deliveries?status=delivered") as response:
            return len((await response.json())["deliveries"]) == 4  # 2 triggers x 2 targets

    await wait_for(all_delivered, 30, "every delivery", worker)
    async with http.get(f"{worker.api}/v1/models/{MODEL}/state?limit=3") as response:
        state = await response.json()
    assert state["consumed_here"]
    assert len(state["reports"]) == 3
    assert state["current_window"]["n"] >= 1  # the far event's window, in progress
    assert state["episode"]["open"]
    assert state["episode"]["fired"]
    assert sorted(e["source"] for e in state["episodes"]) == ["alertmanager", "drift"]
    assert all(e["requests"][0]["status"] == "fired" for e in state["episodes"])
    async with http.get(f"{worker.api}/v1/deliveries") as response:
        deliveries = (await response.json())["deliveries"]
    for delivery in deliveries:
        assert delivery["attempt_log"][-1]["outcome"] == "delivered"
        async with http.get(f"{worker.api}/v1/deliveries/{delivery['id']}") as response:
            assert (await response.json())["delivery"] == delivery


async def check_api(
    http: aiohttp.ClientSession, api: str, bad: dict[str, int], processed: int
) -> None:
    async with http.get(f"{api}/metrics") as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        body = await response.text()
    assert "driftline_feature_psi{" in body
    # Only the metrics asked for (as Prometheus' own exporters do): a cheap scrape.
    names = [
        ("name[]", "driftline_events_processed_total"),
        ("name[]", "driftline_watermark_seconds"),
    ]
    async with http.get(f"{api}/metrics", params=names) as response:
        some = await response.text()
    families = {line.split()[2] for line in some.splitlines() if line.startswith("# TYPE")}
    assert families == {"driftline_events_processed_total", "driftline_watermark_seconds"}
    assert sum(metric_values(some, "driftline_events_processed_total").values()) == processed
    dead = metric_values(body, "driftline_events_dead_lettered_total")
    assert {dict(k)["reason"]: int(v) for k, v in dead.items()} == bad
    assert metric_values(body, "driftline_events_skipped_total") == {(): 1.0}
    triggers = {
        (("model", MODEL), ("source", "drift"), ("status", "fired")): 1.0,
        (("model", MODEL), ("source", "alertmanager"), ("status", "fired")): 1.0,
    }
    assert metric_values(body, "driftline_triggers_total") == triggers
    deliveries = metric_values(body, "driftline_deliveries_total")
    assert (
        deliveries[
            (("outcome", "delivered"), ("target", "retraining-topic"), ("target_type", "kafka"))
        ]
        == 2.0
    )
    assert (
        deliveries[(("outcome", "delivered"), ("target", "127.0.0.1"), ("target_type", "webhook"))]
        == 2.0
    )
    alerts = metric_values(body, "driftline_alertmanager_alerts_total")
    assert alerts == {(("outcome", "fired"),): 1.0, (("outcome", "duplicate"),): 1.0}
    psi = metric_values(body, "driftline_feature_psi")
    assert (("feature", "amount"), ("model", MODEL)) in psi
    assert metric_values(body, "driftline_feature_js")
    async with http.get(f"{api}/readyz") as response:
        assert response.status == 200
    async with http.get(f"{api}/v1/reports?model_id={MODEL}&limit=3") as response:
        assert len((await response.json())["reports"]) == 3
    # Only a dead delivery can be replayed; the delivered one is refused, an unknown one is 404.
    for path, status in (("/v1/deliveries/1/replay", 409), ("/v1/deliveries/99/replay", 404)):
        async with http.post(f"{api}{path}") as response:
            assert response.status == status
            assert response.content_type == "application/problem+json"
    for query, status in (("limit=abc", 400), ("model_id=nobody", 404)):
        async with http.get(f"{api}/v1/reports?{query}") as response:
            assert response.status == status
            assert response.content_type == "application/problem+json"
            problem = await response.json()
            assert problem["status"] == status
            assert problem["detail"]


def stored(database: Path, query: str) -> list[Any]:
    """One column of a query against the worker's SQLite store (JSON decoded)."""
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        values = connection.execute(text(query)).scalars().all()
    engine.dispose()
    return [json.loads(v) if isinstance(v, str) and v.startswith("{") else v for v in values]


def check_reports(database: Path, valid_ts: list[float]) -> None:
    reports = stored(database, "SELECT report FROM window_reports ORDER BY window_end")
    ts = np.asarray(valid_ts)
    # Panes 0..9 hold data: windows end at panes 0..13 (the far event's are still open).
    assert len(reports) == 14
    for report in reports:
        start = epoch(report["window_start"])
        end = epoch(report["window_end"])
        assert report["n"] == int(((ts >= start) & (ts < end)).sum()), report["window_end"]
    verdicts = [r["drifted"] for r in reports]
    assert verdicts[:5] == [False] * 5  # windows of clean panes only
    assert all(verdicts[7:])  # windows of 3 or more drifted panes (of 5)


def epoch(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp()


def check_webhook(receiver: WebhookReceiver, database: Path) -> None:
    # Once per episode, and never unsigned: the drift episode's and the alert's.
    assert len(receiver.received) == len(receiver.verified) == 2
    sources = [r.body["data"]["source"] for r in receiver.verified]
    assert sorted(sources) == ["alertmanager", "drift"]
    (event,) = [r for r in receiver.verified if r.body["data"]["source"] == "drift"]
    # Verified by the receiver, and again here on the raw bytes it kept.
    assert Webhook(SECRET).verify(event.raw, event.headers) == event.body
    body = event.body
    assert body["type"] == "driftline.retraining.requested"
    data = body["data"]
    assert data["model_id"] == MODEL
    assert data["model_version"] == "v1"
    assert data["reference"]["version"] == 1
    assert data["episode_id"] == data["trigger_id"]
    assert data["severity"] in ("warning", "critical")
    assert event.headers["webhook-id"] == data["trigger_id"]
    names = [f["name"] for f in data["drifted_features"]]
    assert "amount" in names
    ratios = [f["score"] / f["threshold"] for f in data["drifted_features"]]
    assert min(ratios) > 1
    assert ratios == sorted(ratios, reverse=True)
    # Calibrated for ~1,500-event windows: far below the folklore PSI 0.2.
    assert all(0 < f["threshold"] < 0.1 for f in data["drifted_features"])
    drift = "SELECT status FROM deliveries WHERE trigger_id NOT LIKE 'trg_am_%'"
    assert stored(database, drift) == ["delivered", "delivered"]  # webhook and Kafka


def check_dead_letters(bootstrap: str, topic: str, bad: dict[str, int]) -> None:
    letters = consume_all(bootstrap, topic, sum(bad.values()))
    assert len(letters) == sum(bad.values())
    by_reason: dict[str, list[Any]] = {}
    for message in letters:
        headers = {k: v.decode() for k, v in message.headers()}
        by_reason.setdefault(headers["driftline-reason"], []).append((headers, message.value()))
        assert headers["driftline-error"]
        assert int(headers["driftline-source-offset"]) >= 0
        assert headers["driftline-source-partition"] == "0"
    assert {reason: len(items) for reason, items in by_reason.items()} == bad
    (decode,) = by_reason["decode"]
    assert decode[1].startswith(b'{"model_id": "fraud-detector", "event_id": "broken"')
    batch_row = [h for h, _ in by_reason["schema"] if "driftline-batch-index" in h]
    assert batch_row[0]["driftline-batch-index"] == "1"
    assert "events[1]: ts" in batch_row[0]["driftline-error"]
    (feature_type,) = by_reason["feature_type"]
    assert "features.amount" in feature_type[0]["driftline-error"]
    (late,) = by_reason["late"]
    assert json.loads(late[1])["event_id"] == "late"
    (future,) = by_reason["future"]
    assert json.loads(future[1])["event_id"] == "future"
    assert "window.max_future" in future[0]["driftline-error"]
    assert "already closed" in late[0]["driftline-error"]


def check_replay_matches_the_worker(tmp_path: Path) -> None:
    """``driftline replay`` of the same events gives the worker's window reports and trigger."""
    (spec,) = load_monitors(tmp_path / "monitors.yaml", resolve_secrets=False).models
    replayed = list(
        Replay({spec.model_id: build_monitor(spec)}).run(read_events(tmp_path / "events.jsonl"))
    )
    windows = [r for r in replayed if isinstance(r, DriftReport)]
    database = tmp_path / "driftline.db"
    rows = stored(database, "SELECT report FROM window_reports ORDER BY window_end")
    trigger_ids = stored(database, "SELECT trigger_id FROM triggers WHERE source = 'drift'")
    live = [DriftReport.model_validate({**r, "reference_version": None}) for r in rows]
    assert len(windows) == len(live) == 14
    assert_same_reports(windows, live)
    replayed_triggers = [t.data.trigger_id for t in replayed if isinstance(t, RetrainingEvent)]
    assert replayed_triggers == trigger_ids
    # The rows the worker dead-lettered, by reason (the far-future one included).
    dead = Counter(d.reason for d in replayed if isinstance(d, DeadLetter))
    assert dead == traffic()[2]
