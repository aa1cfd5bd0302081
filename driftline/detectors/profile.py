"""Reference profiles and the per-feature histograms every window is compared with them by."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

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
    jensen_shannon_divergence,
    population_stability_index,
)
from driftline.detectors.moments import Moments

FeatureKind = Literal["numeric", "categorical", "boolean"]
#: A numeric column is float64 with NaN for missing; a categorical one, objects (str or None).
Column = npt.NDArray[np.float64] | npt.NDArray[np.object_]


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


@dataclass(frozen=True, slots=True)
class Histogram:
    """Bin counts, moments and a quantile sketch of one feature over some rows.

    Histograms of disjoint rows add up to the histogram of their union.

    >>> binning = NumericBinning.from_reference(np.arange(10.0), bins=2)
    >>> h = Histogram.observe(binning, np.array([1.0, np.nan, 8.0]))
    >>> h.counts.tolist(), h.n, h.missing
    ([1, 0, 1, 1, 0], 3, 1)
    """

    counts: npt.NDArray[np.int64]
    moments: Moments
    sketch: npt.NDArray[np.int64]

    @classmethod
    def observe(cls, binning: Binning, column: Column) -> Histogram:
        counts = np.bincount(binning.assign(column), minlength=binning.n_bins)  # type: ignore[arg-type]
        if isinstance(binning, NumericBinning):
            values = np.asarray(column, dtype=np.float64)
            return cls(counts.astype(np.int64), Moments.of(values), binning.sketch(values))
        return cls(counts.astype(np.int64), Moments(), _NO_SKETCH)

    def __add__(self, other: Histogram) -> Histogram:
        return Histogram(
            self.counts + other.counts,
            self.moments + other.moments,
            self.sketch + other.sketch if self.sketch.size else self.sketch,
        )

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def missing(self) -> int:
        return int(self.counts[0])

    def to_state(self) -> dict[str, Any]:
        return {
            "counts": self.counts.tolist(),
            "moments": self.moments.to_state(),
            "sketch": self.sketch.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Histogram:
        return cls(
            np.asarray(state["counts"], dtype=np.int64),
            Moments.from_state(state["moments"]),
            np.asarray(state.get("sketch", ()), dtype=np.int64),
        )


_NO_SKETCH = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class FeatureProfile:
    """One feature of the reference: its bins and the reference's histogram over them."""

    name: str
    kind: FeatureKind
    binning: Binning
    histogram: Histogram

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

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "n_rows": self.n_rows,
            "features": [f.to_state() for f in self.features],
        }
        if self.calibration is not None:
            state["calibration"] = {**self.calibration.to_state(), "samples": self._samples}
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReferenceProfile:
        features = tuple(FeatureProfile.from_state(f) for f in state["features"])
        calibration = state.get("calibration")
        if calibration is None:
            return cls(features, int(state["n_rows"]))
        return cls(
            features,
            int(state["n_rows"]),
            Calibration.from_state(calibration),
            int(calibration["samples"]),
        )

    def fingerprint(self) -> str:
        """Content hash of the profile: equal profiles, equal fingerprints."""
        encoded = orjson.dumps(self.to_state(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(encoded).hexdigest()
