"""Drift reports: what one closed window looked like against the reference.

Per-feature parts are frozen dataclasses (built for every feature of every window,
so they must be cheap); pydantic validates and serialises them inside ``DriftReport``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True, slots=True)
class FeatureStats:
    """Moments of a feature in a window (``mean`` and the rest are None for categorical ones)."""

    count: int
    missing_rate: float
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p95: float | None = None
    #: Categorical features: share of values the reference never had.
    unseen_rate: float | None = None


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One feature of one window compared with the reference."""

    name: str
    kind: Literal["numeric", "categorical", "boolean"]
    psi: float
    js: float
    metric: Literal["psi", "js"]
    threshold: float
    #: Calibrated mode: the chance of a score this high without drift (per feature).
    p_value: float | None
    drifted: bool
    #: The window's statistics, and the reference's for comparison.
    stats: FeatureStats
    reference: FeatureStats

    @property
    def score(self) -> float:
        """The value of the metric the threshold applies to."""
        return self.psi if self.metric == "psi" else self.js

    @property
    def ratio(self) -> float:
        """How far past (above 1) or below its threshold the score is."""
        return self.score / self.threshold if self.threshold > 0 else float(self.score > 0)


class DriftReport(BaseModel):
    """One closed window of one model: every feature, and the overall verdict.

    ``sufficient`` is False when the window held fewer than the monitor's ``min_events``
    events: such a window is reported but never drifted.
    """

    model_config = ConfigDict(frozen=True)

    model_id: str
    #: None for the model's whole traffic; else one segment (or "other").
    segment: str | None = None
    model_version: str | None
    reference_version: int | None
    window_start: datetime
    window_end: datetime
    n: int
    sufficient: bool
    drifted: bool
    #: Drifted features, the furthest past its threshold first.
    drifted_features: list[str]
    features: list[FeatureDrift]


class PerformanceCheck(BaseModel):
    """The policy's performance condition on one window."""

    model_config = ConfigDict(frozen=True)

    metric: str
    value: float | None
    reference: float | None
    #: The worst value allowed at this window's number of labelled predictions.
    limit: float | None
    tolerance: float | Literal["calibrated"]
    degraded: bool


class PerformanceReport(BaseModel):
    """One closed performance window of one model: its predictions (by their event time)
    joined to the labels that came within the horizon.

    ``sufficient`` is False below ``labels.min_labelled`` labelled predictions: such a
    window is reported but never degraded. ``drifted`` is the verdict the trigger policy
    sees: the metric check failed, concept drift was detected (``policy.concept_drift``),
    or the label distribution drifted (``policy.label_drift``).
    """

    model_config = ConfigDict(frozen=True)

    model_id: str
    model_version: str | None
    reference_version: int | None
    window_start: datetime
    window_end: datetime
    task: Literal["classification", "regression"]
    #: Scoreable predictions in the window, and how many of them got their label.
    predictions: int
    labelled: int
    coverage: float | None
    sufficient: bool
    #: accuracy, f1 (macro), log_loss; or mae, rmse, bias. None where undefined.
    metrics: dict[str, float | None]
    reference_metrics: dict[str, float | None] | None
    per_class: dict[str, dict[str, float | None]] | None = None
    check: PerformanceCheck | None
    label_drift: FeatureDrift | None
    #: Concept-drift detections on the window's labelled predictions.
    concept_detections: int
    drifted: bool
    reasons: list[str]
