"""Fixed bins, built once from the reference, into which every window's values fall.

Every binning reserves bin 0 for missing values, so a spike of nulls shows as drift.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
MISSING_BIN = 0
#: Reference categories past the top K kept to tell "other" from "unseen".
MAX_RARE_CATEGORIES = 10_000
#: Quantile-sketch bins of a numeric feature (edges at reference percentiles).
SKETCH_BINS = 100


@dataclass(frozen=True)
class NumericBinning:
    """Quantile bins of a numeric feature, plus missing, below-range and above-range bins.

    Bin layout: ``[missing, below min, inner_0 .. inner_{k-1}, above max]``.

    >>> binning = NumericBinning.from_reference(np.arange(100.0), bins=4)
    >>> binning.edges.tolist()
    [0.0, 24.75, 49.5, 74.25, 99.0]
    >>> binning.assign(np.array([np.nan, -1.0, 0.0, 50.0, 99.0, 100.0])).tolist()
    [0, 1, 2, 4, 5, 6]
    """

    edges: npt.NDArray[np.float64]
    #: Edges at the reference's percentiles: a fine, mergeable sketch for quantiles.
    sketch_edges: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.zeros(0, dtype=np.float64)
    )

    @classmethod
    def from_reference(cls, values: npt.NDArray[np.float64], bins: int = 10) -> NumericBinning:
        """Edges at the reference's quantiles (repeated edges merged).

        A feature with at most ``bins`` distinct values gets one bin per value, with
        edges half-way between them, so no value shares a bin and no bin is empty.
        """
        present = values[np.isfinite(values)]
        if present.size == 0:
            raise ValueError("no finite values to build bins from")
        distinct = np.unique(present)
        if distinct.size == 1:
            edges = np.repeat(distinct, 2)
        elif distinct.size <= bins:
            middles = (distinct[:-1] + distinct[1:]) / 2
            edges = np.concatenate([distinct[:1], middles, distinct[-1:]])
        else:
            edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)))
        sketch = np.unique(np.quantile(present, np.linspace(0.0, 1.0, SKETCH_BINS + 1)))
        if sketch.size == 1:
            sketch = np.repeat(sketch, 2)
        return cls(edges.astype(np.float64), sketch.astype(np.float64))

    def counts_from_sorted(
        self, present: npt.NDArray[np.float64], missing: int
    ) -> tuple[IntArray, IntArray]:
        """``(bin counts, sketch counts)`` of sorted non-missing values (and a missing count).

        Equal to ``bincount(assign(values))`` and ``sketch(values)``, but places the
        few edges among the sorted values instead of every value among the edges.
        """
        positions = np.searchsorted(present, self.probes, side="left")
        split = self.edges.size
        counts = np.empty(self.n_bins, dtype=np.int64)
        counts[0] = missing
        counts[1:] = _spread(positions[:split], present.size)
        if not self.sketch_edges.size:
            return counts, _EMPTY
        return counts, _spread(positions[split:], present.size)

    @cached_property
    def probes(self) -> npt.NDArray[np.float64]:
        """Bin edges then sketch edges, each with its last edge nudged up by one ulp."""
        parts = [_probe(self.edges)]
        if self.sketch_edges.size:
            parts.append(_probe(self.sketch_edges))
        return np.concatenate(parts)

    def sketch(self, values: npt.NDArray[np.float64]) -> IntArray:
        """Counts of the non-missing values over ``[below, sketch bins.., above]``."""
        present = values[~np.isnan(values)]
        edges = self.sketch_edges
        bins = np.searchsorted(edges[1:-1], present, side="right").astype(np.int64) + 1
        bins[present < edges[0]] = 0
        bins[present > edges[-1]] = edges.size
        return np.bincount(bins, minlength=edges.size + 1).astype(np.int64)

    def quantiles(
        self, sketch: IntArray, qs: Sequence[float], low: float, high: float
    ) -> list[float | None]:
        """Quantiles from sketch counts; ``low``/``high`` (min/max) bound the end bins.

        Exact to within one reference percentile bin.
        """
        total = int(sketch.sum())
        if total == 0:
            return [None] * len(qs)
        edges = self.sketch_edges
        bounds = np.empty(edges.size + 2)
        bounds[0], bounds[1:-1], bounds[-1] = min(low, edges[0]), edges, max(high, edges[-1])
        cumulative = np.cumsum(sketch)
        targets = np.asarray(qs) * total
        bins = np.minimum(np.searchsorted(cumulative, targets, side="left"), sketch.size - 1)
        before = cumulative[bins] - sketch[bins]
        share = np.divide(
            targets - before, sketch[bins], out=np.zeros(len(qs)), where=sketch[bins] > 0
        )
        values = bounds[bins] + share * (bounds[bins + 1] - bounds[bins])
        return [float(min(max(v, low), high)) for v in values]

    def quantile(self, sketch: IntArray, q: float, low: float, high: float) -> float | None:
        """One quantile from sketch counts (see ``quantiles``)."""
        return self.quantiles(sketch, (q,), low, high)[0]

    @property
    def n_bins(self) -> int:
        return int(self.edges.size - 1) + 3

    def labels(self) -> list[str]:
        inner = [
            f"[{lo:.6g}, {hi:.6g})" for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True)
        ]
        inner[-1] = inner[-1][:-1] + "]"
        return ["missing", f"< {self.edges[0]:.6g}", *inner, f"> {self.edges[-1]:.6g}"]

    def assign(self, values: npt.NDArray[np.float64]) -> IntArray:
        """Bin index of each value (NaN is missing)."""
        bins = np.searchsorted(self.edges[1:-1], values, side="right").astype(np.int64) + 2
        bins[values < self.edges[0]] = 1
        bins[values > self.edges[-1]] = self.n_bins - 1
        bins[np.isnan(values)] = MISSING_BIN
        return bins

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": "numeric",
            "edges": self.edges.tolist(),
            "sketch_edges": self.sketch_edges.tolist(),
        }


@dataclass(frozen=True)
class CategoricalBinning:
    """The reference's most frequent categories, plus missing, other and unseen bins.

    Bin layout: ``[missing, category_0 .. category_{m-1}, other, unseen]``: ``other``
    holds reference categories past ``max_categories`` (``rare``), ``unseen`` values
    the reference never had. Booleans are the categories ``false`` and ``true``.

    >>> binning = CategoricalBinning.from_reference(["a", "b", "b", "c", None], max_categories=2)
    >>> binning.categories, binning.rare
    (('b', 'a'), ('c',))
    >>> binning.assign(["a", "b", "c", "zzz", None]).tolist()
    [2, 1, 3, 4, 0]
    """

    categories: tuple[str, ...]
    rare: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        index = {name: i + 1 for i, name in enumerate(self.categories)}
        index.update({name: len(self.categories) + 1 for name in self.rare})
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_reference(
        cls,
        values: Iterable[str | None],
        max_categories: int = 50,
        max_rare: int = MAX_RARE_CATEGORIES,
    ) -> CategoricalBinning:
        counts = Counter(v for v in values if v is not None)
        ranked = [name for name, _ in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]
        return cls(
            tuple(ranked[:max_categories]),
            tuple(ranked[max_categories : max_categories + max_rare]),
        )

    @classmethod
    def boolean(cls) -> CategoricalBinning:
        return cls(("false", "true"))

    @property
    def n_bins(self) -> int:
        return len(self.categories) + 3

    @property
    def unseen_bin(self) -> int:
        return self.n_bins - 1

    def labels(self) -> list[str]:
        return ["missing", *self.categories, "other", "unseen"]

    def assign(self, values: Sequence[str | None]) -> IntArray:
        """Bin index of each value (None is missing)."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        unseen = self.unseen_bin
        return np.fromiter(
            (MISSING_BIN if v is None else index.get(v, unseen) for v in values),
            dtype=np.int64,
            count=len(values),
        )

    def to_state(self) -> dict[str, Any]:
        return {"kind": "categorical", "categories": list(self.categories), "rare": list(self.rare)}


Binning = NumericBinning | CategoricalBinning
_EMPTY = np.zeros(0, dtype=np.int64)


def _spread(positions: IntArray, total: int) -> IntArray:
    """Counts over ``[below, [e0, e1), ..., [e_k-1, e_k], above]`` from probe positions.

    ``positions`` are left-side search positions of the edges among the sorted values,
    the last edge nudged up by one ulp (``_probe``) so it counts values at or below it.
    """
    out = np.empty(positions.size + 1, dtype=np.int64)
    out[0] = positions[0]
    out[1:-1] = positions[1:] - positions[:-1]
    out[-1] = total - positions[-1]
    return out


def _probe(edges: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    probe = edges.copy()
    probe[-1] = np.nextafter(edges[-1], np.inf)
    return probe


def binning_from_state(state: dict[str, Any]) -> Binning:
    if state["kind"] == "numeric":
        return NumericBinning(
            np.asarray(state["edges"], dtype=np.float64),
            np.asarray(state.get("sketch_edges", ()), dtype=np.float64),
        )
    return CategoricalBinning(tuple(state["categories"]), tuple(state.get("rare", ())))
