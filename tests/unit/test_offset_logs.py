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

    def identities(self, topics: Collection[str]) -> dict[str, str | None]:
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


def messages(offsets: range, start: float = 60.0) -> list[SourceMessage]:
    """Events at ``offsets`` of the topic, one a second from ``start`` + offset."""
    return [
        SourceMessage(
            b"m",
            orjson.dumps({"model_id": "m", "event_id": f"e{o}", "ts": start + o, "features": {}}),
            TOPIC,
            0,
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
