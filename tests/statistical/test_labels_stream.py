"""Concept drift through the stream: labelled predictions of a model whose label function
flips at a known point are flagged within a bounded delay; without the flip, 100k
labelled predictions raise no concept-drift alarm."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from driftline.stream.batch import StreamProcessor
from driftline.stream.deadletter import SourceMessage
from tests.unit.labelled import START, labelled_monitor, probability, truth

pytestmark = pytest.mark.statistical

NOW = datetime(2030, 1, 1, tzinfo=UTC)
BATCH = 200


def feed(
    processor: StreamProcessor, rng: np.random.Generator, n: int, first: int, flipped: bool
) -> None:
    """``n`` labelled predictions at 20/s (labels inline: known as they are scored)."""
    for start in range(first, first + n, BATCH):
        x = rng.normal(size=BATCH)
        labels = truth(rng, x, flipped)
        p = probability(x)
        rows = [
            {
                "event_id": f"e{start + i}",
                "ts": START + (start + i) / 20,
                "features": {"x": float(x[i])},
                "prediction": float(p[i]),
                "label": str(labels[i]),
            }
            for i in range(BATCH)
        ]
        body = orjson.dumps({"model_id": "m", "events": rows})
        result = processor.process([SourceMessage(b"m", body, "t", 0, start)], NOW)
        assert result.dead == []


def detections(processor: StreamProcessor) -> int:
    outcomes = processor.states["m"].outcomes
    assert outcomes is not None
    assert outcomes.detector is not None
    return outcomes.detector.detections


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_no_concept_drift_alarm_over_100k_labelled_predictions(detector: str) -> None:
    processor = StreamProcessor({"m": labelled_monitor(labels={"concept": {"detector": detector}})})
    feed(processor, np.random.default_rng(1), 100_000, 0, flipped=False)
    assert detections(processor) == 0


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_a_flipped_label_function_is_detected_within_2000_predictions(detector: str) -> None:
    rng = np.random.default_rng(2)
    processor = StreamProcessor({"m": labelled_monitor(labels={"concept": {"detector": detector}})})
    feed(processor, rng, 20_000, 0, flipped=False)
    assert detections(processor) == 0
    for seen in range(0, 2000, BATCH):
        feed(processor, rng, BATCH, 20_000 + seen, flipped=True)
        if detections(processor):
            break
    assert detections(processor) >= 1, "no concept drift within 2,000 predictions of the flip"
