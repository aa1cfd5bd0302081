"""Labels joined to predictions in the stream: performance windows, dead letters, triggers."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.profile import ReferenceProfile
from driftline.exceptions import ReferenceDataError
from driftline.monitoring import profile_file
from driftline.schemas.events import decode_message
from driftline.schemas.monitors import LabelsSpec
from driftline.schemas.reports import PerformanceReport
from driftline.stream.batch import BatchResult, StreamProcessor
from driftline.stream.deadletter import SourceMessage
from tests.unit.labelled import (
    START,
    as_sources,
    label_message,
    labelled_monitor,
    prediction_messages,
    probability,
    same_reports,
    truth,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def interleaved(
    seed: int = 1, n: int = 4000, delay: float = 60.0, flip_at: int | None = None
) -> list[bytes]:
    """Predictions at 5/s and each label ``delay`` seconds later, in event-time order."""
    rng = np.random.default_rng(seed)
    if flip_at is None:
        messages, labels = prediction_messages(rng, n, START, 5)
    else:
        before = prediction_messages(rng, flip_at, START, 5)
        after = prediction_messages(rng, n - flip_at, START + flip_at / 5, 5, flipped=True)
        messages, labels = before[0] + after[0], before[1] + after[1]
    timed = [(START + i / 5, 0, v) for i, v in enumerate(messages)]
    timed += [(label["ts"] + delay, 1, label_message(label, delay)) for label in labels]
    timed.sort(key=lambda t: (t[0], t[1]))
    return [v for _, _, v in timed]


def run(
    processor: StreamProcessor, values: list[bytes], batch: int = 500
) -> tuple[list[PerformanceReport], BatchResult]:
    reports: list[PerformanceReport] = []
    total = BatchResult()
    sources = as_sources(values)
    for i in range(0, len(sources), batch):
        result = processor.process(sources[i : i + batch], NOW)
        reports += result.performance
        total.dead += result.dead
        total.triggers += result.triggers
        for name, count in result.labels.get("m", {}).items():
            total.labels.setdefault("m", {})[name] = total.labels.get("m", {}).get(name, 0) + count
    return reports, total


def test_label_events_decode_alone_and_inside_batches() -> None:
    single = decode_message(b'{"model_id": "m", "event_id": "e1", "ts": 5, "label": "yes"}')
    assert (single.model_id, [r.label for r in single.labels], single.rows) == ("m", ["yes"], [])
    batch = decode_message(
        orjson.dumps(
            {
                "model_id": "m",
                "events": [
                    {"event_id": "a", "ts": 1, "features": {"x": 1.0}, "prediction": 0.2},
                    {"event_id": "b", "ts": 2, "label": "no"},
                    {"event_id": "c", "ts": 3, "label": ["bad"]},
                ],
            }
        )
    )
    assert batch.order == [True, False]
    assert [e.reason for e in batch.errors] == ["label_schema"]
    assert "events[2]: label" in batch.errors[0].message


def test_performance_windows_by_prediction_time_with_full_coverage() -> None:
    monitor = labelled_monitor(policy={"performance": {"metric": "accuracy"}})
    reports, total = run(StreamProcessor({"m": monitor}), interleaved())
    assert total.dead == []
    assert total.triggers == []
    assert reports, "performance windows closed"
    full = [r for r in reports if r.predictions == 1500]  # 5 panes of 300 predictions
    assert full
    assert all(r.labelled == 1500 and r.coverage == 1.0 for r in full)
    for report in full:
        assert report.metrics["accuracy"] == pytest.approx(0.9, abs=0.04)
        assert report.check is not None
        assert not report.check.degraded
        assert report.check.reference == pytest.approx(0.9, abs=0.02)
        assert report.label_drift is not None
        assert not report.label_drift.drifted
        assert not report.drifted


def test_labels_before_with_and_long_after_their_predictions() -> None:
    monitor = labelled_monitor(labels={"horizon": "2m"})
    processor = StreamProcessor({"m": monitor})
    rng = np.random.default_rng(3)
    messages, labels = prediction_messages(rng, 1500, START, 5)  # 300 s of predictions
    early = [label_message(labels[i], -30) for i in range(0, 100)]  # before (by arrival)
    values = early + messages[:600]
    values += [label_message(labels[i], 1) for i in range(100, 400)]  # with
    values += [label_message(labels[i], 2) for i in range(100, 110)]  # duplicates
    values += messages[600:]
    values += [label_message(labels[i], 400) for i in range(400, 450)]  # long after
    values += [orjson.dumps({**labels[0], "event_id": "never", "ts": START + 200})]  # unknown
    values += [orjson.dumps({**labels[1], "event_id": "e-x", "label": "maybe"})]  # no class
    more, _ = prediction_messages(rng, 1000, START + 300, 5)  # event time moves on
    reports, total = run(processor, values + more)
    reasons: dict[str, int] = {}
    for letter in total.dead:
        reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
    assert reasons == {
        "label_expired": 50,
        "label_duplicate": 10,
        "label_unknown": 1,
        "label_type": 1,
    }
    # The early and the on-time labels joined; each counts in the windows of its prediction.
    assert total.labels["m"]["joined"] == 400
    assert max(r.labelled for r in reports) > 0
    assert min(r.coverage for r in reports if r.coverage is not None) < 1
    dead = next(d for d in total.dead if d.reason == "label_unknown")
    assert json.loads(dead.value)["event_id"] == "never"
    assert dict(dead.headers())["driftline-source-topic"] == b"t.predictions"


def test_labels_for_a_model_without_a_labels_section_are_dead_lettered() -> None:
    monitor = labelled_monitor()
    plain = monitor.spec.model_copy(update={"labels": None})
    processor = StreamProcessor({"m": type(monitor)(plain, monitor.features, monitor.profile)})
    _, total = run(processor, [b'{"model_id": "m", "event_id": "a", "ts": 1, "label": "yes"}'])
    assert [d.reason for d in total.dead] == ["labels_not_configured"]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 5999), max_size=6, unique=True))
def test_performance_does_not_depend_on_batching(cuts: list[int]) -> None:
    values = interleaved(seed=5, n=3000, delay=90)
    expected, _ = run(StreamProcessor({"m": labelled_monitor()}), values, batch=10**6)
    processor = StreamProcessor({"m": labelled_monitor()})
    reports: list[PerformanceReport] = []
    bounds = [0, *sorted(cuts), len(values)]
    for a, b in itertools.pairwise(bounds):
        reports += processor.process(as_sources(values)[a:b], NOW).performance
    assert same_reports(reports, expected)


def test_a_restart_with_pending_joins_loses_nothing() -> None:
    values = interleaved(seed=7, n=5000, delay=200, flip_at=2000)
    monitor = labelled_monitor(policy={"performance": {"metric": "f1"}})
    expected, whole = run(StreamProcessor({"m": monitor}), values)
    assert any(r.drifted for r in expected)
    for restart_at in (700, 2300, 4100):
        first = StreamProcessor({"m": monitor})
        reports, total = run(first, values[:restart_at])
        state = json.loads(json.dumps(first.states["m"].to_state()))
        assert state["outcomes"]["join"]["predictions"], "joins were pending"
        second = StreamProcessor({"m": monitor})
        assert second.states["m"].restore(state)
        more, rest = run(second, values[restart_at:])
        assert same_reports(reports + more, expected)
        assert [t.data.trigger_id for t in total.triggers + rest.triggers] == [
            t.data.trigger_id for t in whole.triggers
        ]


def test_a_flipped_label_function_degrades_performance_and_fires_once() -> None:
    values = interleaved(seed=11, n=8000, delay=60, flip_at=3000)
    monitor = labelled_monitor(policy={"performance": {"metric": "f1"}})
    reports, total = run(StreamProcessor({"m": monitor}), values)
    flip = START + 3000 / 5
    before = [r for r in reports if r.window_end.timestamp() <= flip]
    after = [r for r in reports if r.window_start.timestamp() >= flip]
    assert before
    assert not any(r.drifted for r in before)
    assert after
    assert all(r.drifted for r in after)
    assert all(r.check is not None and r.check.degraded for r in after)
    assert any(r.concept_detections for r in reports if r.window_end.timestamp() > flip)
    (trigger,) = [t for t in total.triggers if t.data.source == "performance"]
    data = trigger.data
    assert (data.source, data.status, data.severity) == ("performance", "fired", "critical")
    assert data.performance is not None
    assert data.performance.metric == "f1"
    assert data.performance.value is not None
    assert data.performance.limit is not None
    assert data.performance.value < data.performance.limit
    assert data.trigger_id.startswith("trg_")
    assert data.drifted_features == []


def test_regression_reports_mae_and_rmse() -> None:
    from dataclasses import replace

    from driftline.detectors.outcomes import OutcomeProfile, Scorer

    base = labelled_monitor()
    assert base.spec.labels is not None
    spec = base.spec.model_copy(
        update={
            "labels": base.spec.labels.model_copy(
                update={"task": "regression", "classes": None, "prediction": "label"}
            )
        }
    )
    rng = np.random.default_rng(2)
    truth = rng.normal(10, 2, 3000)
    outcomes = OutcomeProfile.build(
        Scorer("regression"), list(truth), list(truth + rng.normal(0, 1, 3000))
    )
    profile = replace(base.profile, outcomes=outcomes.calibrated("psi", 0.01, 200))
    monitor = replace(base, spec=spec, profile=profile)
    rows: list[bytes] = []
    for i in range(4000):
        ts = START + i / 5
        value = float(rng.normal(10, 2))
        rows.append(
            orjson.dumps(
                {
                    "model_id": "m",
                    "event_id": f"r{i}",
                    "ts": ts,
                    "features": {"x": 0.1},
                    "prediction": value + float(rng.normal(0, 1)),
                    "label": value,
                }
            )
        )
    reports, total = run(StreamProcessor({"m": monitor}), rows)
    assert total.dead == []
    full = [r for r in reports if r.labelled == 1500]
    assert full
    for report in full:
        assert report.metrics["mae"] == pytest.approx(0.8, abs=0.1)  # E|N(0,1)| = 0.798
        assert report.metrics["rmse"] == pytest.approx(1.0, abs=0.1)
        assert report.per_class is None


def test_a_reference_file_gives_the_outcome_profile(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    path = tmp_path / "reference.parquet"
    pq.write_table(
        pa.table({"x": x, "label": truth(rng, x).tolist(), "prediction": probability(x)}), path
    )
    labels = LabelsSpec(task="classification", prediction="probability")
    features, profile = profile_file(path, labels=labels)
    assert [f.name for f in features] == ["x"]  # the outcome columns are not features
    assert profile.outcomes is not None
    assert profile.outcomes.scorer.classes == ("no", "yes")  # inferred from the labels
    assert profile.outcomes.reference_value("accuracy") == pytest.approx(0.9, abs=0.02)
    # Stored and loaded, it is the same profile (and fingerprint).
    again = ReferenceProfile.from_state(json.loads(json.dumps(profile.to_state())))
    assert again.fingerprint() == profile.fingerprint()
    with pytest.raises(ReferenceDataError, match=r"labels\.reference_label: no column 'truth'"):
        profile_file(path, labels=labels.model_copy(update={"reference_label": "truth"}))
    one_class = tmp_path / "one.parquet"
    pq.write_table(pa.table({"x": x, "label": ["no"] * 2000, "prediction": x}), one_class)
    with pytest.raises(ReferenceDataError, match=r"1 class\(es\); give labels.classes"):
        profile_file(one_class, labels=labels)


def test_a_changed_labels_section_restarts_outcomes_only() -> None:
    values = interleaved(seed=3, n=3000)
    monitor = labelled_monitor()
    processor = StreamProcessor({"m": monitor})
    run(processor, values)
    state = json.loads(json.dumps(processor.states["m"].to_state()))
    assert monitor.spec.labels is not None
    changed = monitor.spec.model_copy(
        update={"labels": monitor.spec.labels.model_copy(update={"min_labelled": 10})}
    )
    restored = StreamProcessor({"m": type(monitor)(changed, monitor.features, monitor.profile, 1)})
    assert restored.states["m"].restore(state)
    drift = restored.states["m"].to_state()
    assert drift["ring"] == state["ring"]  # the drift windows continue
    outcomes = restored.states["m"].outcomes
    assert outcomes is not None
    assert outcomes.join.pending == 0  # afresh


def test_waiting_predictions_stay_within_max_pending_in_the_stream() -> None:
    monitor = labelled_monitor(labels={"horizon": "3650d", "max_pending": 5000})
    processor = StreamProcessor({"m": monitor})
    outcomes = processor.states["m"].outcomes
    assert outcomes is not None
    for start in range(0, 200_000, 1000):
        rows = [
            {"event_id": f"p{i}", "ts": START + i / 50, "features": {"x": 0.1}, "prediction": 0.4}
            for i in range(start, start + 1000)
        ]
        body = orjson.dumps({"model_id": "m", "events": rows})
        processor.process([SourceMessage(b"m", body, "t", 0, start)], NOW)
        assert outcomes.join.pending <= 5000
        assert outcomes.join.held <= 2 * 5000
    assert outcomes.join.counts.evicted_predictions == 200_000 - 5000


def test_probability_predictions_need_two_classes_listed_or_inferred(tmp_path: Path) -> None:
    """A 3-class reference under prediction: probability is refused at reference building
    (it gave an accuracy of 0.33 where the model's was 0.75)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=3000)
    path = tmp_path / "three.parquet"
    classes = np.where(x < -0.5, "low", np.where(x > 0.5, "high", "mid"))
    pq.write_table(pa.table({"x": x, "label": classes, "prediction": probability(x)}), path)
    labels = LabelsSpec(task="classification", prediction="probability")
    with pytest.raises(ReferenceDataError, match=r"labels hold 3 \(high, low, mid\); list the two"):
        profile_file(path, labels=labels)
    with pytest.raises(ValueError, match="needs exactly 2 classes"):
        LabelsSpec(task="classification", prediction="probability", classes=["a", "b", "c"])
    two = tmp_path / "two.parquet"
    pq.write_table(pa.table({"x": x, "label": truth(rng, x), "prediction": probability(x)}), two)
    with pytest.raises(ReferenceDataError, match="positive_class 'maybe' is not one of"):
        profile_file(
            two,
            labels=LabelsSpec(
                task="classification", prediction="probability", positive_class="maybe"
            ),
        )


def test_numeric_classes_are_listed_as_numbers_and_match_numeric_labels(tmp_path: Path) -> None:
    """``classes: [0, 1]`` as YAML writes it; events carry ``label: 1``."""
    import yaml

    spec = yaml.safe_load(
        "task: classification\nclasses: [0, 1]\npositive_class: 1\nprediction: probability\n"
    )
    labels = LabelsSpec.model_validate(spec)
    assert labels.classes == ["0", "1"]
    assert labels.positive_class == "1"
    both = {"task": "classification", "classes": [0.0, True]}
    assert LabelsSpec.model_validate(both).classes == ["0", "true"]
    rng = np.random.default_rng(5)
    x = rng.normal(size=2000)
    numeric_truth = (truth(rng, x) == "yes").astype(int).tolist()  # 0 / 1, not strings
    path = tmp_path / "numeric.parquet"
    pq.write_table(pa.table({"x": x, "label": numeric_truth, "prediction": probability(x)}), path)
    _, profile = profile_file(path, labels=labels)
    assert profile.outcomes is not None
    assert profile.outcomes.scorer.classes == ("0", "1")
    assert profile.outcomes.reference_value("accuracy") == pytest.approx(0.9, abs=0.02)
    assert profile.outcomes.scorer.label_problem(1) is None
    assert profile.outcomes.scorer.label_problem(2) is not None


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_concept_drift_counts_only_a_change_for_the_worse(kind: str) -> None:
    """Errors that shrink (an MAE from 846 to 734) are not a degradation; growing ones are."""
    from driftline.detectors.concept import ConceptDriftDetector

    rng = np.random.default_rng(6)
    before, better, worse = (
        rng.normal(846, 60, 3000),
        rng.normal(734, 60, 3000),
        rng.normal(960, 60, 3000),
    )
    params = {"threshold": 20_000.0} if kind == "page_hinkley" else {}
    improving = ConceptDriftDetector(kind, params)
    assert improving.update(np.abs(np.concatenate([before, better]))) == []
    assert improving.detections == 0
    degrading = ConceptDriftDetector(kind, params)
    hits = degrading.update(np.abs(np.concatenate([before, worse])))
    assert hits
    assert 3000 <= hits[0] < 3500
    again = ConceptDriftDetector.from_state(orjson.loads(orjson.dumps(improving.to_state())))
    assert (again.detections, again.improvements) == (improving.detections, improving.improvements)


def test_page_hinkley_watches_for_increases_only() -> None:
    from driftline.schemas.monitors import ConceptSpec

    with pytest.raises(ValueError, match=r"params\.mode: 'both'; Page-Hinkley watches the loss"):
        ConceptSpec(detector="page_hinkley", params={"mode": "both"})


def test_an_improving_regression_model_fires_no_performance_request() -> None:
    """The observed case: MAE 734 against a reference of 846 fired source: performance."""
    from dataclasses import replace

    from driftline.detectors.outcomes import OutcomeProfile, Scorer

    base = labelled_monitor(
        labels={"task": "regression", "classes": None, "prediction": "label"},
        policy={"performance": {"metric": "mae"}},
    )
    spec = base.spec
    rng = np.random.default_rng(7)
    truth = rng.normal(5000, 500, 4000)
    outcomes = OutcomeProfile.build(
        Scorer("regression"),
        list(truth),
        list(truth + rng.normal(0, 1060, 4000)),  # MAE ~846
    )
    calibrated = outcomes.calibrated("psi", 0.01, 200)
    monitor = replace(base, spec=spec, profile=replace(base.profile, outcomes=calibrated))
    rows = []
    for i in range(12_000):
        value = float(rng.normal(5000, 500))
        noise = 1060 if i < 3000 else 920  # MAE 846, then 734: better
        rows.append(
            orjson.dumps(
                {
                    "model_id": "m",
                    "event_id": f"r{i}",
                    "ts": START + i / 10,
                    "features": {"x": 0.1},
                    "prediction": value + float(rng.normal(0, noise)),
                    "label": value,
                }
            )
        )
    processor = StreamProcessor({"m": monitor})
    reports, total = run(processor, rows)
    assert total.dead == []
    assert reports
    assert [t for t in total.triggers if t.data.source == "performance"] == []
    assert not any(r.drifted for r in reports)
    assert sum(r.concept_detections for r in reports) == 0
    outcome_state = processor.states["m"].outcomes
    assert outcome_state is not None
    assert outcome_state.detector is not None
    assert outcome_state.detector.improvements >= 1  # ADWIN saw the change, for the better
