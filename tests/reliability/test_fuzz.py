"""Fuzzing (hypothesis) of what comes from outside: no event crashes the processing and
every row meets one fate with a reason; no monitors file crashes the loader, and every
refusal names the file and the field; no Alertmanager body crashes the receiver, and
every refusal names the field."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from driftline.exceptions import ConfigError
from driftline.schemas.alertmanager import Notification
from driftline.schemas.monitors import load_monitors
from driftline.store import Store
from driftline.stream.batch import StreamProcessor
from driftline.stream.deadletter import SourceMessage
from driftline.stream.metrics import DEAD_LETTER_REASONS
from driftline.triggers.alerts import receive
from tests.unit.helpers import SECRET, make_monitor

NOW = datetime(2024, 1, 1, tzinfo=UTC)
MONITOR = make_monitor(targets=[{"url": "http://127.0.0.1:9/hook", "secret": SECRET}])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.one_of(
    st.floats(1.6e9, 1.8e9),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just("2024-05-01T12:00:00Z"),
    st.just("2024-05-01T12:00:00"),
    json_values,
)


def dump(value: Any) -> bytes:
    """JSON as a producer might send it: integers of any size (orjson stops at 64 bits)."""
    return json.dumps(value).encode()


@st.composite
def rows(draw: st.DrawFn) -> Any:
    """Mostly event-shaped (predictions or labels), any field any value; sometimes anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    row: dict[str, Any] = {}
    for name, values in (
        ("event_id", st.text(max_size=6) | json_values),
        ("ts", timestamps),
        ("features", st.dictionaries(st.sampled_from(["x", "c", "z"]), json_values) | json_values),
        ("prediction", json_values),
        ("label", json_values),
        ("segment", st.text(max_size=6) | json_values),
    ):
        if draw(st.integers(0, 3)):
            row[name] = draw(values)
    return row


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return dump(draw(json_values))
    model = draw(st.sampled_from(["m", "m", "other", ""]) | json_values)
    if kind < 6:
        body = {"model_id": model, "events": draw(st.lists(rows(), max_size=6))}
        if draw(st.booleans()):
            body["model_version"] = draw(st.text(max_size=4) | json_values)
    else:
        row = draw(rows())
        body = {"model_id": model, **row} if isinstance(row, dict) else row
    return dump(body)


@given(
    value=messages(),
    key=st.sampled_from([b"m", b"other", None, b"\xff"]),
    timestamp=st.none() | st.floats(1.6e9, 1.8e9),
)
@settings(max_examples=500, deadline=None)
def test_no_message_crashes_the_processing_and_every_row_has_one_fate(
    value: bytes, key: bytes | None, timestamp: float | None
) -> None:
    processor = StreamProcessor({"m": MONITOR})
    result = processor.process([SourceMessage(key, value, "t", 0, 0, timestamp)], NOW)
    for letter in result.dead:
        assert letter.reason in DEAD_LETTER_REASONS
        assert letter.message
        assert isinstance(letter.value, bytes)
    accepted = sum(result.accepted.values())
    if any(letter.batch_index is None for letter in result.dead):
        # Refused whole: one letter, nothing else.
        assert (accepted, len(result.dead), result.skipped) == (0, 1, 0)
        return
    body = json.loads(value)
    rows = body.get("events", [body])
    # A prediction that carries its own label (a backfill) is a prediction and a label:
    # it may meet two fates (counted, and its label refused here: no labels section).
    labelled = sum(
        isinstance(r, dict) and "features" in r and r.get("label") is not None for r in rows
    )
    fates = accepted + len(result.dead) + result.skipped
    assert len(rows) <= fates <= len(rows) + labelled
    # And it goes on: a valid event after any input is counted.
    good = {"model_id": "m", "event_id": "ok", "ts": 1.9e9, "features": {"x": 1.0, "c": "a"}}
    after = processor.process([SourceMessage(b"m", orjson.dumps(good), "t", 0, 1)], NOW)
    assert after.accepted == {"m": 1}


VALID = {
    "models": [
        {
            "model_id": "fraud",
            "reference": {"path": "reference.parquet"},
            "features": [{"name": "amount", "kind": "numeric"}],
            "window": {"duration": "5m", "panes": 5, "allowed_lateness": "30s"},
            "thresholds": {"mode": "calibrated", "false_alarm_rate": 0.01},
            "policy": {"consecutive_windows": 2, "cooldown": "1h"},
            "targets": [
                {
                    "url": "http://127.0.0.1:9/hook",
                    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                }
            ],
        }
    ]
}
PATHS = [
    ("models",),
    ("models", 0),
    ("models", 0, "model_id"),
    ("models", 0, "reference"),
    ("models", 0, "reference", "path"),
    ("models", 0, "features"),
    ("models", 0, "features", 0, "kind"),
    ("models", 0, "window"),
    ("models", 0, "window", "duration"),
    ("models", 0, "window", "panes"),
    ("models", 0, "window", "allowed_lateness"),
    ("models", 0, "window", "max_future"),
    ("models", 0, "thresholds", "mode"),
    ("models", 0, "thresholds", "false_alarm_rate"),
    ("models", 0, "policy", "consecutive_windows"),
    ("models", 0, "policy", "cooldown"),
    ("models", 0, "targets", 0, "url"),
    ("models", 0, "targets", 0, "secret"),
    ("models", 0, "unknown"),
]


@pytest.fixture(scope="module")
def directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


@given(
    changes=st.lists(
        st.tuples(st.sampled_from(PATHS), st.none() | json_values | st.just("<delete>")),
        min_size=1,
        max_size=3,
    )
)
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_monitors_file_loads_or_is_refused_naming_the_field(
    directory: Path, changes: list[tuple[tuple[Any, ...], Any]]
) -> None:
    config = orjson.loads(orjson.dumps(VALID))
    for path, value in changes:
        parent = config
        try:
            for part in path[:-1]:
                parent = parent[part]
            if value == "<delete>":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed the way there
    file = directory / "monitors.yaml"
    file.write_text(yaml.safe_dump(config))
    try:
        load_monitors(file)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{file}: ")
        assert message.removeprefix(f"{file}: ").split(": ", 1)[0]  # names where


@st.composite
def notifications(draw: st.DrawFn) -> bytes:
    alert: dict[str, Any] = {
        "status": draw(st.sampled_from(["firing", "resolved", "pending"]) | json_values),
        "labels": draw(
            st.fixed_dictionaries(
                {
                    "model": st.sampled_from(["m", "x"]),
                    "driftline_retrain": st.sampled_from(["true", "false"]),
                }
            )
            | json_values
        ),
        "startsAt": draw(
            st.sampled_from(["2024-03-01T11:00:00Z", "2024-03-01T11:00:00", "soon"]) | json_values
        ),
        "fingerprint": draw(st.text(max_size=12) | json_values),
    }
    for name in list(alert):
        if draw(st.integers(0, 7)) == 0:
            del alert[name]
    body: dict[str, Any] = {
        "version": draw(st.sampled_from(["4", "3"]) | json_values),
        "groupKey": "{}:{}",
        "status": "firing",
        "receiver": "driftline",
        "alerts": draw(st.lists(st.just(alert) | json_values, max_size=3)),
    }
    for name in list(body):
        if draw(st.integers(0, 9)) == 0:
            del body[name]
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=40))
    return dump(body)


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as name:
        store = Store.connect(f"sqlite:///{name}/store.db")
        yield store
        store.close()


@given(body=notifications())
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_alertmanager_body_is_received_or_refused_naming_the_field(
    store: Store, body: bytes
) -> None:
    """The receiver's two steps: parse (a refusal is a 400 naming each field), then record
    each alert (one outcome per alert, whatever its labels)."""
    try:
        notification = Notification.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    else:
        errors = []
    if errors:
        assert all(error["msg"] for error in errors)
        return
    outcomes = receive(notification, {"m": MONITOR}, store, "driftline_retrain", "model", NOW)
    assert len(outcomes) == len(notification.alerts)
    for outcome, alert in zip(outcomes, notification.alerts, strict=True):
        assert outcome.outcome in {"fired", "suppressed", "duplicate", "resolved", "ignored"}
        if outcome.trigger_id is not None:
            assert alert.status == "firing"
            assert alert.labels.get("model") == "m"
