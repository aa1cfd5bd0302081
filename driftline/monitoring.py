"""Monitors at run time: a config, its reference profile, and window-versus-reference reports.

The worker, ``driftline evaluate`` and the tests all compare data through this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from driftline.datafiles import infer_features, read_table, table_columns
from driftline.detectors.binning import CategoricalBinning, NumericBinning
from driftline.detectors.histogram import Column, Histogram
from driftline.detectors.outcomes import OutcomeProfile, Scorer
from driftline.detectors.profile import FeatureProfile, ReferenceProfile
from driftline.exceptions import ReferenceDataError
from driftline.schemas.monitors import FeatureSpec, LabelsSpec, MonitorSpec, ThresholdSpec
from driftline.schemas.reports import DriftReport, FeatureDrift, FeatureStats
from driftline.schemas.values import category_label


@dataclass(frozen=True)
class Monitor:
    """A monitored model ready to run: its spec, its features and its reference profile."""

    spec: MonitorSpec
    features: tuple[FeatureSpec, ...]
    profile: ReferenceProfile
    reference_version: int | None = None
    #: The stored monitor it runs: when it was made (a monitor deleted and made again is
    #: another; its triggers are not delivered), and its version (None: not stored).
    made_at: datetime | None = None
    record_key: tuple[int, datetime] | None = None

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @cached_property
    def fingerprint(self) -> str:
        """The reference profile's content hash (as stored with its version)."""
        return self.profile.fingerprint()


def build_monitor(spec: MonitorSpec, stored: ReferenceProfile | None = None) -> Monitor:
    """Build the reference profile of a monitor whose reference is a data file.

    ``stored`` (the model's latest stored profile) is used instead when it is this file's
    profile, calibrated: calibration is seeded from the profile's content, so it would
    come out the same, and it is the slow part (``bench/memory.py``: 173 s to start 100
    models of 50 features on an empty store, 14.7 s on restart).
    """
    if spec.reference.path is None:
        raise ReferenceDataError(f"model {spec.model_id}: the reference is not a file")
    features, profile = profile_file(spec.reference.path, spec.features, labels=spec.labels)
    if stored is not None and stored.uncalibrated().fingerprint() == profile.fingerprint():
        profile = stored
    return Monitor(spec, tuple(features), calibrate(profile, spec.thresholds))


def profile_file(
    path: Path,
    features: Sequence[FeatureSpec] | None = None,
    names: Sequence[str] | None = None,
    labels: LabelsSpec | None = None,
) -> tuple[list[FeatureSpec], ReferenceProfile]:
    """The reference profile of a data file: of ``features``, or inferred from its columns
    (not the label and prediction columns); with ``labels``, its outcomes too."""
    table = read_table(path)
    outcome_columns = (
        [] if labels is None else [labels.reference_label, labels.reference_prediction]
    )
    chosen = (
        list(features)
        if features
        else [f for f in infer_features(table, names) if f.name not in outcome_columns]
    )
    if not chosen:
        raise ReferenceDataError(f"{path}: no numeric or categorical columns")
    try:
        profile = ReferenceProfile.build(table_columns(table, chosen), chosen)
    except ValueError as exc:
        raise ReferenceDataError(f"{path}: {exc}") from None
    if labels is not None:
        profile = replace(profile, outcomes=outcome_profile(table, labels, path))
    return chosen, profile


def outcome_profile(table: pa.Table, labels: LabelsSpec, path: Path) -> OutcomeProfile:
    """The reference's label distribution and (with a prediction column) performance."""
    names = set(table.column_names)
    if labels.reference_label not in names:
        raise ReferenceDataError(
            f"{path}: labels.reference_label: no column {labels.reference_label!r} "
            "with the true labels"
        )
    truth = table.column(labels.reference_label).to_pylist()
    predicted: list[Any] | None = None
    if labels.reference_prediction is not None and labels.reference_prediction in names:
        predicted = table.column(labels.reference_prediction).to_pylist()
    keep = [i for i, v in enumerate(truth) if v is not None]
    classes = labels.classes
    if labels.task == "classification" and classes is None:
        classes = sorted({c for i in keep if (c := category_label(truth[i])) is not None})
        if len(classes) < 2:
            raise ReferenceDataError(
                f"{path}: the labels hold {len(classes)} class(es); give labels.classes"
            )
        if labels.prediction == "probability" and len(classes) != 2:
            raise ReferenceDataError(
                f"{path}: labels.prediction: probability scores one class of two, and the "
                f"labels hold {len(classes)} ({', '.join(classes[:10])}); list the two "
                "classes under labels.classes, or use prediction: label"
            )
    if labels.positive_class is not None and labels.positive_class not in (classes or ()):
        raise ReferenceDataError(
            f"{path}: labels.positive_class {labels.positive_class!r} is not one of the "
            f"classes {classes}"
        )
    scorer = Scorer(
        labels.task,
        tuple(classes or ()),
        labels.prediction == "probability",
        labels.positive_class,
        labels.decision_threshold,
    )
    for i in keep:
        if (problem := scorer.label_problem(truth[i])) is not None:
            raise ReferenceDataError(f"{path}: row {i}: {labels.reference_label} {problem}")
    if predicted is not None:
        keep = [i for i in keep if scorer.scoreable(predicted[i])]
        predicted = [predicted[i] for i in keep]
    if not keep:
        raise ReferenceDataError(f"{path}: no reference row has a usable label and prediction")
    return OutcomeProfile.build(scorer, [truth[i] for i in keep], predicted)


def feature_stats(
    feature: FeatureProfile, histogram: Histogram, quantiles: npt.NDArray[np.float64]
) -> FeatureStats:
    """Count, missing rate, moments and p50/p95 (numeric) or the unseen rate (categorical)."""
    n = histogram.n
    missing_rate = histogram.missing / n if n else 0.0
    binning = feature.binning
    if isinstance(binning, CategoricalBinning):
        unseen = int(histogram.counts[binning.unseen_bin])
        return FeatureStats(
            count=n, missing_rate=missing_rate, unseen_rate=unseen / n if n else 0.0
        )
    moments = histogram.moments
    if moments.count == 0:
        return FeatureStats(count=n, missing_rate=missing_rate)
    return FeatureStats(
        count=n,
        missing_rate=missing_rate,
        mean=moments.mean,
        std=moments.std if moments.count > 1 else None,
        min=moments.min,
        max=moments.max,
        p50=float(quantiles[0]),
        p95=float(quantiles[1]),
    )


#: The quantiles reported for numeric features.
QUANTILES = (0.5, 0.95)


def reference_stats(feature: FeatureProfile) -> FeatureStats:
    """The reference's statistics, computed once per profile."""
    stats = feature.memo.get("reference_stats")
    if stats is None:
        histogram = feature.histogram
        quantiles = np.array([np.nan, np.nan])
        if isinstance(feature.binning, NumericBinning) and histogram.moments.count:
            quantiles = np.array(
                feature.binning.quantiles(
                    histogram.sketch, QUANTILES, histogram.moments.min, histogram.moments.max
                )
            )
        stats = feature.memo["reference_stats"] = feature_stats(feature, histogram, quantiles)
    return stats


def compare_features(
    features: Sequence[FeatureSpec],
    profile: ReferenceProfile,
    histograms: Sequence[Histogram],
    thresholds: ThresholdSpec,
    sufficient: bool,
) -> list[FeatureDrift]:
    """Each feature's PSI, JS, threshold, p-value (calibrated mode) and verdict."""
    psi, js = profile.divergences(histograms)
    scores = psi if thresholds.metric == "psi" else js
    n = histograms[0].n if histograms else 0
    limits, p_values, drifted = _decide(profile, scores, n, thresholds)
    quantiles = profile.quantiles(histograms, QUANTILES)
    out = []
    for i, (spec, feature, histogram) in enumerate(
        zip(features, profile.features, histograms, strict=True)
    ):
        limit, flagged = float(limits[i]), bool(drifted[i])
        if spec.threshold is not None:  # a per-feature fixed override
            limit, flagged = spec.threshold, bool(scores[i] > spec.threshold)
        out.append(
            FeatureDrift(
                name=feature.name,
                kind=feature.kind,
                psi=float(psi[i]),
                js=float(js[i]),
                metric=thresholds.metric,
                threshold=limit,
                p_value=None if p_values is None else float(p_values[i]),
                drifted=sufficient and flagged,
                stats=feature_stats(feature, histogram, quantiles[i]),
                reference=reference_stats(feature),
            )
        )
    return out


def _decide(
    profile: ReferenceProfile, scores: npt.NDArray[np.float64], n: int, thresholds: ThresholdSpec
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None, list[bool]]:
    """``(thresholds, p_values, drifted)`` of every feature."""
    if thresholds.mode == "fixed":
        return np.full(scores.shape, thresholds.value), None, list(scores > thresholds.value)
    calibration = profile.calibration
    if calibration is None or calibration.metric != thresholds.metric:
        raise ReferenceDataError("the reference profile is not calibrated for this metric")
    return calibration.evaluate(n, scores, thresholds.correction)


def ranked_drifted(drifts: Sequence[FeatureDrift]) -> list[str]:
    """Names of the drifted features, the furthest past its threshold first."""
    return [d.name for d in sorted((d for d in drifts if d.drifted), key=lambda d: -d.ratio)]


def calibrate(profile: ReferenceProfile, thresholds: ThresholdSpec) -> ReferenceProfile:
    """The profile with the calibration ``thresholds`` need (none in fixed mode)."""
    if thresholds.mode == "fixed":
        return profile
    args = (thresholds.metric, thresholds.false_alarm_rate, thresholds.calibration_samples)
    calibrated = profile.calibrated(*args)
    if profile.outcomes is None:
        return calibrated
    return replace(calibrated, outcomes=profile.outcomes.calibrated(*args))


def window_report(
    monitor: Monitor,
    histograms: Sequence[Histogram],
    start: float,
    end: float,
    model_version: str | None,
    segment: str | None = None,
) -> DriftReport:
    """The drift report of one window whose per-feature histograms are given in feature order."""
    n = histograms[0].n if histograms else 0
    sufficient = n >= monitor.spec.window.min_events
    drifts = compare_features(
        monitor.features, monitor.profile, histograms, monitor.spec.thresholds, sufficient
    )
    drifted = ranked_drifted(drifts)
    return DriftReport.model_construct(
        model_id=monitor.model_id,
        segment=segment,
        model_version=model_version,
        reference_version=monitor.reference_version,
        window_start=datetime.fromtimestamp(start, UTC),
        window_end=datetime.fromtimestamp(end, UTC),
        n=n,
        sufficient=sufficient,
        drifted=monitor.spec.policy.window_drifted(len(drifted), len(drifts)),
        drifted_features=drifted,
        features=drifts,
    )


def histograms_of(
    profile: ReferenceProfile,
    columns: Mapping[str, Column],
    rows: npt.NDArray[np.bool_] | None = None,
) -> list[Histogram]:
    """Histograms of each profiled feature over the selected rows (all by default)."""
    return profile.histograms(columns, rows)


class Evaluation(BaseModel):
    """``driftline evaluate``'s result: one current data set against one reference."""

    model_config = ConfigDict(frozen=True)

    reference: str
    current: str
    n_reference: int
    n_current: int
    sufficient: bool
    drifted: bool
    drifted_features: list[str]
    features: list[FeatureDrift]


def evaluate_files(
    reference: Path,
    current: Path,
    feature_names: Sequence[str] | None,
    thresholds: ThresholdSpec,
    min_rows: int,
    min_drifted_features: int = 1,
) -> Evaluation:
    """Compare a current data file with a reference file, as one window of the worker would."""
    features, profile = profile_file(reference, names=feature_names)
    profile = calibrate(profile, thresholds)
    current_table = read_table(current)
    histograms = histograms_of(profile, table_columns(current_table, features))
    n = current_table.num_rows
    sufficient = n >= min_rows
    drifts = compare_features(features, profile, histograms, thresholds, sufficient)
    drifted = ranked_drifted(drifts)
    return Evaluation(
        reference=str(reference),
        current=str(current),
        n_reference=profile.n_rows,
        n_current=n,
        sufficient=sufficient,
        drifted=len(drifted) >= min_drifted_features,
        drifted_features=drifted,
        features=drifts,
    )
