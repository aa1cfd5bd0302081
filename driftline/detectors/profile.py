"""Reference profiles and the per-feature histograms every window is compared with them by."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from driftline.detectors.binning import (
    Binning,
    CategoricalBinning,
    NumericBinning,
    binning_from_state,
)
from driftline.detectors.calibration import Calibration, Metric
from driftline.detectors.divergence import (
    DEFAULT_EPS,
    floored_probabilities,
    jensen_shannon_divergence,
    js_of,
    population_stability_index,
    probabilities,
    psi_of,
)
from driftline.detectors.histogram import Column, Histogram, spread_all
from driftline.detectors.moments import Moments

if TYPE_CHECKING:
    from driftline.detectors.outcomes import OutcomeProfile

FeatureKind = Literal["numeric", "categorical", "boolean"]


class FeatureDefinition(Protocol):
    """What a profile needs to know of a feature (``schemas.monitors.FeatureSpec`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> FeatureKind: ...
    @property
    def bins(self) -> int: ...
    @property
    def max_categories(self) -> int: ...


@dataclass(frozen=True)
class FeatureProfile:
    """One feature of the reference: its bins and the reference's histogram over them.

    >>> class Spec:
    ...     name, kind, bins, max_categories = "x", "numeric", 4, 50
    >>> reference = FeatureProfile.build(Spec(), np.arange(1000.0))
    >>> shifted = Histogram.observe(reference.binning, np.arange(500.0, 1500.0))
    >>> shifted.counts.tolist()  # [missing, below, 4 quantile bins, above]: half is past the max
    [0, 0, 0, 0, 250, 250, 500]
    >>> psi, js = reference.compare(shifted)
    >>> round(psi, 2), round(js, 2)
    (8.17, 0.5)
    """

    name: str
    kind: FeatureKind
    binning: Binning
    histogram: Histogram
    #: Values derived from the profile once and kept (reference statistics).
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def floored_probabilities(self) -> npt.NDArray[np.float64]:
        return floored_probabilities(self.histogram.counts)

    @cached_property
    def probabilities(self) -> npt.NDArray[np.float64]:
        return probabilities(self.histogram.counts)

    @classmethod
    def build(cls, feature: FeatureDefinition, column: Column) -> FeatureProfile:
        binning: Binning
        if feature.kind == "numeric":
            binning = NumericBinning.from_reference(
                np.asarray(column, dtype=np.float64), feature.bins
            )
        elif feature.kind == "boolean":
            binning = CategoricalBinning.boolean()
        else:
            binning = CategoricalBinning.from_reference(column, feature.max_categories)
        return cls(feature.name, feature.kind, binning, Histogram.observe(binning, column))

    def compare(self, current: Histogram, eps: float = DEFAULT_EPS) -> tuple[float, float]:
        """``(psi, js)`` of a window's histogram against the reference."""
        reference = self.histogram.counts
        return (
            population_stability_index(current.counts, reference, eps),
            jensen_shannon_divergence(current.counts, reference),
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "binning": self.binning.to_state(),
            "histogram": self.histogram.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FeatureProfile:
        return cls(
            state["name"],
            state["kind"],
            binning_from_state(state["binning"]),
            Histogram.from_state(state["histogram"]),
        )


@dataclass(frozen=True)
class ReferenceProfile:
    """The reference distribution of every monitored feature of one model, built once.

    >>> ref = {"x": np.random.default_rng(0).normal(size=1000)}
    >>> class F:
    ...     name, kind, bins, max_categories = "x", "numeric", 10, 50
    >>> profile = ReferenceProfile.build(ref, [F()])
    >>> profile.n_rows, profile.feature("x").binning.n_bins
    (1000, 13)
    >>> psi, js = profile.feature("x").compare(profile.feature("x").histogram)
    >>> psi, js
    (0.0, 0.0)
    """

    features: tuple[FeatureProfile, ...]
    n_rows: int
    calibration: Calibration | None = None
    _samples: int = field(default=0, repr=False)
    #: With labels: the reference's label distribution and performance.
    outcomes: OutcomeProfile | None = None

    @classmethod
    def build(
        cls, columns: Mapping[str, Column], features: Sequence[FeatureDefinition]
    ) -> ReferenceProfile:
        missing = [f.name for f in features if f.name not in columns]
        if missing:
            raise KeyError(f"reference data has no column(s) {missing}")
        built = tuple(FeatureProfile.build(f, columns[f.name]) for f in features)
        n_rows = len(columns[features[0].name]) if features else 0
        return cls(built, n_rows)

    def histograms(
        self, columns: Mapping[str, Column], rows: npt.NDArray[np.bool_] | None = None
    ) -> list[Histogram]:
        """Each feature's histogram over the selected rows (all by default), in profile order.

        Numeric features are done together: one row-wise sort, then each feature's few
        bin edges are placed among its sorted values.
        """
        out: list[Histogram | None] = [None] * len(self.features)
        numeric = [i for i, f in enumerate(self.features) if isinstance(f.binning, NumericBinning)]
        if numeric:
            for i, histogram in zip(
                numeric, self._numeric_histograms(numeric, columns, rows), strict=True
            ):
                out[i] = histogram
        for i, feature in enumerate(self.features):
            if out[i] is None:
                column = columns[feature.name]
                out[i] = Histogram.observe(
                    feature.binning, column if rows is None else column[rows]
                )
        return out  # type: ignore[return-value]

    def _numeric_histograms(
        self, indices: list[int], columns: Mapping[str, Column], rows: npt.NDArray[np.bool_] | None
    ) -> list[Histogram]:
        names = [self.features[i].name for i in indices]
        values = np.vstack(
            [
                np.asarray(columns[n] if rows is None else columns[n][rows], dtype=np.float64)
                for n in names
            ]
        )
        missing = np.isnan(values)
        n_missing = missing.sum(axis=1)
        present = values.shape[1] - n_missing
        ordered = np.sort(values, axis=1)  # -inf, finite, +inf, then NaN
        if np.isinf(values).any():  # infinities fall in the end bins, not in the moments
            finite = np.isfinite(values)
            n_finite = finite.sum(axis=1)
            below = (values == -np.inf).sum(axis=1)
        else:
            finite, n_finite, below = ~missing, present, np.zeros_like(present)
        if (n_finite == values.shape[1]).all():  # nothing missing or infinite: no masks
            mean = values.sum(axis=1) / max(values.shape[1], 1)
            deviation = values - mean[:, None]
        else:
            mean = np.where(finite, values, 0.0).sum(axis=1) / np.maximum(n_finite, 1)
            deviation = np.where(finite, values - np.where(finite, mean[:, None], 0.0), 0.0)
        m2 = (deviation * deviation).sum(axis=1)
        binnings = [self.features[i].binning for i in indices]
        positions = [
            np.searchsorted(ordered[j, : present[j]], b.probes, side="left")  # type: ignore[union-attr]
            for j, b in enumerate(binnings)
        ]
        counts, sketches = spread_all(binnings, positions, n_missing, present)  # type: ignore[arg-type]
        rows_at = np.arange(len(indices))
        if values.shape[1]:
            lows = ordered[rows_at, np.minimum(below, values.shape[1] - 1)].tolist()
            highs = ordered[rows_at, np.maximum(below + n_finite - 1, 0)].tolist()
        else:
            lows = highs = [0.0] * len(indices)
        out = []
        for j in range(len(indices)):
            count = int(n_finite[j])
            moments = (
                Moments(count, float(mean[j]), float(m2[j]), lows[j], highs[j])
                if count
                else Moments()
            )
            out.append(Histogram(counts[j], moments, sketches[j]))
        return out

    def divergences(
        self, histograms: Sequence[Histogram]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(psi, js)`` of every feature, computed together for features of equal bin count."""
        psi = np.empty(len(self.features))
        js = np.empty(len(self.features))
        for indices, floored, raw in self._groups:
            counts = np.stack([histograms[i].counts for i in indices]).astype(np.float64)
            psi[indices] = psi_of(counts, floored)
            js[indices] = js_of(counts, raw)
        return psi, js

    def quantiles(
        self, histograms: Sequence[Histogram], qs: Sequence[float]
    ) -> npt.NDArray[np.float64]:
        """``(features, len(qs))`` quantiles of each numeric feature's sketch; NaN elsewhere.

        Linear within the sketch bin holding the quantile (the end bins reach to the
        window's min and max), so within one reference percentile of the exact value.
        """
        out = np.full((len(self.features), len(qs)), np.nan)
        for indices, inner in self._sketch_groups:
            sketches = np.stack([histograms[i].sketch for i in indices]).astype(np.float64)
            totals = sketches.sum(axis=1)
            rows = np.flatnonzero(totals > 0)
            if rows.size == 0:
                continue
            low = np.array([histograms[indices[r]].moments.min for r in rows])
            high = np.array([histograms[indices[r]].moments.max for r in rows])
            bounds = np.column_stack(
                [np.minimum(inner[rows, 0], low), inner[rows], np.maximum(inner[rows, -1], high)]
            )
            cumulative = np.cumsum(sketches[rows], axis=1)
            take = np.arange(rows.size)
            for k, q in enumerate(qs):
                target = q * totals[rows]
                at = np.minimum((cumulative < target[:, None]).sum(axis=1), sketches.shape[1] - 1)
                count = sketches[rows, at]
                share = np.divide(
                    target - (cumulative[take, at] - count),
                    count,
                    out=np.zeros(rows.size),
                    where=count > 0,
                )
                value = bounds[take, at] + share * (bounds[take, at + 1] - bounds[take, at])
                out[indices[rows], k] = np.clip(value, low, high)
        return out

    @cached_property
    def _sketch_groups(self) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]]:
        """Numeric features by sketch size, with their sketch edges stacked."""
        by_size: dict[int, list[int]] = {}
        for i, feature in enumerate(self.features):
            binning = feature.binning
            if isinstance(binning, NumericBinning) and binning.sketch_edges.size:
                by_size.setdefault(binning.sketch_edges.size, []).append(i)
        return [
            (np.asarray(idx), np.stack([self._sketch_edges(i) for i in idx]))
            for idx in by_size.values()
        ]

    def _sketch_edges(self, index: int) -> npt.NDArray[np.float64]:
        binning = self.features[index].binning
        assert isinstance(binning, NumericBinning)
        return binning.sketch_edges

    @cached_property
    def _groups(
        self,
    ) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
        by_size: dict[int, list[int]] = {}
        for i, feature in enumerate(self.features):
            by_size.setdefault(feature.binning.n_bins, []).append(i)
        return [
            (
                np.asarray(idx),
                np.stack([self.features[i].floored_probabilities for i in idx]),
                np.stack([self.features[i].probabilities for i in idx]),
            )
            for idx in by_size.values()
        ]

    def feature(self, name: str) -> FeatureProfile:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def calibrated(self, metric: Metric, alpha: float, samples: int) -> ReferenceProfile:
        """This profile with thresholds calibrated for ``metric`` at false-alarm rate ``alpha``.

        Seeded from the histograms' content: the same reference calibrates the same way.
        """
        current = self.calibration
        if (
            current is not None
            and (current.metric, current.alpha) == (metric, alpha)
            and (self._samples == samples)
        ):
            return self
        base = replace(self, calibration=None)
        seed = int(base.fingerprint()[:15], 16)
        histograms = [f.histogram.counts for f in self.features]
        calibration = Calibration.build(histograms, metric, alpha, seed, samples)
        return replace(self, calibration=calibration, _samples=samples)

    def uncalibrated(self) -> ReferenceProfile:
        """This profile as built from the data, before any calibration (its label's too)."""
        outcomes = self.outcomes
        if outcomes is not None:
            outcomes = replace(outcomes, label=outcomes.label.uncalibrated())
        return replace(self, calibration=None, _samples=0, outcomes=outcomes)

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "n_rows": self.n_rows,
            "features": [f.to_state() for f in self.features],
        }
        if self.calibration is not None:
            state["calibration"] = {**self.calibration.to_state(), "samples": self._samples}
        if self.outcomes is not None:
            state["outcomes"] = self.outcomes.to_state()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReferenceProfile:
        from driftline.detectors.outcomes import OutcomeProfile

        features = tuple(FeatureProfile.from_state(f) for f in state["features"])
        calibration = state.get("calibration")
        outcomes = state.get("outcomes")
        return cls(
            features,
            int(state["n_rows"]),
            None if calibration is None else Calibration.from_state(calibration),
            0 if calibration is None else int(calibration["samples"]),
            None if outcomes is None else OutcomeProfile.from_state(outcomes),
        )

    def fingerprint(self) -> str:
        """Content hash of the profile: equal profiles, equal fingerprints."""
        encoded = orjson.dumps(self.to_state(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(encoded).hexdigest()
