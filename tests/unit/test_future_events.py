"""Events timed far ahead of their Kafka message are refused (``window.max_future``): one
would move the model's watermark past every real event, and make them all late."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from driftline.monitoring import Monitor
from driftline.schemas.monitors import MonitorSpec
from driftline.stream.batch import StreamProcessor
from driftline.stream.deadletter import SourceMessage
from driftline.stream.processing import MonitorState
from tests.unit.helpers import make_monitor

NOW = datetime(2024, 1, 1, tzinfo=UTC)
SENT = 1_700_000_000.0  # the messages' Kafka timestamp


def row(event_id: str, ts: float) -> dict[str, Any]:
    return {"event_id": event_id, "ts": ts, "features": {"x": 0.5, "c": "a"}}


def with_max_future(monitor: Monitor, value: Any) -> Monitor:
    spec = monitor.spec.model_dump()
    spec["window"]["max_future"] = value
    resolved = MonitorSpec.model_validate(spec)
    return Monitor(resolved, monitor.features, monitor.profile, 1)


def message(body: dict[str, Any], offset: int, timestamp: float | None = SENT) -> SourceMessage:
    return SourceMessage(b"m", orjson.dumps(body), "t", 0, offset, timestamp)


def test_an_event_far_ahead_of_its_message_is_dead_lettered_and_moves_nothing() -> None:
    processor = StreamProcessor({"m": make_monitor(panes=1)})
    batch = {
        "model_id": "m",
        "events": [row("a", SENT - 10), row("future", SENT + 300.5), row("b", SENT + 30)],
    }
    result = processor.process([message(batch, 0)], NOW)
    assert result.accepted == {"m": 2}
    [letter] = result.dead
    assert letter.reason == "future"
    assert letter.batch_index == 1
    assert "window.max_future (300 s)" in letter.message
    assert orjson.loads(letter.value)["event_id"] == "future"
    # The watermark stayed with the real events: the next one, a minute on, is on time.
    later = processor.process([message({"model_id": "m", **row("c", SENT + 60)}, 1)], NOW)
    assert later.accepted == {"m": 1}
    assert later.dead == []
    # A single event from the future goes to the dead letters whole.
    single = {"model_id": "m", **row("f2", SENT + 10**6)}
    result = processor.process([message(single, 2)], NOW)
    assert result.accepted == {}
    assert [(d.reason, d.value) for d in result.dead] == [("future", orjson.dumps(single))]


@pytest.mark.parametrize(
    ("max_future", "ahead", "timestamp", "accepted"),
    [
        (300, 300, SENT, 1),  # the default, at its edge
        (None, 10**6, SENT, 1),  # no limit
        (3600, 1000, SENT, 1),  # a wider limit
        (300, 1000, None, 1),  # no Kafka timestamp (replay of a file): nothing to compare
        (0, 1, SENT, 0),  # not even a second ahead
    ],
)
def test_the_limit_is_configurable_and_needs_a_message_timestamp(
    max_future: float | None, ahead: float, timestamp: float | None, accepted: int
) -> None:
    monitor = with_max_future(make_monitor(panes=1), max_future)
    processor = StreamProcessor({"m": monitor})
    body = {"model_id": "m", **row("a", SENT + ahead)}
    result = processor.process([message(body, 0, timestamp)], NOW)
    assert result.accepted.get("m", 0) == accepted
    assert len(result.dead) == 1 - accepted


def test_labels_of_a_message_stay_when_its_predictions_are_refused() -> None:
    """Only the future rows go: the message's order of rows and labels stays aligned."""
    processor = StreamProcessor({"m": make_monitor(panes=1)})
    batch = {
        "model_id": "m",
        "events": [
            row("future", SENT + 10**5),
            {"event_id": "a", "ts": SENT, "label": 1},
            row("ok", SENT),
        ],
    }
    result = processor.process([message(batch, 0)], NOW)
    assert result.accepted == {"m": 1}
    reasons = sorted(d.reason for d in result.dead)
    assert reasons == ["future", "labels_not_configured"]


def test_a_snapshot_does_not_depend_on_max_future() -> None:
    """Snapshots from before the setting existed, or under another value, continue."""
    state = MonitorState(make_monitor(panes=1))
    snapshot = orjson.loads(orjson.dumps(state.to_state()))
    assert "max_future" not in snapshot["window"]
    other = MonitorState(with_max_future(make_monitor(panes=1), 60))
    assert other.restore(snapshot)
    assert not MonitorState(make_monitor(panes=2)).restore(snapshot)
