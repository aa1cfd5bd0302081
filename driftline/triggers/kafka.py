"""Kafka target: the retraining event on ``<prefix>.retraining``, keyed by model id.

At least once: a send whose outcome is unknown (a timeout) is retried, so consumers
deduplicate by the ``trigger_id`` header (the webhook-id of the same request).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from driftline.exceptions import BrokerError
from driftline.kafka_clients import librdkafka_config
from driftline.schemas.monitors import KafkaTarget, Target
from driftline.store import DeliveryRow
from driftline.stream.topics import ensure_topics
from driftline.triggers.delivery import Delivery


class KafkaSender:
    """Publishes retraining events with an idempotent producer (acks from all replicas)."""

    def __init__(
        self, bootstrap: str, config: dict[str, Any] | None = None, partitions: int = 1
    ) -> None:
        self._bootstrap = bootstrap
        self._config = config or {}
        self._partitions = partitions
        self._producer_: Producer | None = None
        self._topics: set[str] = set()

    def _producer(self, timeout_s: float) -> Producer:
        """The producer, made at the first send (a worker without Kafka targets has none).

        Its ``message.timeout.ms`` is the first target's timeout unless configured.
        """
        if self._producer_ is None:
            self._producer_ = Producer(
                librdkafka_config(
                    self._bootstrap,
                    **{
                        "enable.idempotence": True,
                        "acks": "all",
                        "message.timeout.ms": int(timeout_s * 1000),
                        **self._config,
                    },
                )
            )
        return self._producer_

    async def send(self, target: Target, delivery: DeliveryRow, now: datetime) -> Delivery:
        assert isinstance(target, KafkaTarget)
        assert target.topic is not None
        started = time.perf_counter()
        if target.topic not in self._topics:  # monitors made through the API name new topics
            try:
                await asyncio.to_thread(
                    ensure_topics,
                    self._bootstrap,
                    [target.topic],
                    self._partitions,
                    target.timeout_s,  # one of the attempt's two bounded calls
                )
            except BrokerError as exc:
                return Delivery(False, None, str(exc), time.perf_counter() - started)
            self._topics.add(target.topic)
        producer = self._producer(target.timeout_s)
        outcome: list[KafkaError | Message] = []

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            outcome.append(error if error is not None else message)

        try:
            producer.produce(
                target.topic,
                key=delivery.model_id.encode(),
                value=delivery.payload.encode(),
                headers=[("trigger_id", delivery.trigger_id.encode())],
                on_delivery=on_delivery,
            )
        except (BufferError, KafkaException, ValueError) as exc:
            return Delivery(False, None, f"produce failed: {exc}", time.perf_counter() - started)
        # The producer's message.timeout.ms is the longest target timeout, so waiting a
        # little longer than that always ends with a definite outcome.
        deadline = started + target.timeout_s + 5.0
        while not outcome and time.perf_counter() < deadline:
            await asyncio.to_thread(producer.poll, min(0.2, target.timeout_s))
        latency = time.perf_counter() - started
        if not outcome:
            return Delivery(False, None, f"no acknowledgement within {target.timeout_s}s", latency)
        (result,) = outcome
        if isinstance(result, KafkaError):
            return Delivery(False, None, f"Kafka: {result.str()}", latency)
        return Delivery(
            True, None, None, latency, external_id=f"{result.partition()}@{result.offset()}"
        )

    def close(self, timeout_s: float = 5.0) -> None:
        if self._producer_ is not None:
            self._producer_.flush(timeout_s)
