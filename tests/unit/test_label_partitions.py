"""A model's labels come on another topic: its state is stored under, and restored from,
its predictions partition whichever topic a batch held (no Kafka: the service directly)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry

from driftline.store import Store
from driftline.stream.deadletter import DeadLetter, SourceMessage
from driftline.stream.metrics import Metrics
from driftline.stream.service import DriftService
from tests.unit.labelled import START, labelled_monitor

PREDICTION = (
    b'{"model_id": "m", "event_id": "a", "ts": %d, "features": {"x": 0.5}, "prediction": 0.8}'
    % START
)
LABEL = b'{"model_id": "m", "event_id": "a", "ts": %d, "label": "yes"}' % (START + 5)
LATER = PREDICTION.replace(b'"a"', b'"b"')


def service(store: Store) -> DriftService:
    async def dead_letter(letters: list[DeadLetter]) -> None:
        raise AssertionError(f"nothing should be dead-lettered: {letters}")

    return DriftService(
        {"m": labelled_monitor()},
        store,
        Metrics(CollectorRegistry()),
        dead_letter,  # type: ignore[arg-type]
        home_topics={"t.labels": "t.predictions"},
    )


def joined(worker: DriftService) -> int:
    outcomes = worker.states["m"].outcomes
    assert outcomes is not None
    return outcomes.join.counts.joined


def test_a_labels_only_batch_is_stored_under_the_predictions_partition(tmp_path: Path) -> None:
    store = Store.connect(f"sqlite:///{tmp_path / 's.db'}")

    async def scenario() -> None:
        first = service(store)
        await first.handle([SourceMessage(b"m", PREDICTION, "t.predictions", 3, 0)])
        await first.handle([SourceMessage(b"m", LABEL, "t.labels", 3, 0)])  # labels only
        assert joined(first) == 1
        # A restart whose first batch holds predictions only: the label's join is there.
        second = service(store)
        await second.handle([SourceMessage(b"m", LATER, "t.predictions", 3, 1)])
        assert joined(second) == 1
        # And one whose first batch holds labels only: the predictions partition comes first.
        third = service(store)
        await third.handle([SourceMessage(b"m", LABEL.replace(b'"a"', b'"b"'), "t.labels", 3, 1)])
        assert joined(third) == 2
        assert third.stored_offset("t.predictions", 3) == 1

    asyncio.run(scenario())
    store.close()
