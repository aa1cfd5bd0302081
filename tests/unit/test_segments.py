"""Per-segment reports: exact counts per segment, pooled others, drift local to a segment."""

from datetime import UTC, datetime

import numpy as np

from driftline.detectors.profile import ReferenceProfile
from driftline.monitoring import Monitor, calibrate
from driftline.schemas.events import EventRow
from driftline.schemas.monitors import MonitorSpec
from driftline.stream.processing import MonitorState

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def segmented(other: bool = True) -> MonitorState:
    spec = MonitorSpec.model_validate(
        {
            "model_id": "m",
            "reference": {"path": "unused.parquet"},
            "features": [{"name": "x", "kind": "numeric"}],
            "window": {"duration": "1m", "panes": 1, "min_events": 100},
            "segments": {"values": ["eu", "us"], "other": other},
        }
    )
    assert spec.features is not None
    reference = {"x": np.random.default_rng(0).normal(size=10_000)}
    profile = calibrate(ReferenceProfile.build(reference, spec.features), spec.thresholds)
    return MonitorState(Monitor(spec, tuple(spec.features), profile))


def traffic(rng: np.random.Generator) -> list[EventRow]:
    rows = []
    segments = ["eu", "us", "apac", None]
    for i in range(4000):
        segment = segments[i % 4]
        shift = 1.0 if segment == "us" and i >= 2000 else 0.0  # the US drifts in minute 2
        rows.append(
            EventRow(
                event_id=str(i),
                ts=i * 0.03,
                segment=segment,
                features={"x": float(rng.normal(shift))},
            )
        )
    rows.append(EventRow(event_id="tick", ts=121.0, features={"x": 0.0}))
    return rows


def test_segment_reports_count_exactly_and_localise_drift() -> None:
    result = segmented().process(traffic(np.random.default_rng(1)), now=NOW)
    by = {(r.segment, r.window_end.timestamp()): r for r in result.reports}
    assert set(by) == {(s, e) for s in (None, "eu", "us", "other") for e in (60.0, 120.0)}
    for end in (60.0, 120.0):
        overall = by[(None, end)].n
        assert sum(by[(s, end)].n for s in ("eu", "us", "other")) == overall
        assert by[("eu", end)].n == by[("us", end)].n == overall // 4
        assert by[("other", end)].n == overall // 2  # apac and no segment, pooled
    assert not by[("us", 60.0)].drifted
    assert by[("us", 120.0)].drifted
    assert not by[("eu", 120.0)].drifted
    assert not by[("other", 120.0)].drifted
    assert len(result.triggers) <= 1  # triggers come from the whole model only
    assert all(t.data.model_id == "m" for t in result.triggers)


def test_without_other_unlisted_segments_are_not_reported() -> None:
    result = segmented(other=False).process(traffic(np.random.default_rng(2)), now=NOW)
    assert {r.segment for r in result.reports} == {None, "eu", "us"}
