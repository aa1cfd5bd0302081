"""Rebalances in the middle of a batch, through the consumer, its rebalance listener and
the service (on SQLite and PostgreSQL): each event is counted exactly once, and Kafka's
committed offset never passes what the store holds as counted.

A batch returned by aiokafka is handled in parts; a rebalance may begin and end while
its rest waits. Its partitions may be another worker's by then, or given back to this
one, which fetches them again from Kafka's committed offset (behind what it counted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterator

import orjson
import pytest
from aiokafka import TopicPartition  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from driftline.settings import Settings
from driftline.store import Store
from driftline.stream.consumer import StreamConsumer, _Rebalance
from driftline.stream.deadletter import DeadLetter, SourceMessage
from driftline.stream.metrics import Metrics
from driftline.stream.service import DriftService
from tests.unit.helpers import make_monitor
from tests.unit.test_offset_logs import TOPIC, Broker, messages, resets

PARTITION = TopicPartition(TOPIC, 0)


class Kafka:
    """What the consumer asks of aiokafka's: its assignment, commits and seeks."""

    def __init__(self, committed: dict[TopicPartition, int]) -> None:
        self.owned: set[TopicPartition] = set()
        self.committed = committed  # the group's, shared by its members
        self.sought: list[TopicPartition] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert set(offsets) <= self.owned
        self.committed.update(offsets)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.sought.extend(partitions)


class Worker:
    def __init__(self, store: Store, broker: Broker, committed: dict[TopicPartition, int]):
        async def dead_letter(letters: list[DeadLetter]) -> None:
            return None

        self.store = store
        self.service = DriftService(
            {"m": make_monitor()},
            store,
            Metrics(CollectorRegistry()),
            dead_letter,  # type: ignore[arg-type]
            snapshot_every_s=3600.0,  # what is counted is stored at a rebalance
            logs=broker,  # type: ignore[arg-type]
        )
        self.kafka = Kafka(committed)
        self.consumer = StreamConsumer(self.service, Settings(), "127.0.0.1:1", [TOPIC])
        self.consumer.consumer = self.kafka
        self.listener = _Rebalance(self.service, self.kafka, self.consumer._positions)

    def fetch(self) -> int:
        """A batch returned by aiokafka now: the moves of positions it comes after."""
        return self.consumer._positions.moves

    def handle(self, offsets: range, fetched_after: int, start: float = 60.0) -> None:
        asyncio.run(self.consumer._handle(messages(offsets, start), fetched_after))

    def revoke(self) -> None:
        asyncio.run(self.listener.on_partitions_revoked(sorted(self.kafka.owned)))
        self.kafka.owned = set()

    def assign(self, *partitions: TopicPartition) -> None:
        self.kafka.owned = set(partitions)
        asyncio.run(self.listener.on_partitions_assigned(list(partitions)))

    def counted(self) -> float:
        return self.service.metrics.events_processed.labels("m")._value.get()

    def committed_within_store(self) -> bool:
        stored = self.store.stored_offsets({(TOPIC, 0)}).get((TOPIC, 0))
        return self.kafka.committed.get(PARTITION, 0) <= (-1 if stored is None else stored[0]) + 1


@pytest.fixture
def store(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    def failed(code: int) -> None:  # the consumer stops the process on an unexpected error
        raise AssertionError(f"the worker would have stopped ({code})")

    monkeypatch.setattr("driftline.stream.consumer.os._exit", failed)
    store = Store.connect(database_url)
    yield store
    store.close()


#: The broker gives a topic id, or (an older broker) none: going back is then the sign
#: of another log, and must not be taken for one after a rebalance.
BROKERS = [Broker(ids={TOPIC: "c1/t1"}), Broker(ids={TOPIC: "c1/"})]


def stored(store: Store) -> int:
    return store.stored_offsets({(TOPIC, 0)})[(TOPIC, 0)][0]


@pytest.mark.parametrize("broker", BROKERS, ids=["topic-ids", "no-topic-ids"])
def test_the_rest_of_a_batch_is_left_to_the_worker_the_partition_went_to(
    store: Store, broker: Broker
) -> None:
    committed: dict[TopicPartition, int] = {}
    one, two = Worker(store, broker, committed), Worker(store, broker, committed)
    one.assign(PARTITION)
    batch = one.fetch()
    one.handle(range(100), batch)
    one.revoke()  # stores what it counted
    one.assign()  # the group rebalanced: nothing for this one
    one.handle(range(100, 200), batch)  # the rest of the batch
    assert one.counted() == 100
    assert stored(store) == 99
    assert committed[PARTITION] == 100  # never past what is stored
    two.assign(PARTITION)  # fetched from the committed offset
    two.handle(range(100, 200), two.fetch())
    assert two.counted() == 100
    asyncio.run(two.service.flush(force=True))
    assert stored(store) == 199
    assert resets(two.service) == 0
    assert two.committed_within_store()


@pytest.mark.parametrize("broker", BROKERS, ids=["topic-ids", "no-topic-ids"])
def test_a_partition_given_back_is_not_counted_twice(store: Store, broker: Broker) -> None:
    committed: dict[TopicPartition, int] = {}
    worker = Worker(store, broker, committed)
    worker.assign(PARTITION)
    batch = worker.fetch()
    worker.handle(range(100), batch)
    asyncio.run(worker.service.flush(force=True))
    worker.handle(range(100, 150), batch)  # counted, not stored (the snapshot cadence)
    assert committed[PARTITION] == 100
    worker.revoke()
    worker.assign(PARTITION)  # given back at once
    worker.handle(range(150, 200), batch)  # the rest of the batch fetched before
    assert worker.counted() == 150
    worker.handle(range(150, 250), worker.fetch())  # fetched again: committed at 150
    assert worker.counted() == 250
    assert resets(worker.service) == 0
    asyncio.run(worker.service.flush(force=True))
    assert stored(store) == 249
    assert committed[PARTITION] == 250


@pytest.mark.parametrize("broker", BROKERS, ids=["topic-ids", "no-topic-ids"])
def test_a_partition_given_back_fetched_from_behind_what_was_stored(
    store: Store, broker: Broker
) -> None:
    """Kafka's commit failed (or was skipped): fetched again from further back than the
    store; the events in between are already counted, and the log is the same."""
    committed: dict[TopicPartition, int] = {}
    worker = Worker(store, broker, committed)
    worker.assign(PARTITION)
    worker.handle(range(100), worker.fetch())
    worker.revoke()
    committed[PARTITION] = 40
    worker.assign(PARTITION)
    worker.handle(range(40, 150), worker.fetch())
    assert worker.counted() == 150
    assert resets(worker.service) == 0


class SlowBroker(Broker):
    """Its answer takes a while: aiokafka fetches the new assignment meanwhile."""

    def identities(self, topics: Collection[str], fresh: bool = False) -> dict[str, str | None]:
        time.sleep(0.2)
        return super().identities(topics, fresh)


CASES = {
    # the log the offsets were stored from, the one read now, and Kafka's committed offset
    "another cluster, committed offsets carried over": (
        Broker(ids={TOPIC: "c1/t1"}),
        SlowBroker(ids={TOPIC: "c2/t9"}),
        300,
    ),
    "a topic re-created, no topic ids": (
        Broker(ids={TOPIC: "c1/"}, ends={(TOPIC, 0): 10_000}),
        SlowBroker(ids={TOPIC: "c1/"}, ends={(TOPIC, 0): 450}),
        0,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_what_was_fetched_of_a_reset_partition_before_its_seek_is_not_counted(
    store: Store, case: str
) -> None:
    """aiokafka fetches a new assignment from Kafka's committed offset while the
    listener checks it: those events must wait, and go when the partition is reset."""
    old, new, committed_at = CASES[case]
    committed: dict[TopicPartition, int] = {}
    first = Worker(store, old, committed)
    first.assign(PARTITION)
    first.handle(range(500), first.fetch())
    asyncio.run(first.service.flush(force=True))
    second = Worker(store, new, committed)
    second.service._cadence = (0, 0.0)  # every batch stored at once

    async def scenario() -> None:
        second.kafka.owned = {PARTITION}
        second.consumer._positions.rebalancing()
        assigning = asyncio.create_task(second.listener.on_partitions_assigned([PARTITION]))
        await asyncio.sleep(0.05)
        in_hand = messages(range(committed_at, committed_at + 100), start=5000.0)
        await second.consumer._handle(in_hand, second.fetch())  # waits for the check
        await assigning
        assert second.kafka.sought == [PARTITION]
        again = messages(range(450), start=5000.0)  # from the start of the new log
        await second.consumer._handle(again, second.fetch())
        await second.service.flush(force=True)

    asyncio.run(scenario())
    assert second.counted() == 450
    assert resets(second.service) == 1
    assert stored(store) == 449
    assert second.committed_within_store()


class Stopped(Exception):
    """The worker would have exited (with this code)."""


@pytest.mark.parametrize("first", ["the new owner", "the old one"])
def test_a_worker_out_of_its_group_does_not_store_over_the_partitions_new_owner(
    store: Store, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """A batch held longer than the group allows (the database away): the group gives
    the partition to another worker without telling this one. Whichever of the two
    stores second stops, storing nothing: each event is stored as counted once."""

    def stopped(code: int) -> None:
        raise Stopped(code)

    monkeypatch.setattr("driftline.stream.service.os._exit", stopped)
    committed: dict[TopicPartition, int] = {}
    broker = Broker(ids={TOPIC: "c1/t1"})
    old, new = Worker(store, broker, committed), Worker(store, broker, committed)
    old.assign(PARTITION)
    old.handle(range(100), old.fetch())
    asyncio.run(old.service.flush(force=True))
    old.handle(range(100, 150), old.fetch())  # counted; its write waits for the database
    new.assign(PARTITION)  # the group moved on without the old worker
    new.handle(range(100, 200), new.fetch())
    workers = [new, old] if first == "the new owner" else [old, new]
    asyncio.run(workers[0].service.flush(force=True))
    with pytest.raises(Stopped) as stop:
        asyncio.run(workers[1].service.flush(force=True))
    assert stop.value.args == (75,)
    assert stored(store) == (199 if first == "the new owner" else 149)
    assert committed[PARTITION] == stored(store) + 1


def test_a_worker_out_of_its_group_does_not_store_snapshots_under_the_new_owners_partition(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of labels only: its models' snapshots go under their predictions
    partition, which it does not write. The new owner has stored that partition since:
    the old worker stops, storing nothing (its older snapshot would replace the new
    owner's, whose events the stored offset says are counted)."""
    from tests.unit.labelled import START, labelled_monitor

    def stopped(code: int) -> None:
        raise Stopped(code)

    monkeypatch.setattr("driftline.stream.service.os._exit", stopped)
    predictions, labels = "t.predictions", "t.labels"
    both = {(predictions, 3), (labels, 3)}

    def worker() -> DriftService:
        async def dead_letter(letters: list[DeadLetter]) -> None:
            return None

        metrics = Metrics(CollectorRegistry())
        home = {labels: predictions}
        return DriftService(
            {"m": labelled_monitor()}, store, metrics, dead_letter, home_topics=home
        )  # type: ignore[arg-type]

    def prediction(i: int) -> SourceMessage:
        event = {"model_id": "m", "event_id": f"e{i}", "ts": START + i, "features": {"x": 0.5}}
        return SourceMessage(b"m", orjson.dumps({**event, "prediction": 0.8}), predictions, 3, i)

    def label(i: int) -> SourceMessage:
        event = {"model_id": "m", "event_id": f"e{i}", "ts": START + i + 1, "label": "yes"}
        return SourceMessage(b"m", orjson.dumps(event), labels, 3, i)

    async def scenario() -> None:
        old, new = worker(), worker()
        await old.assign(both)
        await old.handle([prediction(0)])
        await new.assign(both)  # the group moved on without the old worker
        await new.handle([prediction(1), prediction(2)])
        owners = store.load_partition(predictions, 3)
        with pytest.raises(Stopped):
            await old.handle([label(0)])  # its write went through only now
        assert store.load_partition(predictions, 3) == owners

    asyncio.run(scenario())
