"""Every feature kind: numeric quantiles, categorical other/unseen, booleans, nulls, prediction."""

from datetime import UTC, datetime

import numpy as np
import pytest

from driftline.detectors.binning import NumericBinning
from driftline.detectors.histogram import Histogram
from driftline.detectors.profile import ReferenceProfile
from driftline.monitoring import Monitor, calibrate
from driftline.schemas.events import EventRow
from driftline.schemas.monitors import MonitorSpec
from driftline.stream.processing import MonitorState

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def test_sketch_quantiles_are_within_one_reference_percentile() -> None:
    rng = np.random.default_rng(0)
    reference = rng.lognormal(size=20_000)
    binning = NumericBinning.from_reference(reference, 10)
    for shift in (1.0, 1.5):  # inside the reference's range, and partly past it
        window = rng.lognormal(size=3000) * shift
        halves = Histogram.observe(binning, window[:1000]) + Histogram.observe(
            binning, window[1000:]
        )
        for q in (0.5, 0.95):
            got = binning.quantile(halves.sketch, q, window.min(), window.max())
            assert got is not None
            # Within one percentile of the reference around the true value.
            lo, hi = np.quantile(window, [q - 0.015, q + 0.015])
            assert lo <= got <= hi * 1.0001, (shift, q, got, lo, hi)


def monitor(
    features: list[dict[str, object]], columns: dict[str, object], min_events: int = 50
) -> Monitor:
    spec = MonitorSpec.model_validate(
        {
            "model_id": "m",
            "reference": {"path": "unused.parquet"},
            "features": features,
            "window": {"duration": "1m", "panes": 1, "min_events": min_events},
        }
    )
    assert spec.features is not None
    profile = ReferenceProfile.build(columns, spec.features)  # type: ignore[arg-type]
    return Monitor(spec, tuple(spec.features), calibrate(profile, spec.thresholds))


def rows_at(
    minute: int, features: list[dict[str, object]], predictions: list[object] | None = None
) -> list[EventRow]:
    return [
        EventRow(
            event_id=f"{minute}-{i}",
            ts=minute * 60 + i * 50 / len(features),
            features=f,
            prediction=None if predictions is None else predictions[i],
        )
        for i, f in enumerate(features)
    ]


def run(state: MonitorState, *minutes: list[EventRow]) -> list:  # type: ignore[type-arg]
    rows = [row for minute in minutes for row in minute]
    rows.append(EventRow(event_id="tick", ts=len(minutes) * 60 + 61, features={}))
    return state.process(rows, now=NOW).reports


def test_categorical_other_unseen_and_a_spike_of_nulls() -> None:
    rng = np.random.default_rng(1)
    names = [f"c{i}" for i in range(8)]
    p = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.04, 0.01])
    reference = np.array(rng.choice(names, 20_000, p=p), dtype=object)
    reference[:200] = None  # 1% missing
    state = MonitorState(
        monitor([{"name": "c", "kind": "categorical", "max_categories": 6}], {"c": reference})
    )

    def sample(n: int, missing: float = 0.01, unseen: float = 0.0) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for _ in range(n):
            u = rng.uniform()
            value = (
                None
                if u < missing
                else "new!"
                if u < missing + unseen
                else str(rng.choice(names, p=p))
            )
            out.append({"c": value})
        return out

    clean, nulls, unseen = run(
        state,
        rows_at(0, sample(1000)),
        rows_at(1, sample(1000, 0.10)),
        rows_at(2, sample(1000, unseen=0.05)),
    )
    assert not clean.drifted
    assert clean.features[0].reference.missing_rate == pytest.approx(0.01)
    assert nulls.drifted
    assert nulls.features[0].stats.missing_rate == pytest.approx(0.10, abs=0.02)
    assert unseen.drifted
    assert unseen.features[0].stats.unseen_rate == pytest.approx(0.05, abs=0.02)
    assert clean.features[0].stats.unseen_rate == 0.0


def test_booleans_and_their_type_check() -> None:
    rng = np.random.default_rng(2)
    state = MonitorState(
        monitor(
            [{"name": "flag", "kind": "boolean"}],
            {"flag": np.array(["true", "false"] * 5000, dtype=object)},
        )
    )
    events = [{"flag": bool(v)} for v in rng.uniform(size=600) < 0.5]
    shifted = [{"flag": bool(v)} for v in rng.uniform(size=600) < 0.8]
    result = state.process(
        [
            *rows_at(0, events),
            EventRow(event_id="bad", ts=59, features={"flag": 1}),
            *rows_at(1, shifted),
            EventRow(event_id="tick", ts=181, features={}),
        ],
        now=NOW,
    )
    assert [r.reason for r in result.rejections] == ["feature_type"]
    assert "features.flag: expected true/false or null, got 1" in result.rejections[0].message
    assert [r.drifted for r in result.reports] == [False, True]


def test_prediction_drift_uses_the_event_prediction() -> None:
    rng = np.random.default_rng(3)
    features = [
        {"name": "x", "kind": "numeric"},
        {"name": "score", "kind": "numeric", "source": "prediction"},
    ]
    state = MonitorState(
        monitor(features, {"x": rng.normal(size=10_000), "score": rng.beta(2, 5, 10_000)})
    )
    x = [{"x": float(v)} for v in rng.normal(size=1000)]
    same = rows_at(0, x, [float(v) for v in rng.beta(2, 5, 1000)])
    moved = rows_at(1, x, [float(v) for v in rng.beta(5, 2, 1000)])
    bad = [EventRow(event_id="bad", ts=119, features={"x": 1.0}, prediction="high")]
    result = state.process(
        [*same, *moved, *bad, EventRow(event_id="t", ts=181, features={})], now=NOW
    )
    first, second = result.reports
    assert not first.drifted
    assert second.drifted_features == ["score"]
    assert second.features[1].stats.p50 == pytest.approx(5 / 7, abs=0.05)  # beta(5,2) median
    assert [r.message for r in result.rejections] == [
        "prediction: expected a number or null, got 'high'"
    ]


def test_numeric_report_carries_window_and_reference_stats() -> None:
    rng = np.random.default_rng(4)
    state = MonitorState(
        monitor([{"name": "x", "kind": "numeric"}], {"x": rng.normal(10, 2, 10_000)})
    )
    (report,) = run(state, rows_at(0, [{"x": float(v)} for v in rng.normal(10, 2, 800)]))
    stats, reference = report.features[0].stats, report.features[0].reference
    assert stats.count == 800
    assert reference.count == 10_000
    for s in (stats, reference):
        assert s.mean == pytest.approx(10, abs=0.3)
        assert s.std == pytest.approx(2, abs=0.2)
        assert s.p50 == pytest.approx(10, abs=0.3)
        assert s.p95 == pytest.approx(13.29, abs=0.4)
    assert report.features[0].p_value is not None
    assert report.features[0].p_value > 0.001
