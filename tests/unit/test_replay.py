"""``driftline replay``: the worker's processing over a file, deterministic, JSONL or Parquet."""

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from driftline.cli import cli
from driftline.embedded.traffic import TrafficModel
from driftline.monitoring import build_monitor
from driftline.schemas.events import EventRow
from driftline.schemas.monitors import load_monitors
from driftline.stream.processing import MonitorState
from tests.unit.helpers import assert_same_reports

START = 1_700_000_040.0


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("replay")
    rng = np.random.default_rng(5)
    pq.write_table(pa.table(TrafficModel().sample(rng, 5000)), directory / "reference.parquet")
    (directory / "monitors.yaml").write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "model_id": "fraud",
                        "reference": {"path": "reference.parquet"},
                        "window": {"duration": "3m", "panes": 3, "min_events": 100},
                        "policy": {"consecutive_windows": 2, "clean_windows_to_close": 2},
                    }
                ]
            }
        )
    )
    lines, flat = [], []
    for minute in range(12):
        model = TrafficModel(drifted=minute >= 6)
        ts = np.sort(rng.uniform(START + 60 * minute, START + 60 * (minute + 1), 400))
        rows = model.rows(rng, 400, ts, minute * 1000)
        lines.append(
            orjson.dumps({"model_id": "fraud", "model_version": "v3", "events": rows[:200]})
        )
        lines.extend(
            orjson.dumps({"model_id": "fraud", "model_version": "v3", **r}) for r in rows[200:]
        )
        flat.extend(
            {
                "model_id": "fraud",
                "model_version": "v3",
                "event_id": r["event_id"],
                "ts": datetime.fromtimestamp(r["ts"], UTC),
                **r["features"],
            }
            for r in rows
        )
    lines.insert(5, b"this is not json")
    lines.insert(
        9, orjson.dumps({"model_id": "other", "event_id": "o", "ts": START, "features": {}})
    )
    (directory / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    pq.write_table(pa.Table.from_pylist(flat), directory / "events.parquet")
    return {
        "dir": directory,
        "monitors": directory / "monitors.yaml",
        "jsonl": directory / "events.jsonl",
        "parquet": directory / "events.parquet",
    }


def replay(case: dict[str, Path], events: str, *extra: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(
        cli,
        [
            "replay",
            "--monitors",
            str(case["monitors"]),
            "--events",
            str(case[events]),
            "--json",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_replay_prints_windows_and_one_trigger_per_episode(case: dict[str, Path]) -> None:
    out = replay(case, "jsonl")
    windows = [o for o in out if o["type"] == "window"]
    triggers = [o for o in out if o["type"] == "trigger"]
    assert len(windows) == 11  # panes 0..10 closed by the next pane's events; 11 stays open
    for window in windows:
        assert {"model_id", "window_start", "window_end", "n", "drifted", "features"} <= set(window)
        for feature in window["features"]:  # type: ignore[attr-defined]
            assert {"name", "psi", "js", "threshold", "drifted"} <= set(feature)
    assert [w["drifted"] for w in windows][:6] == [False] * 6
    assert len(triggers) == 1
    (trigger,) = triggers
    assert trigger["model_id"] == "fraud"
    assert trigger["model_version"] == "v3"
    assert trigger["timestamp"] == trigger["window_end"]
    index = out.index(trigger)
    assert out[index - 1]["window_end"] == trigger["window_end"]  # right after its window


def test_replay_is_deterministic_and_parquet_gives_the_same(case: dict[str, Path]) -> None:
    first = replay(case, "jsonl")
    assert replay(case, "jsonl") == first
    from_parquet = replay(case, "parquet")

    def strip(out: list[dict[str, object]]) -> list[dict[str, object]]:
        # The Parquet file has the events only, not the JSON lines' two bad lines.
        return [
            {k: v for k, v in o.items() if k != "features"}
            for o in out
            if o["type"] != "dead_letter"
        ]

    assert strip(from_parquet) == strip(first)


def test_replay_equals_processing_the_same_rows_directly(case: dict[str, Path]) -> None:
    (spec,) = load_monitors(case["monitors"]).models
    state = MonitorState(build_monitor(spec))
    rows = []
    for line in case["jsonl"].read_bytes().splitlines():
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if body["model_id"] != "fraud":
            continue
        for row in body.get("events", [body]):
            rows.append(EventRow.model_validate(row))
    direct = state.process(rows, "v3", now=datetime(2024, 1, 1, tzinfo=UTC)).reports
    from driftline.schemas.reports import DriftReport

    replayed = [
        DriftReport.model_validate({k: v for k, v in o.items() if k != "type"})
        for o in replay(case, "jsonl")
        if o["type"] == "window"
    ]
    assert_same_reports(replayed, direct)


def test_flush_and_text_output(case: dict[str, Path]) -> None:
    assert len([o for o in replay(case, "jsonl", "--flush") if o["type"] == "window"]) == 14
    result = CliRunner().invoke(
        cli, ["replay", "--monitors", str(case["monitors"]), "--events", str(case["jsonl"])]
    )
    assert result.exit_code == 0
    assert "fraud 2023-11-14 22:14:00 - 22:17:00  n=" in result.stdout
    assert "DRIFT" in result.stdout
    assert "-> retraining event trg_" in result.stdout
    assert "11 windows" in result.stderr
    assert "decode: 1" in result.stderr
    assert "skipped (unmonitored models): 1" in result.stderr


def epoch(moment: object) -> float:
    return datetime.fromisoformat(str(moment)).timestamp()


def _future_case(directory: Path, with_kafka_ts: bool) -> tuple[Path, Path]:
    """Clean traffic, then drifted, with one event a year ahead among the clean ones, a
    quiet hour, and a line whose ts has no UTC offset (a schema error)."""
    rng = np.random.default_rng(9)
    pq.write_table(pa.table(TrafficModel().sample(rng, 5000)), directory / "reference.parquet")
    monitors = directory / "monitors.yaml"
    monitors.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "model_id": "fraud",
                        "reference": {"path": "reference.parquet"},
                        "window": {"duration": "3m", "panes": 3, "min_events": 100},
                        "policy": {"consecutive_windows": 2, "clean_windows_to_close": 2},
                        # Replay sends nothing: this variable need not exist.
                        "targets": [{"url": "http://127.0.0.1:9/", "secret_env": "NOT_SET_X"}],
                    }
                ]
            }
        )
    )
    lines = []
    for minute in range(14):
        start = START + 60 * minute + (3600 if minute >= 7 else 0)  # an hour's quiet
        ts = np.sort(rng.uniform(start, start + 60, 300))
        rows = TrafficModel(drifted=minute >= 9).rows(rng, 300, ts, minute * 1000)
        for chunk in range(0, 300, 50):
            body: dict[str, object] = {"model_id": "fraud", "events": rows[chunk : chunk + 50]}
            if with_kafka_ts:
                body["kafka_ts"] = int(ts[min(chunk + 49, 299)] * 1000)
            lines.append(orjson.dumps(body))
        if minute == 3:
            far = {"model_id": "fraud", "event_id": "f", "ts": START + 365 * 86400.0}
            lines.append(orjson.dumps({**far, "features": {"amount": 5.0}}))
            naive = {"model_id": "fraud", "event_id": "n", "ts": "2023-11-14T22:17:00"}
            lines.append(orjson.dumps({**naive, "features": {}}))
    events = directory / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    return monitors, events


@pytest.mark.parametrize("with_kafka_ts", [True, False], ids=["kafka_ts", "estimated"])
def test_replay_refuses_a_far_future_event_as_the_worker_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_kafka_ts: bool
) -> None:
    """One event a year ahead would make every later row late and fire nothing; the
    worker refuses it (max_future), and so does replay, with or without kafka_ts; the
    quiet hour is no future."""
    monkeypatch.delenv("NOT_SET_X", raising=False)
    monitors, events = _future_case(tmp_path, with_kafka_ts)
    result = CliRunner().invoke(
        cli, ["replay", "--monitors", str(monitors), "--events", str(events), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.splitlines()]
    dead = [o for o in out if o["type"] == "dead_letter"]
    assert sorted((d["reason"], d["event"]["event_id"]) for d in dead) == [
        ("future", "f"),
        ("schema", "n"),
    ]
    assert "has no UTC offset" in next(d["message"] for d in dead if d["reason"] == "schema")
    windows = [o for o in out if o["type"] == "window"]
    assert any(w["drifted"] for w in windows)
    assert epoch(windows[-1]["window_end"]) > START + 3600  # past the quiet hour
    assert not any(o["type"] == "dead_letter" and o["reason"] == "late" for o in out)
    assert [o["type"] for o in out].count("trigger") == 1
    # The summary says why, not only how many.
    assert "dead-lettered: future: 1, schema: 1" in result.stderr
    assert "  schema: ts: ts '2023-11-14T22:17:00' has no UTC offset" in result.stderr
    assert "  future: event time " in result.stderr


def _refused_as_future(
    times: list[float], tmp_path: Path, models: list[str] | None = None
) -> list[int]:
    """The lines (one event each, at these times, of these models) that replay refuses
    as future."""
    from driftline.replay import Replay, read_events
    from tests.unit.helpers import make_monitor

    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "model_id": (models or ["m"] * len(times))[n],
                    "event_id": f"e{n}",
                    "ts": t,
                    "features": {"x": 0.1, "c": "a"},
                }
            )
            + b"\n"
            for n, t in enumerate(times)
        )
    )
    base = make_monitor()
    monitors = {
        m: dataclasses.replace(base, spec=base.spec.model_copy(update={"model_id": m}))
        for m in set(models or ["m"])
    }
    out = Replay(monitors).run(read_events(path), flush=True)
    return [d.source.offset for d in out if getattr(d, "reason", None) == "future"]


DAY = 86_400.0
SEND_TIME_CASES = {
    # (event times of the lines, the lines a live worker would refuse as future)
    "sparse, to the end of the file": ([START + 120 * i for i in range(40)], []),
    "a quiet hour, then the last lines": (
        [START + 30 * i for i in range(100)] + [START + 3000 + 3600 + 30 * i for i in range(5)],
        [],
    ),
    "a backfill of last week appended": (
        [START + 40 * i for i in range(50)] + [START - 7 * DAY + 10 * i for i in range(30)],
        [],
    ),
    "one event a year ahead": (
        [START + 30 * i for i in range(20)]
        + [START + 365 * DAY]
        + [START + 600 + 30 * i for i in range(20)],
        [21],
    ),
    "one event a year ahead, last": (
        [START + 30 * i for i in range(20)] + [START + 365 * DAY],
        [21],
    ),
}


@pytest.mark.parametrize("case", sorted(SEND_TIME_CASES))
def test_replay_refuses_as_future_what_a_live_worker_would(case: str, tmp_path: Path) -> None:
    times, future = SEND_TIME_CASES[case]
    assert _refused_as_future(times, tmp_path) == future


def test_replay_stamps_each_model_by_its_own_producer(tmp_path: Path) -> None:
    """A batch uploader two hours behind writes most lines; a live server's lines, one
    in 15, are not taken for far-future events of the uploader's clock."""
    models = ["live" if n % 15 == 7 else "uploader" for n in range(150)]
    times = [START + 10 * n + (0 if m == "live" else -2 * 3600) for n, m in enumerate(models)]
    assert _refused_as_future(times, tmp_path, models) == []
