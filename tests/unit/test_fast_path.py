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
from driftline.schemas.events import EventRow, NumericRow, decode_message
from driftline.schemas.monitors import MonitorSpec
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
    fast_state, slow_state = MonitorState(monitor), MonitorState(monitor)
    decoded = decode_message(value)
    fast = fast_state.process(decoded.rows, now=NOW, numeric=decoded.numeric)
    reference = slow(value)
    checked = slow_state.process(reference.rows, now=NOW)
    assert fast.accepted == checked.accepted
    assert fast.rejections == checked.rejections
    assert [r.model_dump() for r in fast.reports] == [r.model_dump() for r in checked.reports]
    assert fast_state.to_state() == slow_state.to_state()
