"""Seeded statistical checks of the calibrated detectors (part of ``make test``).

False alarms: windows drawn from the reference distribution itself are flagged at
about the configured rate (1%), across 20 features, at 50, 200 and 1,000 events.
Detection: a 0.3-sigma mean shift on 3 of 20 features, a categorical frequency
shift, or a missing-rate jump from 1% to 10% is flagged within the first two full
windows after the change (1,000 events per window).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from scipy.stats import chi2

from driftline.detectors.calibration import Calibration
from driftline.detectors.histogram import Column
from driftline.detectors.profile import ReferenceProfile
from driftline.monitoring import Monitor, calibrate, histograms_of, window_report
from driftline.schemas.events import EventRow
from driftline.schemas.monitors import MonitorSpec
from driftline.stream.processing import MonitorState

pytestmark = pytest.mark.statistical

N_REFERENCE = 10_000
CATEGORIES = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)
CATEGORY_P = np.array([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])
NOW = datetime(2024, 1, 1, tzinfo=UTC)


class Population:
    """20 features: 15 numeric (normal, lognormal, discrete), 5 categorical; 1% missing."""

    def __init__(
        self, mean_shift: float = 0.0, category_shift: bool = False, missing: float = 0.01
    ) -> None:
        self.mean_shift = mean_shift
        self.category_shift = category_shift
        self.missing = missing

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, Column]:
        columns: dict[str, Column] = {}
        for i in range(15):
            shift = self.mean_shift if i < 3 else 0.0
            if i % 3 == 0:
                values = rng.normal(shift, 1.0, n)
            elif i % 3 == 1:
                values = rng.lognormal(0.0, 0.5, n) + shift * np.sqrt(
                    (np.exp(0.25) - 1) * np.exp(0.25)
                )  # shift in units of its sigma
            else:
                values = rng.poisson(3.0, n) + shift * np.sqrt(3.0)
            values[rng.uniform(size=n) < self.missing] = np.nan
            columns[f"x{i:02d}"] = values
        for i in range(5):
            p = CATEGORY_P
            if self.category_shift and i == 0:
                p = np.array([0.25, 0.25, 0.15, 0.12, 0.13, 0.10])
            values = rng.choice(CATEGORIES, n, p=p)
            values[rng.uniform(size=n) < self.missing] = None
            columns[f"c{i}"] = values
        return columns


def spec(**thresholds: Any) -> MonitorSpec:
    features = [{"name": f"x{i:02d}", "kind": "numeric"} for i in range(15)]
    features += [{"name": f"c{i}", "kind": "categorical"} for i in range(5)]
    return MonitorSpec.model_validate(
        {
            "model_id": "m",
            "reference": {"path": "unused.parquet"},
            "features": features,
            "window": {"duration": "1m", "panes": 1, "min_events": 20},
            "thresholds": thresholds,
            "policy": {"consecutive_windows": 1},
        }
    )


def monitor(seed: int, **thresholds: Any) -> Monitor:
    model = spec(**thresholds)
    assert model.features is not None
    reference = Population().sample(np.random.default_rng(seed), N_REFERENCE)
    profile = calibrate(ReferenceProfile.build(reference, model.features), model.thresholds)
    return Monitor(model, tuple(model.features), profile)


@pytest.mark.parametrize("metric", ["psi", "js"])
@pytest.mark.parametrize("correction", ["bonferroni", "bh"])
@pytest.mark.parametrize("n", [50, 200, 1000])
def test_no_drift_is_flagged_at_the_configured_rate(n: int, correction: str, metric: str) -> None:
    windows = 3000 if correction == "bonferroni" and metric == "psi" else 1500
    watched = monitor(7, metric=metric, correction=correction)
    rng = np.random.default_rng(1000 + n)
    population = Population()
    flagged = sum(
        window_report(
            watched, histograms_of(watched.profile, population.sample(rng, n)), 0.0, 60.0, None
        ).drifted
        for _ in range(windows)
    )
    rate = flagged / windows
    assert rate <= 0.02, f"{flagged} of {windows} windows flagged (target 1%)"
    if correction == "bonferroni":  # BH is exact only where the chi-square fit is
        assert rate >= 0.005, f"{flagged} of {windows}: far more conservative than 1%"


def windows_until_flagged(population: Population, seed: int) -> int | None:
    """Tumbling 1,000-event windows: 3 clean, then 4 after the change; the first flagged."""
    watched = monitor(seed)
    state = MonitorState(watched)
    rng = np.random.default_rng(seed + 1)
    clean = Population()
    first_drifted = None
    for minute in range(7):
        source = clean if minute < 3 else population
        columns = source.sample(rng, 1000)
        ts = minute * 60 + np.sort(rng.uniform(0, 60, 1000))
        rows = [
            EventRow.model_construct(
                event_id=str(i),
                ts=float(ts[i]),
                prediction=None,
                segment=None,
                features={name: _plain(columns[name][i]) for name in columns},
            )
            for i in range(1000)
        ]
        for report in state.process(rows, now=NOW).reports:
            index = int(report.window_start.timestamp() // 60)
            if index < 3:
                assert not report.drifted, "a clean window was flagged"
            elif report.drifted and first_drifted is None:
                first_drifted = index - 2
    return first_drifted


def _plain(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


@pytest.mark.parametrize(
    "change",
    [
        Population(mean_shift=0.3),
        Population(category_shift=True),
        Population(missing=0.10),
    ],
    ids=["mean-0.3-sigma-on-3-of-20", "categorical-frequencies", "missing-1-to-10-percent"],
)
def test_drift_is_flagged_within_two_full_windows(change: Population) -> None:
    delays = [windows_until_flagged(change, seed) for seed in range(5)]
    assert all(d is not None and d <= 2 for d in delays), delays


def test_bootstrap_recovers_the_chi_square_approximation_of_psi() -> None:
    """For large windows PSI ~ (1/n + 1/N) chi2(K - 1): the fitted null must agree."""
    rng = np.random.default_rng(3)
    counts = rng.multinomial(N_REFERENCE, np.full(10, 0.1))
    calibration = Calibration.build(
        [np.concatenate([[0, 0], counts, [0]])], "psi", 0.01, seed=1, samples=4000
    )
    for n in (1_000, 10_000):
        fitted = calibration.thresholds(n)[0] / calibration._params(n)[2]  # without max-T
        expected = (1 / n + 1 / N_REFERENCE) * chi2.isf(0.01, 9)
        assert fitted == pytest.approx(expected, rel=0.1)


def test_fixed_psi_threshold_fires_on_most_small_windows_without_drift() -> None:
    """Why calibration exists: PSI > 0.1 on 50-event windows of the reference itself."""
    watched = monitor(9, mode="fixed", value=0.1)
    rng = np.random.default_rng(4)
    flagged = np.mean(
        [
            window_report(
                watched,
                histograms_of(watched.profile, Population().sample(rng, 50)),
                0.0,
                60.0,
                None,
            ).drifted
            for _ in range(200)
        ]
    )
    assert flagged > 0.8
