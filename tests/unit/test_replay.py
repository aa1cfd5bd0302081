"""``driftline replay``: the worker's processing over a file, deterministic, JSONL or Parquet."""

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
    strip = [{k: v for k, v in o.items() if k not in ("features",)} for o in first]
    assert [{k: v for k, v in o.items() if k not in ("features",)} for o in from_parquet] == strip


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
