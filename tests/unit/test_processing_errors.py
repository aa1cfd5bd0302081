"""A batch whose processing fails: each row meets exactly one fate (dead-lettered, and
not counted), and the model's state is as if the batch never came."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from driftline.stream.batch import StreamProcessor
from driftline.stream.processing import MonitorState
from tests.unit.helpers import make_monitor, make_rows
from tests.unit.labelled import labelled_monitor
from tests.unit.test_outcomes import NOW, as_sources, interleaved


def frozen(state: MonitorState) -> Any:
    return json.loads(json.dumps(state.to_state()))


@contextmanager
def failing(monkeypatch: pytest.MonkeyPatch, target: str, after_calls: int) -> Iterator[None]:
    """``target`` (``module:attribute``) raises from its ``after_calls + 1``-th call on."""
    import pkgutil

    module, path = target.split(":")
    original = pkgutil.resolve_name(target)
    owner = pkgutil.resolve_name(f"{module}:{path.rpartition('.')[0]}") if "." in path else None
    name = path.rpartition(".")[2]
    calls = {"n": 0}

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise RuntimeError(f"injected failure in {name}")
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        if owner is None:
            patch.setattr(f"{module}.{name}", broken)
        else:
            patch.setattr(owner, name, broken)
        yield
    assert calls["n"] > after_calls, "the injected failure was never reached"


# Where a failure can come after rows were already counted into the panes: closing a
# window, its policy decision, and a segment's window.
DRIFT_FAILURES = [
    ("driftline.stream.processing:window_report", 2),
    ("driftline.triggers.policy:EpisodePolicy.observe", 1),
    ("driftline.stream.processing:histograms_of", 3),
]


@pytest.mark.parametrize(("target", "after_calls"), DRIFT_FAILURES)
def test_a_failed_batch_leaves_the_windows_as_they_were(
    monkeypatch: pytest.MonkeyPatch, target: str, after_calls: int
) -> None:
    monitor = make_monitor(lateness="30s", consecutive=1)
    rng = np.random.default_rng(2)
    first = make_rows(rng, 600, 0.0, per_second=2.0, jitter=20.0)
    failed = make_rows(rng, 900, 300.0, per_second=2.0, shift=1.5, jitter=20.0)
    after = make_rows(rng, 900, 750.0, per_second=2.0, shift=1.5, jitter=20.0)
    state, untouched = MonitorState(monitor), MonitorState(monitor)
    state.process(first, now=NOW)
    untouched.process(first, now=NOW)
    before = frozen(state)
    with failing(monkeypatch, target, after_calls), pytest.raises(RuntimeError, match="injected"):
        state.process(failed, now=NOW)
    assert frozen(state) == before
    # What follows is as if the failed batch never came.
    continued, expected = state.process(after, now=NOW), untouched.process(after, now=NOW)
    assert [r.model_dump() for r in continued.reports] == [r.model_dump() for r in expected.reports]
    assert [t.data.trigger_id for t in continued.triggers] == [
        t.data.trigger_id for t in expected.triggers
    ]
    assert frozen(state) == frozen(untouched)


OUTCOME_FAILURES = [
    ("driftline.stream.outcomes:OutcomeState._close", 0),
    ("driftline.stream.outcomes:OutcomeState._pane", 1),
    ("driftline.detectors.concept:ConceptDriftDetector.update", 0),
]


@pytest.mark.parametrize(("target", "after_calls"), OUTCOME_FAILURES)
def test_a_failed_batch_leaves_the_label_join_and_performance_as_they_were(
    monkeypatch: pytest.MonkeyPatch, target: str, after_calls: int
) -> None:
    """Labels joined, predictions waiting and performance panes: all undone exactly."""
    values = interleaved(seed=4, n=6000)
    sources = as_sources(values)
    cut_a, cut_b = 2000, 3500
    processor = StreamProcessor({"m": labelled_monitor(labels={"concept": {}})})
    untouched = StreamProcessor({"m": labelled_monitor(labels={"concept": {}})})
    processor.process(sources[:cut_a], NOW)
    untouched.process(sources[:cut_a], NOW)
    before = frozen(processor.states["m"])
    with failing(monkeypatch, target, after_calls):
        result = processor.process(sources[cut_a:cut_b], NOW)
    # Every row and label of the model's group dead-lettered, none counted.
    assert result.accepted == {"m": 0}
    assert result.reports == []
    assert result.performance == []
    assert {d.reason for d in result.dead} == {"processing_error"}
    assert len(result.dead) == cut_b - cut_a
    assert frozen(processor.states["m"]) == before
    continued = processor.process(sources[cut_b:], NOW)
    expected = untouched.process(sources[cut_b:], NOW)
    assert [r.model_dump() for r in continued.performance] == [
        r.model_dump() for r in expected.performance
    ]
    assert frozen(processor.states["m"]) == frozen(untouched.states["m"])


def test_no_row_is_both_counted_and_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the batch processor: a failure on the second window of a batch dead-
    letters the model's rows of that batch, and its first window is not reported."""
    monitor = make_monitor()
    rng = np.random.default_rng(3)
    rows = make_rows(rng, 1200, 0.0, per_second=2.0)
    messages = [
        json.dumps({"model_id": "m", **row.model_dump(mode="json")}).encode() for row in rows
    ]
    processor = StreamProcessor({"m": monitor})
    with failing(monkeypatch, "driftline.stream.processing:window_report", 1):
        result = processor.process(as_sources(messages), NOW)
    assert result.accepted == {"m": 0}
    assert result.reports == []  # not the window that closed before the failure either
    assert len(result.dead) == len(rows)
    assert frozen(processor.states["m"]) == frozen(MonitorState(monitor))


@pytest.mark.parametrize(("kind", "n"), [("adwin", 30_000), ("page_hinkley", 30_000)])
def test_a_concept_detector_rolls_back_exactly_past_its_memory(kind: str, n: int) -> None:
    """More losses than the detector's snapshot keeps (10,000): the rollback is still
    the very state, so later detections come where they would have."""
    import copy

    from driftline.detectors.concept import ConceptDriftDetector

    rng = np.random.default_rng(0)
    detector = ConceptDriftDetector(kind)
    detector.update((rng.uniform(size=n) < 0.1).astype(float))
    twin = copy.deepcopy(detector)
    saved = detector.checkpoint()
    detector.update([0.0] * 10)
    detector.rollback(saved)
    later = (rng.uniform(size=20_000) < 0.3).astype(float)
    assert detector.update(later) == twin.update(later)
    assert detector.to_state() == twin.to_state()
