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

import asyncio
import logging
import os
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.coordinator.assignors.range import (  # type: ignore[import-untyped]
    RangePartitionAssignor,
)
from aiokafka.errors import CommitFailedError, KafkaError  # type: ignore[import-untyped]
from mode import Service

from driftline.kafka_clients import aiokafka_options
from driftline.settings import Settings
from driftline.stream.deadletter import SourceMessage
from driftline.stream.service import DriftService

log = logging.getLogger(__name__)
#: Exit code of a worker that stops on an unexpected error (EX_SOFTWARE).
EXIT_UNEXPECTED = 70


class _Positions:
    """When this worker's fetch positions last moved: at a rebalance (all of them), and
    when partitions are read again from their start (those). A fetched batch is current
    for a partition unless its position moved after the batch was fetched: its rest
    belongs to another worker now, or is fetched again."""

    def __init__(self) -> None:
        self.moves = 0
        self._rebalanced_at = 0
        self._sought_at: dict[tuple[str, int], int] = {}
        #: Set once the partitions assigned have been checked (cleared at a rebalance).
        self.checked = asyncio.Event()

    def rebalancing(self) -> None:
        self.moves += 1
        self._rebalanced_at = self.moves
        self._sought_at.clear()
        self.checked.clear()

    def sought(self, partitions: Collection[tuple[str, int]]) -> None:
        self.moves += 1
        for key in partitions:
            self._sought_at[key] = self.moves

    def current(self, fetched_after: int, topic: str, partition: int) -> bool:
        return fetched_after >= max(self._rebalanced_at, self._sought_at.get((topic, partition), 0))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Stores what is counted before partitions move, and checks the logs of those
    assigned before any of their events is counted."""

    def __init__(
        self, service: DriftService, consumer: AIOKafkaConsumer, positions: _Positions
    ) -> None:
        self._service = service
        self._consumer = consumer
        self._positions = positions

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Awaited before the group rebalances; the service's lock waits for a batch in
        # progress. What is counted is stored before the partitions move away.
        self._positions.rebalancing()
        try:  # aiokafka would log an error here and go on: what is pending would be lost
            await self._service.flush(force=True)
            self._service.revoke({(tp.topic, tp.partition) for tp in revoked})
        except Exception:
            log.critical("unexpected error storing before a rebalance; stopping", exc_info=True)
            os._exit(EXIT_UNEXPECTED)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        # aiokafka fetches the new partitions (from Kafka's committed offset) while this
        # runs: their batches wait until it is done. Stored offsets of another log are
        # reset and such a partition is read from its start; what was fetched of it
        # before is not counted.
        try:
            resets = await self._service.assign({(tp.topic, tp.partition) for tp in assigned})
            if resets:
                # What was fetched of them is void from here: aiokafka drops what it
                # holds of them at once, and fetches them again from their start.
                self._positions.sought(resets)
                partitions = (TopicPartition(t, p) for t, p in sorted(resets))
                await self._consumer.seek_to_beginning(*partitions)
        except Exception:
            log.critical("unexpected error checking assigned partitions; stopping", exc_info=True)
            os._exit(EXIT_UNEXPECTED)
        self._positions.checked.set()


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
        self._positions = _Positions()

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
            max_partition_fetch_bytes=self._settings.kafka_max_partition_fetch_bytes,
            fetch_max_bytes=self._settings.kafka_fetch_max_bytes,
            max_poll_interval_ms=int(self._settings.kafka_max_poll_interval_s * 1000),
            **aiokafka_options(self._settings),
        )
        listener = _Rebalance(self._service, self.consumer, self._positions)
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
            fetched_after = self._positions.moves  # no await since getmany returned
            for part in _parts(messages, self._settings.batch_max_bytes):
                await self._handle(part, fetched_after)

    async def _handle(self, messages: list[SourceMessage], fetched_after: int) -> None:
        """Process and (when due) store one batch, then commit its offsets to Kafka.

        The events of a partition whose position moved since the batch was fetched (a
        rebalance, a read from the start) are not counted here: the partition is
        another worker's now, or fetched again. aiokafka returns nothing while the group
        rebalances, and a batch of the new assignment waits until its partitions are
        checked. Kafka's committed offset is what the store holds, never more: a worker
        resumes from it, and skips only what is stored as counted.
        """
        consumer = self.consumer
        assert consumer is not None
        positions = self._positions
        await positions.checked.wait()
        partitions = {(m.topic, m.partition) for m in messages}

        async def commit() -> None:
            stored = {key: self._service.stored_offset(*key) for key in partitions}
            owned = consumer.assignment()
            mine = {
                tp: offset + 1
                for (topic, partition), offset in stored.items()
                if offset is not None and (tp := TopicPartition(topic, partition)) in owned
            }
            try:
                if mine:
                    await consumer.commit(mine)
            except (CommitFailedError, KafkaError) as exc:
                log.info("Kafka offset commit skipped (%s); the store has them", exc)

        def current(topic: str, partition: int) -> bool:
            return positions.current(fetched_after, topic, partition)

        try:
            await self._service.handle(messages, commit, owned=current)
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
