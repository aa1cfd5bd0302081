"""One sender per delivery attempt, however many workers run: a webhook, a Kubeflow
Pipelines server and a Kafka topic each get one request per retraining trigger, and
no delivery is ever attempted twice at once, while every target fails for a while."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack, closing
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
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy.exc import SQLAlchemyError

from driftline.embedded.broker import EmbeddedBroker, free_port
from driftline.embedded.process import WorkerProcess
from driftline.embedded.traffic import TrafficModel
from driftline.schemas.monitors import KafkaTarget, KubeflowTarget, WebhookTarget
from driftline.store import Store
from driftline.stream.topics import Topics, ensure_topics
from driftline.triggers.delivery import Sender
from driftline.triggers.kafka import KafkaSender
from driftline.triggers.kubeflow import KubeflowSender, run_display_name
from driftline.triggers.relay import OutboxRelay
from driftline.triggers.webhook import WebhookSender
from tests.integration.receivers import FlakyKubeflow, FlakyWebhook, serving
from tests.integration.tcp_proxy import TcpProxy
from tests.unit.helpers import SECRET
from tests.unit.test_outbox import triggers
from tests.unit.test_store import NOW

pytestmark = pytest.mark.integration


def retraining_records(bootstrap: str, topic: str, expected: int) -> Counter[str]:
    """The trigger ids of the records on ``topic`` (each as often as it was published):
    read until ``expected`` are there, then 2 s more for any extra copy."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}"})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    ids: Counter[str] = Counter()
    deadline, quiet = time.monotonic() + 30, time.monotonic() + 2
    try:
        while time.monotonic() < (deadline if sum(ids.values()) < expected else quiet):
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            headers = dict(message.headers() or [])
            ids[headers["trigger_id"].decode()] += 1
            quiet = time.monotonic() + 2
    finally:
        consumer.close()
    return ids


def overlapping_attempts(deliveries: list[dict[str, Any]]) -> list[int]:
    """Deliveries two of whose logged attempts overlapped in time."""
    overlapping = []
    for delivery in deliveries:
        spans = sorted(
            (datetime.fromisoformat(a["at"]).timestamp(), a["latency_s"] or 0.0)
            for a in delivery["attempt_log"]
        )
        for (start, took), (next_start, _) in itertools.pairwise(spans):
            if start + took > next_start + 0.05:
                overlapping.append(delivery["id"])
    return overlapping


def test_two_relays_deliver_to_every_kind_of_target_once(
    database_url: str, tmp_path: Path, topic_prefix: str
) -> None:
    """Two workers' relays (two connections to the store), racing for the same outbox;
    the webhook and Kubeflow fail for 3 s, and the broker of the Kafka target is
    unreachable for the first 3 s."""
    with ExitStack() as stack:
        broker_port = free_port()
        proxy = stack.enter_context(TcpProxy("127.0.0.1", broker_port))
        broker = EmbeddedBroker(
            port=broker_port, log_path=tmp_path / "broker.log", advertised_port=proxy.port
        )
        broker.start()
        stack.callback(broker.stop)
        bootstrap = f"127.0.0.1:{proxy.port}"
        topic = f"{topic_prefix}.retraining"
        ensure_topics(bootstrap, [topic], 1)
        webhook, kubeflow = FlakyWebhook(SECRET), FlakyKubeflow()
        hook_url = stack.enter_context(serving(webhook))
        kfp_url = stack.enter_context(serving(kubeflow))
        targets = [
            WebhookTarget(url=hook_url, secret=SECRET, timeout_s=3, max_attempts=50),  # type: ignore[arg-type]
            KubeflowTarget.model_validate(
                {"type": "kubeflow", "endpoint": kfp_url, "pipeline_id": "p", "timeout_s": 3}
                | {"max_attempts": 50}
            ),
            KafkaTarget(type="kafka", topic=topic, timeout_s=2, max_attempts=50),
        ]
        stores = [stack.enter_context(closing(Store.connect(database_url))) for _ in range(2)]
        reports, fired = triggers(4)
        stores[0].record_results(reports, fired, {"m": targets}, NOW)
        proxy.cut()
        threading.Timer(3.0, proxy.restore).start()
        errors = asyncio.run(_race(stores, bootstrap, {"m": targets}, len(fired) * 3))
        records = retraining_records(bootstrap, topic, len(fired))
        deliveries = stores[0].deliveries()
    ids = {t.data.trigger_id for t in fired}
    assert webhook.flight.overlapping == {}
    assert dict(webhook.accepted) == dict.fromkeys(ids, 1)
    assert kubeflow.flight.overlapping == {}
    assert dict(kubeflow.created()) == {run_display_name(i): 1 for i in ids}
    assert {d["status"] for d in deliveries} == {"delivered"}
    kafka = [d for d in deliveries if d["target_type"] == "kafka"]
    assert any(len(d["attempt_log"]) > 1 for d in kafka)  # the broker was away at first
    assert overlapping_attempts(deliveries) == []
    assert dict(records) == dict.fromkeys(ids, 1)
    assert len(errors) <= 5, errors


async def _race(
    stores: list[Store], bootstrap: str, targets: dict[str, Any], deliveries: int
) -> list[str]:
    errors: list[str] = []

    def done() -> bool:
        rows = stores[0].deliveries()
        return len(rows) == deliveries and all(r["status"] != "pending" for r in rows)

    async with aiohttp.ClientSession() as http:
        kafka = [KafkaSender(bootstrap) for _ in stores]
        relays = [
            OutboxRelay(store, _senders(http, producer), targets)
            for store, producer in zip(stores, kafka, strict=True)
        ]
        until = time.monotonic() + 90
        await asyncio.gather(*(_loop(relay, until, errors, done) for relay in relays))
        for producer in kafka:
            producer.close()
    return errors


def _senders(http: aiohttp.ClientSession, kafka: KafkaSender) -> dict[str, Sender]:
    return {"webhook": WebhookSender(http), "kubeflow": KubeflowSender(http), "kafka": kafka}


async def _loop(
    relay: OutboxRelay, until: float, errors: list[str], done: Callable[[], bool]
) -> None:
    while time.monotonic() < until and not await asyncio.to_thread(done):
        try:
            await relay.run_once()
        except SQLAlchemyError as exc:
            errors.append(type(exc).__name__)
        await asyncio.sleep(0.02)


@pytest.fixture
def two_models_config(tmp_path: Path) -> Callable[[str, str, str], Path]:
    def write(hook: str, kfp: str, topic: str) -> Path:
        pq.write_table(
            pa.table(TrafficModel().sample(np.random.default_rng(1), 3000)),
            tmp_path / "reference.parquet",
        )
        targets = [
            {"url": hook, "secret": SECRET, "timeout_s": 3, "max_attempts": 50},
            {"type": "kubeflow", "endpoint": kfp, "pipeline_id": "p", "timeout_s": 3},
            {"type": "kafka", "topic": topic, "timeout_s": 3, "max_attempts": 50},
        ]
        models = [
            {
                "model_id": f"model-{i}",
                "reference": {"path": "reference.parquet"},
                "window": {"duration": "1m", "panes": 1, "min_events": 50},
                "policy": {"consecutive_windows": 1, "clean_windows_to_close": 1},
                "targets": targets,
            }
            for i in range(3)
        ]
        path = tmp_path / "monitors.yaml"
        path.write_text(yaml.safe_dump({"models": models}))
        return path

    return write


def _traffic(model_id: str, seed: int) -> list[bytes]:
    """Two clean minutes, two drifted (one episode, one request), then a far event that
    closes them."""
    rng = np.random.default_rng(seed)
    start = 1_700_000_040
    messages = []
    for minute in range(4):
        ts = np.sort(rng.uniform(start + 60 * minute, start + 60 * (minute + 1), 200))
        rows = TrafficModel(drifted=minute >= 2).rows(rng, 200, ts, minute * 1000)
        messages.append(orjson.dumps({"model_id": model_id, "events": rows}))
    far = {"event_id": "far", "ts": start + 3600.0, "features": {"amount": 1.0}}
    messages.append(orjson.dumps({"model_id": model_id, "events": [far]}))
    return messages


@pytest.mark.postgres
def test_two_workers_on_postgresql_send_one_request_per_episode(
    kafka_bootstrap: str,
    postgres_database: str,
    topic_prefix: str,
    tmp_path: Path,
    two_models_config: Callable[[str, str, str], Path],
) -> None:
    """``deploy/k8s`` runs two replicas: each drift episode (three models, one each) sends
    one webhook request, starts one Kubeflow run and publishes one record, while the
    webhook and Kubeflow fail for their first 4 s."""
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, [*topics.all(), topics.retraining], 2)
    webhook, kubeflow = FlakyWebhook(SECRET, failing_s=4.0), FlakyKubeflow(failing_s=4.0)
    with serving(webhook) as hook, serving(kubeflow) as kfp, ExitStack() as stack:
        settings = {
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "TOPIC_PREFIX": topic_prefix,
            "CONSUMER_GROUP": topic_prefix,
            "TOPIC_PARTITIONS": "2",
            "MONITORS_PATH": str(two_models_config(hook, kfp, topics.retraining)),
            "DATABASE_URL": postgres_database,
            "SESSION_TIMEOUT_S": "6",
            "BATCH_TIMEOUT_S": "0.2",
            "RELAY_INTERVAL_S": "0.1",
        }
        workers = [
            stack.enter_context(
                WorkerProcess(
                    {**settings, "DATA_DIR": str(tmp_path / f"data{i}")},
                    tmp_path / f"worker{i}.log",
                )
            )
            for i in range(2)
        ]
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for i in range(3):
            for value in _traffic(f"model-{i}", seed=i):
                producer.produce(topics.predictions, key=f"model-{i}".encode(), value=value)
        assert producer.flush(30) == 0
        store = stack.enter_context(closing(Store.connect(postgres_database)))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = store.deliveries()
            if len(rows) == 9 and all(r["status"] == "delivered" for r in rows):
                break
            for worker in workers:
                assert worker.returncode is None, worker.log_tail()
            time.sleep(0.5)
        else:
            pytest.fail(f"not all delivered: {[(r['trigger_id'], r['status']) for r in rows]}")
        time.sleep(1.5)  # any second attempt would have reached a receiver by now
        for worker in workers:
            assert worker.stop() == 0, worker.log_tail()
        ids = {t["trigger_id"] for t in store.triggers()}
        deliveries = store.deliveries()
    assert len(ids) == 3
    assert webhook.flight.overlapping == {}
    assert dict(webhook.accepted) == dict.fromkeys(ids, 1)
    assert kubeflow.flight.overlapping == {}
    assert dict(kubeflow.created()) == {run_display_name(i): 1 for i in ids}
    assert overlapping_attempts(deliveries) == []
    assert dict(retraining_records(kafka_bootstrap, topics.retraining, 3)) == dict.fromkeys(ids, 1)
