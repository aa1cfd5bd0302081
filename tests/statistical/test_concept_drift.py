"""Concept drift over per-prediction losses: no alarm without a flip, bounded delay with one."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.detectors.concept import ConceptDriftDetector

pytestmark = pytest.mark.statistical

SEEDS = range(10)
FLIP = 20_000


def zero_one_losses(rng: np.random.Generator, n: int, flip_at: int | None) -> np.ndarray:
    """A model predicting sign(x) for labels sign(x) with 10% noise; at ``flip_at`` the
    label function flips for x > 1 (about 16% of traffic): the error rate rises ~0.1->0.23."""
    x = rng.normal(size=n)
    truth = np.sign(x)
    noise = rng.random(n) < 0.1
    truth[noise] = -truth[noise]
    if flip_at is not None:
        flipped = (np.arange(n) >= flip_at) & (x > 1)
        truth[flipped] = -truth[flipped]
    return (np.sign(x) != truth).astype(np.float64)


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_no_alarm_over_100k_predictions_without_a_flip(kind: str) -> None:
    for seed in SEEDS:
        detector = ConceptDriftDetector(kind)  # type: ignore[arg-type]
        assert detector.update(zero_one_losses(np.random.default_rng(seed), 100_000, None)) == []


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_a_flip_is_detected_within_a_bounded_delay(kind: str) -> None:
    delays = []
    for seed in SEEDS:
        detector = ConceptDriftDetector(kind)  # type: ignore[arg-type]
        hits = detector.update(zero_one_losses(np.random.default_rng(seed), 2 * FLIP, FLIP))
        assert hits, f"seed {seed}: the flip was not detected"
        assert hits[0] >= FLIP, f"seed {seed}: an alarm before the flip"
        delays.append(hits[0] - FLIP)
    assert max(delays) <= 2_000, delays


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_a_restored_detector_continues_exactly(kind: str) -> None:
    losses = zero_one_losses(np.random.default_rng(42), 2 * FLIP, FLIP)
    losses = np.round(losses, 6).astype(np.float32).astype(np.float64)  # as stored
    whole = ConceptDriftDetector(kind)  # type: ignore[arg-type]
    expected = whole.update(losses)
    # Exact while fewer than `memory` (10,000) losses came since the last detection.
    for cut in (5_000, 9_999, FLIP + 5_000):
        first = ConceptDriftDetector(kind)  # type: ignore[arg-type]
        before = first.update(losses[:cut])
        restored = ConceptDriftDetector.from_state(first.to_state())
        assert restored.to_state() == first.to_state()  # so a second restart is exact too
        after = [cut + i for i in restored.update(losses[cut:])]
        assert before + after == expected, cut
        assert restored.detections == len(expected)
