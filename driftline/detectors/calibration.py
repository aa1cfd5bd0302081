"""Calibrated thresholds: how large each feature's divergence gets with no drift.

A fixed PSI threshold fires on most small windows because sampling noise grows like
1/n. Instead, driftline simulates the no-drift ("null") distribution of every
feature's divergence from its reference histogram, by a two-level parametric
bootstrap. First the population is resampled from the reference (N draws), then a
window is drawn from that population (n draws), so both the window's and the
reference's sampling noise count. This is done on a grid of window sizes.

* Per feature and size, a scaled chi-square ``a * chi2(k)`` is fitted to the
  simulated divergences by mean and variance (Satterthwaite). For large windows
  it recovers the classic PSI ~ (1/n + 1/N) * chi2(K - 1). It gives thresholds
  and p-values at any tail probability, interpolated in log n between grid sizes.
* Multiple testing across a model's features:

  - ``bonferroni``: each feature is tested at ``alpha / F``. Small windows give
    PSI a heavier tail than any chi-square (an empty bin jumps to the 1e-4 floor),
    so the thresholds are then scaled by ``c(n)``, the (1 - alpha) quantile of
    ``max_f score_f / threshold_f`` over the same simulated windows (Westfall-Young
    max-T). A no-drift window is then flagged with probability ``alpha``.
  - ``bh``: Benjamini-Hochberg at ``alpha`` on the fitted model's p-values.

Features are simulated independently; correlated features make the realised rate
lower (conservative).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.special import chdtrc, chdtri

from driftline.detectors.divergence import FloatArray, js_rows, psi_rows

#: Window sizes at which the null distribution is simulated.
DEFAULT_SIZES = (10, 20, 50, 100, 200, 500, 1_000, 3_000, 10_000, 100_000, 1_000_000)
DEFAULT_SAMPLES = 2000
Metric = Literal["psi", "js"]
Correction = Literal["bonferroni", "bh"]
SCORES = {"psi": psi_rows, "js": js_rows}


@dataclass(frozen=True)
class Calibration:
    """Null models of one metric for every feature of a profile, and the window correction.

    >>> counts = [np.array([0, 0, 250, 250, 250, 250, 0])]
    >>> cal = Calibration.build(counts, "psi", alpha=0.01, seed=0)
    >>> float(cal.thresholds(1000)[0] / ((1 / 1000 + 1 / 1000) * 11.34)) > 0.8  # chi2(3)
    True
    >>> bool(cal.p_values(1000, np.array([0.5]))[0] < 1e-6)
    True
    """

    metric: Metric
    alpha: float
    sizes: npt.NDArray[np.float64]  # (S,)
    scale: npt.NDArray[np.float64]  # (F, S): a of a * chi2(k)
    dof: npt.NDArray[np.float64]  # (F, S): k
    correction: npt.NDArray[np.float64]  # (S,): c(n) of the Bonferroni thresholds

    @classmethod
    def build(
        cls,
        references: Sequence[npt.NDArray[np.int64]],
        metric: Metric,
        alpha: float,
        seed: int,
        samples: int = DEFAULT_SAMPLES,
        sizes: Sequence[int] = DEFAULT_SIZES,
    ) -> Calibration:
        """Simulate ``samples`` no-drift windows per size for every feature, and fit."""
        rng = np.random.default_rng(seed)
        n_features = len(references)
        simulated = np.zeros((n_features, len(sizes), samples))
        for f, reference in enumerate(references):
            simulated[f] = _simulate(np.asarray(reference), SCORES[metric], rng, samples, sizes)
        mean = simulated.mean(axis=2)
        var = simulated.var(axis=2, ddof=1)
        constant = (mean <= 0) | (var <= 0)  # any divergence of a constant feature is drift
        scale = np.where(constant, 0.0, var / np.where(constant, 1.0, 2 * mean))
        dof = np.where(constant, 1.0, 2 * mean * mean / np.where(constant, 1.0, var))
        grid = np.asarray(sizes, dtype=np.float64)
        uncorrected = cls(metric, alpha, grid, scale, dof, np.ones(len(sizes)))
        correction = np.ones(len(sizes))
        for s in range(len(sizes)):
            limits = _quantiles(scale[:, s], dof[:, s], alpha / max(1, n_features))
            ratio = np.where(
                limits[:, None] > 0,
                simulated[:, s, :] / np.where(limits[:, None] > 0, limits[:, None], 1.0),
                np.where(simulated[:, s, :] > 0, np.inf, 0.0),
            )
            worst = ratio.max(axis=0)
            finite = worst[np.isfinite(worst)]
            if finite.size:
                correction[s] = max(float(np.quantile(finite, 1 - alpha)), 1e-9)
        return cls(metric, alpha, grid, uncorrected.scale, uncorrected.dof, correction)

    @property
    def n_features(self) -> int:
        return int(self.scale.shape[0])

    def _params(self, n: float) -> tuple[FloatArray, FloatArray, float]:
        x = float(np.log(np.clip(n, self.sizes[0], self.sizes[-1])))
        grid = np.log(self.sizes)
        i = int(np.clip(np.searchsorted(grid, x) - 1, 0, len(grid) - 2))
        w = (x - grid[i]) / (grid[i + 1] - grid[i])
        scale = _log_mix(self.scale[:, i], self.scale[:, i + 1], w)
        dof = _log_mix(self.dof[:, i], self.dof[:, i + 1], w)
        correction = float(
            _log_mix(self.correction[i : i + 1], self.correction[i + 1 : i + 2], w)[0]
        )
        return scale, dof, correction

    def evaluate(
        self, n: float, scores: FloatArray, correction: Correction = "bonferroni"
    ) -> tuple[FloatArray, FloatArray, list[bool]]:
        """``(thresholds, p_values, drifted)`` of one window's per-feature scores."""
        scale, dof, c = self._params(n)
        p_values = _p_values(scale, dof, scores)
        if correction == "bh":
            drifted = benjamini_hochberg(p_values.tolist(), self.alpha)
            level = self.alpha * max(1, sum(drifted)) / max(1, self.n_features)
            return _quantiles(scale, dof, level), p_values, drifted
        limits = c * _quantiles(scale, dof, self.alpha / max(1, self.n_features))
        return limits, p_values, [bool(x) for x in scores > limits]

    def thresholds(
        self, n: float, correction: Correction = "bonferroni", rejections: int = 1
    ) -> FloatArray:
        """Per-feature thresholds for a window of ``n`` events.

        ``bonferroni``: calibrated so a no-drift window flags with probability alpha.
        ``bh``: the score at which a feature would be the ``rejections``-th rejection.
        """
        scale, dof, c = self._params(n)
        if correction == "bonferroni":
            return c * _quantiles(scale, dof, self.alpha / max(1, self.n_features))
        level = self.alpha * max(1, rejections) / max(1, self.n_features)
        return _quantiles(scale, dof, level)

    def p_values(self, n: float, scores: FloatArray) -> FloatArray:
        """Per-feature p-values of these scores under the fitted null models."""
        scale, dof, _ = self._params(n)
        return _p_values(scale, dof, scores)

    def to_state(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "alpha": self.alpha,
            "sizes": self.sizes.tolist(),
            "scale": self.scale.tolist(),
            "dof": self.dof.tolist(),
            "correction": self.correction.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Calibration:
        arrays = (
            np.asarray(state[k], dtype=np.float64) for k in ("sizes", "scale", "dof", "correction")
        )
        return cls(state["metric"], float(state["alpha"]), *arrays)


def _simulate(
    reference: npt.NDArray[np.int64],
    score: Any,
    rng: np.random.Generator,
    samples: int,
    sizes: Sequence[int],
) -> FloatArray:
    total = int(reference.sum())
    population = rng.multinomial(total, reference / total, size=samples) / total
    values = np.empty((len(sizes), samples))
    for s, n in enumerate(sizes):
        values[s] = score(rng.multinomial(n, population).astype(np.float64), reference)
    return values


def _p_values(scale: FloatArray, dof: FloatArray, scores: FloatArray) -> FloatArray:
    positive = scale > 0
    fitted = chdtrc(dof, scores / np.where(positive, scale, 1.0))
    return np.where(positive, fitted, np.where(scores > 0, 0.0, 1.0)).astype(np.float64)


def _quantiles(scale: FloatArray, dof: FloatArray, level: float) -> FloatArray:
    return np.where(scale > 0, scale * chdtri(dof, level), 0.0).astype(np.float64)


def _log_mix(a: FloatArray, b: FloatArray, w: float) -> FloatArray:
    """Interpolate linearly in log space (where both are positive), else linearly."""
    both = (a > 0) & (b > 0)
    log_mix = np.exp((1 - w) * np.log(np.where(both, a, 1.0)) + w * np.log(np.where(both, b, 1.0)))
    return np.where(both, log_mix, (1 - w) * a + w * b).astype(np.float64)


def bonferroni(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Reject where p <= alpha / m (controls the chance of any false alarm at alpha).

    >>> bonferroni([0.001, 0.02, 0.5], 0.05)
    [True, False, False]
    """
    cut = alpha / max(1, len(p_values))
    return [p <= cut for p in p_values]


def benjamini_hochberg(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Benjamini-Hochberg step-up: reject the k smallest p with p_(k) <= alpha * k / m.

    With no drift anywhere it also bounds the chance of any false alarm by alpha.

    >>> benjamini_hochberg([0.001, 0.02, 0.03, 0.5], 0.05)
    [True, True, True, False]
    """
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    ranked = np.asarray(p_values)[order]
    passing = np.nonzero(ranked <= alpha * np.arange(1, m + 1) / m)[0]
    reject = np.zeros(m, dtype=bool)
    if passing.size:
        reject[order[: passing[-1] + 1]] = True
    return [bool(r) for r in reject]
