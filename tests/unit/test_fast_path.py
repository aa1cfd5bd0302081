"""The fast path (msgspec decoding, whole-block numeric columns) must agree exactly with the
row-by-row path (orjson + pydantic, column checks) on every input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.profile import ReferenceProfile
from driftline.monitoring import Monitor, calibrate
from driftline.schemas import events
from driftline.schemas.events import (
    EventRow,
    NumericRow,
    TypedDecoder,
    TypedRow,
    decode_message,
)
from driftline.schemas.monitors import MonitorSpec
from driftline.stream.batch import StreamProcessor
from driftline.stream.deadletter import SourceMessage
from driftline.stream.processing import MonitorState

NOW = datetime(2024, 1, 1, tzinfo=UTC)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=3),
)
values = st.one_of(scalars, st.lists(st.integers(-9, 9), max_size=2))
timestamps = st.one_of(
    st.floats(0, 2e9),
    st.integers(0, 2 * 10**9),
    st.just(1.7e12),  # milliseconds: refused
    st.just("2024-05-01T12:00:00Z"),
    st.just("yesterday"),
    st.booleans(),
)


@st.composite
def rows(draw: st.DrawFn) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": draw(st.sampled_from(["e1", "e2", ""])),
        "ts": draw(timestamps),
    }
    if draw(st.integers(0, 9)):  # mostly predictions; sometimes a label row
        names = draw(st.lists(st.sampled_from(["x", "y", "c"]), unique=True))
        numbers = st.floats(-5, 5) | st.integers(-5, 5) | st.none()
        row["features"] = {n: draw(numbers if draw(st.integers(0, 3)) else values) for n in names}
    for name in ("prediction", "label", "segment"):
        if draw(st.integers(0, 3)) == 0:
            row[name] = draw(scalars)
    return row


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model_id": draw(st.sampled_from(["m", ""]))}
    if draw(st.booleans()):
        body["model_version"] = draw(st.sampled_from(["v1", None, 3]))
    if draw(st.booleans()):
        body["events"] = draw(st.lists(rows(), max_size=6))
    else:
        body.update(draw(rows()))
    return body


def slow(value: bytes) -> events.DecodedMessage:
    """``decode_message`` without its fast path."""
    fast, events._decode_fast = events._decode_fast, lambda value: None
    try:
        return decode_message(value)
    finally:
        events._decode_fast = fast


def dumped(decoded: events.DecodedMessage) -> list[dict[str, Any]]:
    """The rows' own fields (a single event's model fields are the message's)."""
    fields = ("event_id", "ts", "features", "prediction", "segment", "label")
    return [{f: getattr(row, f) for f in fields} for row in decoded.rows]


@given(messages())
@settings(max_examples=400, deadline=None)
def test_fast_decoding_accepts_only_what_the_row_path_accepts_and_reads_it_the_same(
    body: dict[str, Any],
) -> None:
    value = orjson.dumps(body)
    fast = events._decode_fast(value)
    reference = slow(value)
    if fast is None:
        return
    assert reference.errors == []
    assert reference.labels == []
    assert (fast.model_id, fast.model_version) == (reference.model_id, reference.model_version)
    assert dumped(fast) == dumped(reference)  # ints read as floats compare equal
    assert fast.row_indices == reference.row_indices
    assert fast.order == reference.order
    if fast.numeric:
        assert all(
            v is None or type(v) is float for row in fast.rows for v in row.features.values()
        )


@given(messages())
@settings(max_examples=400, deadline=None)
def test_a_models_typed_decoder_accepts_only_what_the_row_path_accepts_and_reads_it_the_same(
    body: dict[str, Any],
) -> None:
    """A model's own decoder (features ``x`` and ``c`` as struct fields) takes a message
    only if the row-by-row path takes it whole, with that model, and reads its monitored
    features the same (a missing one as None, as ``dict.get``)."""
    value = orjson.dumps(body)
    typed = events._decode_typed(value, TypedDecoder("m", ["x", "c"]))
    reference = slow(value)
    if typed is None:
        return
    assert typed.typed
    assert typed.numeric
    assert typed.plain
    assert reference.errors == []
    assert reference.labels == []
    assert typed.model_id == reference.model_id == "m"
    assert typed.model_version == reference.model_version
    assert list(typed.row_indices) == reference.row_indices
    assert typed.order == reference.order
    for fast_row, row in zip(typed.rows, reference.rows, strict=True):
        assert isinstance(fast_row, TypedRow)
        assert (fast_row.event_id, fast_row.ts) == (row.event_id, row.ts)
        assert (fast_row.prediction, fast_row.segment) == (row.prediction, row.segment)
        for name in ("x", "c"):
            assert fast_row.features.get(name) == row.features.get(name)
            assert type(fast_row.features.get(name)) in (float, type(None))
        assert fast_row.features.get("y") is None  # not monitored: not read


def test_a_typed_decoder_takes_only_its_own_models_messages() -> None:
    """Chosen by the Kafka key, it must still refuse a body of another model; feature
    names need not be identifiers; unmonitored features are skipped, whatever they hold."""
    decoder = TypedDecoder("m", ["feature-1", "class"])
    row = {"event_id": "e", "ts": 1.7e9, "features": {"feature-1": 2, "other": "text"}}
    batch = events._decode_typed(orjson.dumps({"model_id": "m", "events": [row]}), decoder)
    assert batch is not None
    features = batch.rows[0].features
    assert (features["feature-1"], features.get("class"), features.get("other")) == (
        2.0,
        None,
        None,
    )
    assert features.get("other", "absent") == "absent"
    with pytest.raises(KeyError):
        features["other"]
    for refused in (
        {"model_id": "n", "events": [row]},  # another model's body
        {"model_id": "m", **row, "model_version": 3},
        {**row},  # a single event must name its model
        {"model_id": "m", **row, "ts": 1.7e12},  # milliseconds
        {"model_id": "m", **row, "features": {"class": True}},
        {"model_id": "m", "events": [row, {**row, "label": 1}]},
    ):
        assert events._decode_typed(orjson.dumps(refused), decoder) is None
    assert events._decode_typed(orjson.dumps({"model_id": "m", **row}), decoder) is not None


def test_dead_letters_of_typed_rows_are_the_rows_as_they_arrived() -> None:
    """A late row decoded by its model's typed decoder (which read only the monitored
    features) is dead-lettered with everything it held."""
    processor = StreamProcessor({"m": numeric_monitor(prediction=False)})
    assert processor.states["m"].typed is not None
    first = {"event_id": "a", "ts": 1.7e9 + 600, "features": {"x": 1, "y": 2}}
    late = {"event_id": "b", "ts": 1.7e9, "features": {"x": 1, "kept": ["a", {"b": None}]}}
    late["segment"] = "s1"
    value = orjson.dumps({"model_id": "m", "events": [first, late]})
    result = processor.process([SourceMessage(b"m", value, "t", 0, 7)], NOW)
    assert result.accepted == {"m": 1}
    [letter] = result.dead
    assert letter.reason == "late"
    assert letter.batch_index == 1
    assert orjson.loads(letter.value) == {"model_id": "m", "model_version": None, **late}


def test_the_common_messages_take_the_fast_path() -> None:
    row = {"event_id": "e", "ts": 1.7e9, "features": {"x": 1, "y": 0.5, "z": None}}
    batch = decode_message(orjson.dumps({"model_id": "m", "events": [row, row]}))
    assert batch.plain
    assert batch.numeric
    assert isinstance(batch.rows[0], NumericRow)
    assert batch.rows[0].features == {"x": 1.0, "y": 0.5, "z": None}
    mixed = {**row, "features": {"x": 1, "c": "a"}, "prediction": "yes"}
    single = decode_message(orjson.dumps({"model_id": "m", **mixed}))
    assert single.plain
    assert not single.numeric
    assert single.rows[0].features["x"] == 1
    for slow_one in (
        {"model_id": "m", **row, "ts": "2024-05-01T12:00:00Z"},  # RFC 3339: row by row
        {"model_id": "m", **row, "label": 1},  # a label to join
        {"model_id": "m", "events": [row, {"event_id": "e", "ts": 1, "label": 1}]},
    ):
        decoded = decode_message(orjson.dumps(slow_one))
        assert not decoded.plain
        assert not decoded.errors
        assert all(isinstance(r, EventRow) for r in decoded.rows)


def numeric_monitor(prediction: bool) -> Monitor:
    features = [{"name": n, "kind": "numeric"} for n in ("x", "y")]
    if prediction:
        features.append({"name": "p", "kind": "numeric", "source": "prediction"})
    spec = MonitorSpec.model_validate(
        {
            "model_id": "m",
            "reference": {"path": "unused.parquet"},
            "features": features,
            "window": {"duration": "2m", "panes": 2, "min_events": 5},
        }
    )
    rng = np.random.default_rng(0)
    assert spec.features is not None
    columns = {f.name: rng.normal(size=2000) for f in spec.features}
    profile = calibrate(ReferenceProfile.build(columns, spec.features), spec.thresholds)
    return Monitor(spec, tuple(spec.features), profile, 1)


@pytest.mark.parametrize("prediction", [False, True])
@given(
    data=st.lists(
        st.tuples(
            st.floats(0, 600),
            st.one_of(st.none(), st.floats(-3, 3), st.integers(-3, 3)),
            st.one_of(st.none(), st.floats(-3, 3), st.booleans(), st.just("s")),
            st.one_of(st.none(), st.floats(0, 1), st.just("yes")),
            st.booleans(),
        ),
        min_size=1,
        max_size=300,
    )
)
@settings(max_examples=60, deadline=None)
def test_block_columns_count_what_the_checked_columns_count(
    prediction: bool, data: list[tuple[Any, ...]]
) -> None:
    """Same reports, rejections and state whether the rows come decoded by the fast path
    (with their columns built as one block) or row by row."""
    batch = {
        "model_id": "m",
        "events": [
            {
                "event_id": f"e{i}",
                "ts": 1.7e9 + ts,
                "features": {"x": x, "y": y} if has_y else {"x": x},
                "prediction": p,
            }
            for i, (ts, x, y, p, has_y) in enumerate(data)
        ],
    }
    value = orjson.dumps(batch)
    monitor = numeric_monitor(prediction)
    slow_state = MonitorState(monitor)
    reference = slow(value)
    checked = slow_state.process(reference.rows, now=NOW)
    fast_state, typed_state, mixed_state = (MonitorState(monitor) for _ in range(3))
    decoded = decode_message(value)
    typed = decode_message(value, typed_state.typed)
    # Only a y that is not a number (or null) keeps a message from its typed decoder.
    assert typed.typed == all(
        not has_y or type(y) in (int, float, type(None)) for *_, y, _, has_y in data
    )
    runs = [
        (fast_state, fast_state.process(decoded.rows, now=NOW, numeric=decoded.numeric)),
        (
            typed_state,
            typed_state.process(typed.rows, now=NOW, numeric=typed.numeric, typed=typed.typed),
        ),
        # Typed rows among others (a message without its key, say): read by name.
        (mixed_state, mixed_state.process(typed.rows, now=NOW, numeric=typed.numeric)),
    ]
    for state, fast in runs:
        assert fast.accepted == checked.accepted
        assert fast.rejections == checked.rejections
        assert [r.model_dump() for r in fast.reports] == [r.model_dump() for r in checked.reports]
        assert state.to_state() == slow_state.to_state()
