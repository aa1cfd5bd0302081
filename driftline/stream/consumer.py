"""The worker's consumer: batches straight from aiokafka, not through Faust's streams.

Faust's per-event stream path (an ``Event`` per message, the stream buffer, one ack
per event, the consumer thread hand-off) costs more than driftline's whole processing
of a message. So the worker reads with ``getmany`` and hands each batch to
``DriftService.handle``; Faust still runs the web server, the timers and the relay.

Exactness does not change: the store is the source of truth for what was counted
(state and offsets in one transaction), Kafka offsets are committed only after that
transaction, so a restart may redeliver, and redelivered events are skipped by their
stored offsets. The range assignor gives partition N of the predictions and labels
topics (which have one partition count) to the same worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.coordinator.assignors.range import (  # type: ignore[import-untyped]
    RangePartitionAssignor,
)
from aiokafka.errors import CommitFailedError, KafkaError  # type: ignore[import-untyped]
from mode import Service

from driftline.settings import Settings
from driftline.stream.deadletter import SourceMessage
from driftline.stream.service import DriftService

log = logging.getLogger(__name__)
#: Exit code of a worker that stops on an unexpected error (EX_SOFTWARE).
EXIT_UNEXPECTED = 70


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Stores what is counted before partitions move, and checks the logs of those
    assigned; ``on_revoke`` runs first at each rebalance (it ends what was fetched before).
    """

    def __init__(
        self,
        service: DriftService,
        consumer: AIOKafkaConsumer,
        on_revoke: Callable[[], None] = lambda: None,
    ) -> None:
        self._service = service
        self._consumer = consumer
        self._on_revoke = on_revoke

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Awaited before the group rebalances; the service's lock waits for a batch in
        # progress. What is counted is stored before the partitions move away.
        self._on_revoke()
        await self._service.flush(force=True)
        self._service.revoke({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        # Before anything is fetched: stored offsets of another log are reset, and such
        # a partition is read from its start (whatever Kafka's committed offset says).
        resets = await self._service.assign({(tp.topic, tp.partition) for tp in assigned})
        if resets:
            self._consumer.seek_to_beginning(*(TopicPartition(t, p) for t, p in sorted(resets)))


class StreamConsumer(Service):
    """Consumes the predictions and labels topics in batches into ``DriftService``."""

    def __init__(
        self,
        service: DriftService,
        settings: Settings,
        bootstrap: str,
        topics: Sequence[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._service = service
        self._settings = settings
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self.consumer: AIOKafkaConsumer | None = None
        #: Rebalances so far: what was fetched before the latest one is not counted here.
        self._rebalances = 0

    async def on_start(self) -> None:
        session_ms = int(self._settings.session_timeout_s * 1000)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=min(3000, session_ms // 3),
            max_poll_records=self._settings.batch_size,
            max_partition_fetch_bytes=8 * 2**20,
            fetch_max_bytes=64 * 2**20,
        )
        listener = _Rebalance(self._service, self.consumer, self._rebalanced)
        self.consumer.subscribe(self._topics, listener=listener)
        await self.consumer.start()

    async def on_stop(self) -> None:
        # A graceful stop stores what is counted but not yet stored (the snapshot cadence),
        # and commits its Kafka offsets, before leaving the group.
        await self._service.flush(force=True)
        if self.consumer is not None:
            await self.consumer.stop()

    def assignment(self) -> set[TopicPartition]:
        return set() if self.consumer is None else set(self.consumer.assignment())

    @Service.task
    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        timeout_ms = int(self._settings.batch_timeout_s * 1000)
        while not self.should_stop:
            records = await consumer.getmany(
                timeout_ms=timeout_ms, max_records=self._settings.batch_size
            )
            messages = [
                SourceMessage(
                    r.key,
                    r.value,
                    tp.topic,
                    tp.partition,
                    r.offset,
                    r.timestamp / 1000 if r.timestamp is not None and r.timestamp >= 0 else None,
                )
                for tp, batch in records.items()
                for r in batch
            ]
            fetched_after = self._rebalances  # no await since getmany returned
            for part in _parts(messages, self._settings.batch_max_bytes):
                await self._handle(part, fetched_after)

    def _rebalanced(self) -> None:
        self._rebalances += 1

    async def _handle(self, messages: list[SourceMessage], fetched_after: int) -> None:
        """Process and (when due) store one batch, then commit its offsets to Kafka.

        A batch fetched before a rebalance (its rest, handled while or after the group
        rebalances) is not counted: its partitions may be another worker's now, or
        given back to this one, which fetches them again from Kafka's committed offset.
        aiokafka returns nothing while the group rebalances, so a batch fetched after
        the latest revocation is of the assignment that followed it.
        """
        consumer = self.consumer
        assert consumer is not None
        ends = {
            TopicPartition(m.topic, m.partition): m.offset + 1
            for m in messages  # in offset order per partition: the last wins
        }

        async def commit(offsets: dict[TopicPartition, int] = ends) -> None:
            # The store holds the truth; Kafka's offsets only save re-reading.
            mine = {tp: o for tp, o in offsets.items() if tp in consumer.assignment()}
            try:
                if mine:
                    await consumer.commit(mine)
            except (CommitFailedError, KafkaError) as exc:
                log.info("Kafka offset commit skipped (%s); the store has them", exc)

        try:
            await self._service.handle(
                messages, commit, current=lambda: self._rebalances == fetched_after
            )
        except Exception:
            # Never move past a batch that was not stored: later offsets would be
            # recorded as counted and this batch lost. Stop; a restart resumes exactly.
            log.critical("unexpected error processing a batch; stopping the worker", exc_info=True)
            os._exit(EXIT_UNEXPECTED)


def _parts(messages: list[SourceMessage], max_bytes: int) -> Iterator[list[SourceMessage]]:
    """``messages`` in consecutive parts of at most ``max_bytes`` of values (a larger
    message is a part alone). Counting does not depend on how events are batched."""
    start, size = 0, 0
    for end, message in enumerate(messages):
        length = len(message.value or b"")
        if size + length > max_bytes and end > start:
            yield messages[start:end]
            start, size = end, 0
        size += length
    if start < len(messages):
        yield messages[start:]
