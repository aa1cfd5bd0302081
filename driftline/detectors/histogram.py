"""Histograms: bin counts, moments and a quantile sketch of one feature over some rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from driftline.detectors.binning import Binning, NumericBinning
from driftline.detectors.moments import Moments

#: A numeric column is float64 with NaN for missing; a categorical one, objects (str or None).
Column = npt.NDArray[np.float64] | npt.NDArray[np.object_]


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


def spread_all(
    binnings: Sequence[NumericBinning],
    positions: Sequence[npt.NDArray[np.intp]],
    missing: npt.NDArray[np.intp],
    present: npt.NDArray[np.intp],
) -> tuple[list[npt.NDArray[np.int64]], list[npt.NDArray[np.int64]]]:
    """Bin and sketch counts of many features from their probe positions, by layout group.

    Per feature this is ``NumericBinning.counts_from_sorted``, done for every feature of
    the same edge and sketch sizes in a few array operations instead of many small ones.
    """
    counts: list[npt.NDArray[np.int64]] = [_NO_SKETCH] * len(binnings)
    sketches: list[npt.NDArray[np.int64]] = [_NO_SKETCH] * len(binnings)
    groups: dict[tuple[int, int], list[int]] = {}
    for j, binning in enumerate(binnings):
        groups.setdefault((binning.edges.size, binning.sketch_edges.size), []).append(j)
    for (n_edges, n_sketch), members in groups.items():
        at = np.stack([positions[j] for j in members])
        total = present[members][:, None]
        bins = np.empty((len(members), n_edges + 2), dtype=np.int64)
        bins[:, 0] = missing[members]
        bins[:, 1:] = _spread_rows(at[:, :n_edges], total)
        spread = _spread_rows(at[:, n_edges:], total) if n_sketch else None
        for k, j in enumerate(members):
            counts[j] = bins[k]
            if spread is not None:
                sketches[j] = spread[k]
    return counts, sketches


def _spread_rows(
    positions: npt.NDArray[np.intp], total: npt.NDArray[np.intp]
) -> npt.NDArray[np.int64]:
    out = np.empty((positions.shape[0], positions.shape[1] + 1), dtype=np.int64)
    out[:, 0] = positions[:, 0]
    out[:, 1:-1] = positions[:, 1:] - positions[:, :-1]
    out[:, -1:] = total - positions[:, -1:]
    return out
