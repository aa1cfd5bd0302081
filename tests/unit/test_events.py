import orjson
import pytest

from driftline.schemas.events import decode_message, parse_timestamp


def encode(body: object) -> bytes:
    return orjson.dumps(body)


EVENT = {
    "model_id": "m",
    "event_id": "e1",
    "ts": "2024-05-01T12:00:00Z",
    "features": {"x": 1.5, "n": 3, "c": "a", "b": True, "gone": None},
    "prediction": 0.7,
    "segment": "eu",
}


def test_single_event_keeps_feature_types() -> None:
    decoded = decode_message(encode(EVENT))
    assert decoded.errors == []
    (row,) = decoded.rows
    assert decoded.model_id == "m"
    assert decoded.row_indices == [None]
    assert row.ts == 1714564800.0
    assert row.features == {"x": 1.5, "n": 3, "c": "a", "b": True, "gone": None}
    assert type(row.features["n"]) is int
    assert type(row.features["b"]) is bool


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-05-01T12:00:00Z", 1714564800.0),
        ("2024-05-01T14:00:00+02:00", 1714564800.0),
        ("2024-05-01T12:00:00.250Z", 1714564800.25),
        (1714564800, 1714564800.0),
        (1714564800.5, 1714564800.5),
    ],
)
def test_timestamps(ts: object, expected: float) -> None:
    assert parse_timestamp(ts) == expected


@pytest.mark.parametrize(
    ("ts", "message"),
    [
        ("2024-05-01T12:00:00", "no UTC offset"),
        ("yesterday", "not an RFC 3339 timestamp"),
        (1714564800000, "looks like milliseconds"),
        (True, "not a boolean"),
        ([1], "RFC 3339 string or epoch seconds"),
    ],
)
def test_bad_timestamps_say_why(ts: object, message: str) -> None:
    decoded = decode_message(encode({**EVENT, "ts": ts}))
    assert decoded.rows == []
    (error,) = decoded.errors
    assert error.reason == "schema"
    assert "ts" in error.message
    assert message in error.message
    assert "Value error" not in error.message


def test_batch_with_one_bad_row_keeps_the_others() -> None:
    rows = [{"event_id": str(i), "ts": 100 + i, "features": {"x": i}} for i in range(3)]
    rows.insert(1, {"event_id": "bad", "ts": 101, "features": {"x": [1, 2]}})
    decoded = decode_message(encode({"model_id": "m", "model_version": "v2", "events": rows}))
    assert [r.event_id for r in decoded.rows] == ["0", "1", "2"]
    assert decoded.row_indices == [0, 2, 3]
    assert decoded.model_version == "v2"
    (error,) = decoded.errors
    assert error.index == 1
    assert error.reason == "schema"
    assert error.message.startswith("events[1]: features.x")
    assert error.raw["event_id"] == "bad"


@pytest.mark.parametrize(
    ("value", "reason", "message"),
    [
        (b"", "decode", "empty"),
        (None, "decode", "empty"),
        (b"{not json", "decode", "not JSON"),
        (b"[1, 2]", "schema", "expected a JSON object, got list"),
        (encode({"event_id": "e", "ts": 1, "features": {}}), "schema", "model_id"),
        (encode({"model_id": "m", "events": "nope"}), "schema", "events"),
        (encode({**EVENT, "features": "x"}), "schema", "features"),
    ],
)
def test_undecodable_messages(value: bytes | None, reason: str, message: str) -> None:
    decoded = decode_message(value)
    assert decoded.rows == []
    (error,) = decoded.errors
    assert error.index is None
    assert error.reason == reason
    assert message in error.message
