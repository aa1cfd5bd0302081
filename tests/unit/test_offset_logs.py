"""The service against the logs its stored offsets came from, on SQLite and PostgreSQL:
what a broker's metadata says (its ids, or only where its logs end) decides whether a
stored offset is trusted. The broker's answers are given here; the worker's come from
``LogInspector`` (exercised against real brokers in tests/integration/test_offset_logs.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pytest
from prometheus_client import CollectorRegistry

from driftline.store import Store
from driftline.stream.deadletter import DeadLetter, SourceMessage
from driftline.stream.metrics import Metrics
from driftline.stream.service import DriftService
from tests.unit.helpers import make_monitor

TOPIC = "t.predictions"
NOW = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Broker:
    """What a broker's metadata says of its logs."""

    ids: dict[str, str | None] = field(default_factory=dict)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)

    def identities(self, topics: Collection[str], fresh: bool = False) -> dict[str, str | None]:
        return {topic: self.ids.get(topic) for topic in topics}

    def log_ends(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {p: self.ends[p] for p in partitions if p in self.ends}


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store.connect(database_url)
    yield store
    store.close()


def service(store: Store, broker: Broker) -> DriftService:
    async def dead_letter(letters: list[DeadLetter]) -> None:
        return None

    return DriftService(
        {"m": make_monitor()},
        store,
        Metrics(CollectorRegistry()),
        dead_letter,  # type: ignore[arg-type]
        logs=broker,  # type: ignore[arg-type]
    )


def messages(
    offsets: range, start: float = 60.0, partition: int = 0, ids: str | None = None
) -> list[SourceMessage]:
    """Events at ``offsets`` of the topic, one a second from ``start`` + offset; their ids
    ``<ids>-<offset>`` (by default of the partition)."""
    prefix = f"e{partition}" if ids is None else ids
    return [
        SourceMessage(
            b"m",
            orjson.dumps(
                {"model_id": "m", "event_id": f"{prefix}-{o}", "ts": start + o, "features": {}}
            ),
            TOPIC,
            partition,
            o,
        )
        for o in offsets
    ]


def stored(store: Store) -> tuple[int, str | None]:
    return store.stored_offsets({(TOPIC, 0)})[(TOPIC, 0)]


def resets(worker: DriftService) -> float:
    return worker.metrics.offset_resets.labels(TOPIC)._value.get()


def test_an_offset_of_another_cluster_is_reset_and_of_the_same_log_kept(store: Store) -> None:
    broker = Broker(ids={TOPIC: "c1/t1"})
    first = service(store, broker)
    assert asyncio.run(first.assign({(TOPIC, 0)})) == set()  # nothing stored yet
    asyncio.run(first.handle(messages(range(50))))
    assert stored(store) == (49, "c1/t1")
    again = service(store, broker)  # a restart on the same log: trusted
    assert asyncio.run(again.assign({(TOPIC, 0)})) == set()
    asyncio.run(again.handle(messages(range(60))))
    assert again.metrics.events_already_counted._value.get() == 50
    assert stored(store) == (59, "c1/t1")
    broker.ids = {TOPIC: "c2/t9"}  # a fresh embedded broker: another cluster
    fresh = service(store, broker)
    assert asyncio.run(fresh.assign({(TOPIC, 0)})) == {(TOPIC, 0)}
    assert stored(store) == (-1, "c2/t9")  # reset at once, under the new log
    assert resets(fresh) == 1
    asyncio.run(fresh.handle(messages(range(10))))
    assert fresh.metrics.events_processed.labels("m")._value.get() == 10
    assert stored(store) == (9, "c2/t9")


def test_without_ids_a_log_shorter_than_the_stored_offset_is_another(store: Store) -> None:
    """A broker that names neither its cluster nor its topics: a log that ends before
    the stored offset never held the event counted last."""
    broker = Broker(ends={(TOPIC, 0): 100})
    first = service(store, broker)
    asyncio.run(first.assign({(TOPIC, 0)}))
    asyncio.run(first.handle(messages(range(80))))
    assert stored(store) == (79, None)
    assert asyncio.run(service(store, broker).assign({(TOPIC, 0)})) == set()  # 100 > 79
    broker.ends = {(TOPIC, 0): 20}
    assert asyncio.run(service(store, broker).assign({(TOPIC, 0)})) == {(TOPIC, 0)}
    assert stored(store) == (-1, None)


def test_a_log_replaced_while_the_worker_runs_is_caught_before_skipping(store: Store) -> None:
    """Events at or below the stored offset are checked before they are skipped: a topic
    re-created under a running worker (a new topic id) is read, not skipped."""
    broker = Broker(ids={TOPIC: "c1/t1"})
    worker = service(store, broker)
    asyncio.run(worker.assign({(TOPIC, 0)}))
    asyncio.run(worker.handle(messages(range(40))))
    broker.ids = {TOPIC: "c1/t2"}
    asyncio.run(worker.handle(messages(range(15))))  # offsets 0..14 again: a new log
    assert worker.metrics.events_processed.labels("m")._value.get() == 55
    assert resets(worker) == 1
    assert stored(store) == (14, "c1/t2")


def test_a_row_stored_before_logs_were_named_is_checked_by_its_log_end(store: Store) -> None:
    """A database from before this version: its offsets have no log; trusted when the
    log holds them, and named at the next store."""
    broker = Broker(ids={TOPIC: "c1/t1"}, ends={(TOPIC, 0): 500})
    store.record_results([], [], {}, NOW, offsets={(TOPIC, 0): 300})  # as an old worker did
    assert stored(store) == (300, None)
    worker = service(store, broker)
    assert asyncio.run(worker.assign({(TOPIC, 0)})) == set()
    asyncio.run(worker.handle(messages(range(290, 320))))
    assert worker.metrics.events_processed.labels("m")._value.get() == 19
    assert stored(store) == (319, "c1/t1")


def test_ids_the_broker_did_not_give_at_assignment_are_checked_before_skipping(
    store: Store,
) -> None:
    """Nothing is concluded from a broker that does not answer; once it does, the events
    "already counted" are checked against the log the stored offsets belong to."""
    broker = Broker(ids={TOPIC: "c1/t1"})
    first = service(store, broker)
    asyncio.run(first.assign({(TOPIC, 0)}))
    asyncio.run(first.handle(messages(range(30))))
    broker.ids = {}  # no answer
    worker = service(store, broker)
    assert asyncio.run(worker.assign({(TOPIC, 0)})) == set()
    broker.ids = {TOPIC: "c2/t2"}  # it answers: a fresh broker
    asyncio.run(worker.handle(messages(range(10))))
    assert worker.metrics.events_processed.labels("m")._value.get() == 10
    assert stored(store) == (9, "c2/t2")


def test_a_log_replaced_with_events_counted_but_not_stored_yet(store: Store) -> None:
    """With the snapshot cadence, offsets of the old log counted but not stored yet must
    not be stored as the new log's (they would skip its events up to there)."""
    broker = Broker(ids={TOPIC: "c1/t1"})

    async def dead_letter(letters: list[DeadLetter]) -> None:
        return None

    worker = DriftService(
        {"m": make_monitor()},
        store,
        Metrics(CollectorRegistry()),
        dead_letter,  # type: ignore[arg-type]
        snapshot_every_s=3600.0,
        logs=broker,  # type: ignore[arg-type]
    )
    asyncio.run(worker.assign({(TOPIC, 0)}))
    asyncio.run(worker.handle(messages(range(100))))
    asyncio.run(worker.flush(force=True))
    asyncio.run(worker.handle(messages(range(100, 150))))  # counted, not stored yet
    broker.ids = {TOPIC: "c1/t2"}  # the new log's events come later in event time
    asyncio.run(worker.handle(messages(range(10), start=1000.0)))
    asyncio.run(worker.flush(force=True))
    assert stored(store) == (9, "c1/t2")
    asyncio.run(worker.handle(messages(range(10, 150), start=1000.0)))
    assert worker.metrics.events_processed.labels("m")._value.get() == 300


def test_each_partition_is_checked_against_the_log_its_offsets_belong_to(store: Store) -> None:
    """A topic of two partitions replaced under a running worker: finding the new log on
    one partition does not hide it on the other."""
    broker = Broker(ids={TOPIC: "c1/t1"})
    worker = service(store, broker)
    both = {(TOPIC, 0), (TOPIC, 1)}
    asyncio.run(worker.assign(both))
    asyncio.run(worker.handle(messages(range(50)) + messages(range(50), partition=1)))
    broker.ids = {TOPIC: "c1/t2"}
    asyncio.run(worker.handle(messages(range(10))))  # p0 of the new log first
    asyncio.run(worker.handle(messages(range(10), partition=1)))  # then p1's, later
    assert worker.metrics.events_processed.labels("m")._value.get() == 120
    assert resets(worker) == 2
    offsets = store.stored_offsets(both)
    assert offsets == {(TOPIC, 0): (9, "c1/t2"), (TOPIC, 1): (9, "c1/t2")}
    again = service(store, broker)  # and a restart trusts them
    assert asyncio.run(again.assign(both)) == set()


def test_the_log_going_back_is_checked_afresh() -> None:
    """The inspector's answers are reused for a few seconds, but not after the log went
    back (a message below one already handled): then the broker is asked again."""
    from driftline.stream.kafka_logs import LogInspector

    inspector = LogInspector("127.0.0.1:1")
    asked: list[list[str]] = []

    def names(topics: list[str]) -> dict[str, str | None]:
        asked.append(topics)
        return dict.fromkeys(topics, f"c1/t{len(asked)}")

    inspector._names = names  # type: ignore[method-assign]
    assert inspector.identities([TOPIC]) == {TOPIC: "c1/t1"}
    assert inspector.identities([TOPIC]) == {TOPIC: "c1/t1"}  # reused
    assert inspector.identities([TOPIC], fresh=True) == {TOPIC: "c1/t2"}
    assert len(asked) == 2


def test_a_broker_that_fails_for_a_while_is_asked_again_and_no_answer_is_kept() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from driftline.stream.kafka_logs import LogInspector

    inspector = LogInspector("127.0.0.1:1", answer_within_s=5.0)
    calls = {"n": 0}

    def flaky(topics: list[str]) -> dict[str, str | None]:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return dict.fromkeys(topics, "c1/t1")

    inspector._names = flaky  # type: ignore[method-assign]
    assert inspector.identities([TOPIC]) == {TOPIC: "c1/t1"}
    assert calls["n"] == 3

    def down(topics: list[str]) -> dict[str, str | None]:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    inspector = LogInspector("127.0.0.1:1", answer_within_s=0.5)
    inspector._names = down  # type: ignore[method-assign]
    assert inspector.identities([TOPIC]) == {TOPIC: None}  # unknown: nothing concluded
    inspector._names = flaky  # type: ignore[method-assign]
    assert inspector.identities([TOPIC]) == {TOPIC: "c1/t1"}  # the failure was not kept


@dataclass
class CachingBroker(Broker):
    """A broker whose ids are read again only when asked ``fresh`` (as LogInspector's
    cache of a few seconds)."""

    seen: dict[str, str | None] = field(default_factory=dict)

    def identities(self, topics: Collection[str], fresh: bool = False) -> dict[str, str | None]:
        for topic in topics:
            if fresh or topic not in self.seen:
                self.seen[topic] = self.ids.get(topic)
        return {topic: self.seen[topic] for topic in topics}


def test_a_log_replaced_within_the_cache_is_caught_by_going_back(store: Store) -> None:
    broker = CachingBroker(ids={TOPIC: "c1/t1"})
    worker = service(store, broker)
    asyncio.run(worker.assign({(TOPIC, 0)}))
    asyncio.run(worker.handle(messages(range(40))))
    broker.ids = {TOPIC: "c1/t2"}  # replaced; the cached answer still says t1
    asyncio.run(worker.handle(messages(range(10))))  # offsets went back: asked afresh
    assert worker.metrics.events_processed.labels("m")._value.get() == 50
    assert stored(store) == (9, "c1/t2")


def test_an_assignment_asks_afresh_so_a_newer_stored_log_is_not_reset_again(
    store: Store,
) -> None:
    """Worker 1 last read the old ids; worker 2 found the new log and counted it; the
    partition comes back to worker 1: it must not take the stored (newer) log for
    another one, which would count worker 2's events again."""
    first_broker = CachingBroker(ids={TOPIC: "c1/t1"})
    first = service(store, first_broker)
    asyncio.run(first.assign({(TOPIC, 0)}))
    asyncio.run(first.handle(messages(range(40))))
    first.revoke({(TOPIC, 0)})
    first_broker.ids = {TOPIC: "c1/t2"}  # the topic is re-created
    second = service(store, Broker(ids={TOPIC: "c1/t2"}))
    assert asyncio.run(second.assign({(TOPIC, 0)})) == {(TOPIC, 0)}
    asyncio.run(second.handle(messages(range(30), start=1000.0)))
    second.revoke({(TOPIC, 0)})
    assert asyncio.run(first.assign({(TOPIC, 0)})) == set()  # its cache said t1: asked anew
    asyncio.run(first.handle(messages(range(30), start=1000.0)))
    assert first.metrics.events_already_counted._value.get() == 30
    assert stored(store) == (29, "c1/t2")


def test_an_offset_named_without_a_topic_id_is_named_fully_once_there_is_one(
    store: Store,
) -> None:
    """Stored while the broker gave a cluster id only (an older Kafka); once it gives
    topic ids, the name gets one (else a re-creation would never be told by ids)."""
    broker = Broker(ids={TOPIC: "c1/"}, ends={(TOPIC, 0): 200})
    first = service(store, broker)
    asyncio.run(first.assign({(TOPIC, 0)}))
    asyncio.run(first.handle(messages(range(50))))
    assert stored(store) == (49, "c1/")
    broker.ids = {TOPIC: "c1/t1"}
    again = service(store, broker)
    assert asyncio.run(again.assign({(TOPIC, 0)})) == set()  # the log end holds it: same
    asyncio.run(again.handle(messages(range(50, 60))))
    assert stored(store) == (59, "c1/t1")


def test_offsets_going_back_on_the_same_log_count_nothing_twice(store: Store) -> None:
    """aiokafka sends a consumer whose position is out of range back to the start of
    the log (an unclean leader election cut its tail). Without topic ids that looks as a
    re-created topic does, but only the log end may say so: nothing is reset, and what
    was counted, stored or not, is not counted again."""
    broker = Broker(ids={TOPIC: "c1/"}, ends={(TOPIC, 0): 150})
    worker = service(store, broker)
    asyncio.run(worker.assign({(TOPIC, 0)}))
    asyncio.run(worker.handle(messages(range(100))))
    assert stored(store) == (99, "c1/")
    worker._cadence = (0, 3600.0)  # the next batch not stored for an hour
    asyncio.run(worker.handle(messages(range(100, 150))))
    asyncio.run(worker.handle(messages(range(150))))  # from the start again
    assert worker.metrics.events_processed.labels("m")._value.get() == 150
    assert resets(worker) == 0


def test_a_client_not_allowed_the_cluster_id_still_tells_topics_apart() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from driftline.stream.kafka_logs import LogInspector

    class Future:
        def __init__(self, value: object) -> None:
            self.value = value

        def result(self, timeout: float) -> object:
            if isinstance(self.value, Exception):
                raise self.value
            return self.value

    class Admin:
        def describe_topics(self, topics: object, request_timeout: float) -> dict[str, Future]:
            return {TOPIC: Future(type("Description", (), {"topic_id": "t7"})())}

        def describe_cluster(self, request_timeout: float) -> Future:
            refused = KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED)
            return Future(KafkaException(refused))

        def poll(self, timeout: float) -> None:
            return None

    inspector = LogInspector("127.0.0.1:1")
    inspector._admin = Admin()
    assert inspector.identities([TOPIC]) == {TOPIC: "/t7"}


def new_log(offsets: range, start: float = 100.0) -> list[SourceMessage]:
    """Events of a re-created topic (their own event ids)."""
    return messages(offsets, start, ids="new")


def test_a_topic_recreated_before_anything_was_stored_is_counted_from_its_start(
    store: Store,
) -> None:
    """What is counted but not stored yet (the snapshot cadence) is counted too: the new
    log's events below it are another log's, asked of the broker, not skipped as counted;
    and the offsets stored are the new log's, so the next owner counts nothing again."""
    broker = Broker(ids={TOPIC: "c1/t1"})
    worker = service(store, broker)
    worker._cadence = (0, 3600.0)
    asyncio.run(worker.assign({(TOPIC, 0)}))  # nothing stored yet
    asyncio.run(worker.handle(messages(range(30))))
    assert store.stored_offsets({(TOPIC, 0)}) == {}
    broker.ids = {TOPIC: "c1/t2"}  # re-created; the consumer goes back to 0
    asyncio.run(worker.handle(new_log(range(40))))
    asyncio.run(worker.flush(force=True))
    assert worker.metrics.events_processed.labels("m")._value.get() == 70
    assert stored(store) == (39, "c1/t2")
    again = service(store, broker)
    assert asyncio.run(again.assign({(TOPIC, 0)})) == set()
    asyncio.run(again.handle(new_log(range(45))))
    assert again.metrics.events_processed.labels("m")._value.get() == 5
