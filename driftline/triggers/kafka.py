"""Kafka target: the retraining event on ``<prefix>.retraining``, keyed by model id.

At least once: a send whose outcome is unknown (a timeout) is retried, so consumers
deduplicate by the ``trigger_id`` header (the webhook-id of the same request).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from driftline.exceptions import BrokerError
from driftline.kafka_clients import librdkafka_config
from driftline.schemas.monitors import KafkaTarget, Target
from driftline.store import DeliveryRow
from driftline.stream.topics import ensure_topics
from driftline.triggers.delivery import Delivery

if TYPE_CHECKING:
    from driftline.settings import Settings

#: The message timeouts of the producers Kafka targets share.
MESSAGE_TIMEOUTS_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def message_timeout_s(timeout_s: float) -> float:
    """The message timeout of the producer of targets with this ``timeout_s``: the
    longest of ``MESSAGE_TIMEOUTS_S`` that gives up before the attempt's wait ends.

    >>> message_timeout_s(10.0), message_timeout_s(0.05), message_timeout_s(45.0)
    (10.0, 1.0, 30.0)
    """
    fitting = [t for t in MESSAGE_TIMEOUTS_S if t <= timeout_s + 1.0]
    return max(fitting, default=MESSAGE_TIMEOUTS_S[0])


class KafkaSender:
    """Publishes retraining events with idempotent producers (acks from all replicas)."""

    def __init__(
        self,
        bootstrap: str,
        config: dict[str, Any] | None = None,
        partitions: int = 1,
        settings: Settings | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._settings = settings
        self._config = config or {}
        self._partitions = partitions
        self._producers: dict[int, Producer] = {}
        self._topics: set[str] = set()

    def _producer(self, timeout_s: float) -> Producer:
        """The producer of targets with about this timeout, made at its first send (a
        worker without Kafka targets has none).

        Its ``message.timeout.ms`` is the longest of ``MESSAGE_TIMEOUTS_S`` within the
        target's wait (``timeout_s`` + 2 s after the produce call): librdkafka gives up
        on a message then, and reports it, before the attempt stops waiting. So an
        attempt ends knowing whether its message went (a producer of a longer timeout
        would still hold it, to send it after the attempt was given up, and the retry
        would send it again). Targets' timeouts share a few producers, not one each.
        """
        timeout_ms = int(message_timeout_s(timeout_s) * 1000)
        producer = self._producers.get(timeout_ms)
        if producer is None:
            producer = self._producers[timeout_ms] = Producer(
                librdkafka_config(
                    self._bootstrap,
                    self._settings,
                    **{
                        "enable.idempotence": True,
                        "acks": "all",
                        "message.timeout.ms": timeout_ms,
                        **self._config,
                    },
                )
            )
        return producer

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
                    target.timeout_s,  # one of the attempt's bounded calls
                    (),
                    self._settings,
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
        # The producer's message.timeout.ms is at most this target's timeout + 1 s, so
        # waiting longer than that (from the produce call) ends with a definite outcome, within
        # the relay's bound of the attempt (its topic check and this).
        deadline = time.perf_counter() + target.timeout_s + 2.0
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
        for producer in self._producers.values():
            producer.flush(timeout_s)
