"""Calibrated performance limits: an unchanged model is degraded about as often as
``false_alarm_rate`` says, at any window size; a real drop is caught."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.detectors.outcomes import Metric, OutcomeProfile, Scorer, metric_value
from tests.unit.labelled import probability, truth

pytestmark = pytest.mark.statistical

ALPHA = 0.01
WINDOWS = 1000
SCORER = Scorer("classification", ("no", "yes"), probability=True)


def population(rng: np.random.Generator, n: int, flipped_share: float = 0.0) -> tuple[list, list]:
    """Predictions and labels of the model; ``flipped_share`` of labels flip (a drop)."""
    x = rng.normal(size=n)
    labels = truth(rng, x)
    flip = rng.random(n) < flipped_share
    labels = np.where(flip, np.where(labels == "yes", "no", "yes"), labels)
    return list(probability(x)), list(labels)


@pytest.mark.parametrize("metric", ["accuracy", "f1", "log_loss"])
@pytest.mark.parametrize("n", [100, 500, 2000])
def test_false_alarms_of_an_unchanged_model(metric: Metric, n: int) -> None:
    rng = np.random.default_rng(n)
    alarms = 0
    for _ in range(10):  # several references: the limit's own sampling error counts too
        predictions, labels = population(rng, 5000)
        profile = OutcomeProfile.build(SCORER, labels, predictions)
        limit = profile.limit(metric, "calibrated", n, ALPHA)
        assert limit is not None
        for _ in range(WINDOWS // 10):
            value = metric_value(SCORER.score(*population(rng, n)), metric)
            assert value is not None
            alarms += value > limit if metric == "log_loss" else value < limit
    rate = alarms / WINDOWS
    assert rate <= 3 * ALPHA, f"{metric} n={n}: {rate:.3f} of unchanged windows degraded"


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
def test_a_drop_of_five_points_is_caught_at_2000_labels(metric: Metric) -> None:
    rng = np.random.default_rng(7)
    predictions, labels = population(rng, 5000)
    profile = OutcomeProfile.build(SCORER, labels, predictions)
    limit = profile.limit(metric, "calibrated", 2000, ALPHA)
    assert limit is not None
    caught = 0
    for _ in range(100):
        value = metric_value(SCORER.score(*population(rng, 2000, flipped_share=0.06)), metric)
        assert value is not None
        caught += value < limit
    assert caught >= 95, caught
