"""The Kafka target against a real broker: the event on <prefix>.retraining, keyed by model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from driftline.schemas.monitors import MonitorsConfig
from driftline.store import Store
from driftline.stream.topics import Topics
from driftline.triggers.kafka import KafkaSender
from driftline.triggers.relay import OutboxRelay
from tests.integration.test_worker_e2e import consume_all
from tests.unit.test_store import NOW, drifting_results

pytestmark = pytest.mark.integration


def test_the_retraining_event_is_published_keyed_by_model(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    config = MonitorsConfig.model_validate(
        {
            "models": [
                {
                    "model_id": "m",
                    "reference": {"stored": "latest"},
                    "window": {"duration": "5m"},
                    "targets": [{"type": "kafka"}],
                }
            ]
        },
        context={"topic_prefix": topic_prefix},
    )
    (target,) = config.models[0].targets
    assert target.type == "kafka"
    assert target.topic == Topics(topic_prefix).retraining
    # The topic does not exist yet: the sender creates it (API monitors name new ones).
    store = Store.connect(f"sqlite:///{tmp_path / 's.db'}")
    reports, triggers = drifting_results()
    store.record_results(reports, triggers, {"m": [target]}, NOW)
    sender = KafkaSender(kafka_bootstrap, {"message.timeout.ms": 10_000})
    outcomes: list[str] = []
    try:
        relay = OutboxRelay(
            store, {"kafka": sender}, {"m": [target]}, lambda _d, _t, o: outcomes.append(o)
        )
        asyncio.run(relay.run_once())
    finally:
        sender.close()
    assert outcomes == ["delivered"]
    (delivery,) = store.deliveries()
    assert delivery["target_url"] == f"kafka:{target.topic}"
    assert delivery["external_id"] == "0@0"  # partition @ offset
    store.close()
    (message,) = consume_all(kafka_bootstrap, target.topic, 1)
    assert message.key() == b"m"
    event = json.loads(message.value())
    assert event["type"] == "driftline.retraining.requested"
    assert dict(message.headers()) == {"trigger_id": event["data"]["trigger_id"].encode()}
