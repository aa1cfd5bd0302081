"""One pane's histograms of every feature, packed into two arrays.

A worker keeps ``models x panes x features`` histograms. As objects (two arrays and a
``Moments`` each) they cost about 2 KB apiece and their snapshot turned each count into
a Python int. Packed, a pane is one integer array (each feature's bin counts then its
sketch, back to back) and one ``(features, 5)`` float array of moments: adding panes is
two array operations, and a pane's snapshot is encoded once, since a pane never changes
(adding makes a new one).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from driftline.detectors.histogram import Histogram
from driftline.detectors.moments import Moments

#: Below this many rows every count fits in an int32 (a count never exceeds the rows).
_NARROW_ROWS = 2**31


class PaneLayout:
    """Where each feature's bin counts and sketch sit in a pane's counts array.

    >>> layout = PaneLayout([(3, 2), (4, 0)])
    >>> layout.bounds, layout.size
    (((0, 3, 5), (5, 9, 9)), 9)
    """

    __slots__ = ("bounds", "size")

    def __init__(self, sizes: Sequence[tuple[int, int]]) -> None:
        bounds = []
        at = 0
        for n_bins, n_sketch in sizes:
            bounds.append((at, at + n_bins, at + n_bins + n_sketch))
            at += n_bins + n_sketch
        self.bounds: tuple[tuple[int, int, int], ...] = tuple(bounds)
        self.size = at

    @classmethod
    def of(cls, histograms: Sequence[Histogram]) -> PaneLayout:
        """The layout of panes of histograms shaped like these (a profile's, say)."""
        return cls([(h.counts.size, h.sketch.size) for h in histograms])


class Pane:
    """The histograms of every feature over one pane of event time, packed.

    Panes of disjoint rows add up to the pane of their union, histogram by histogram,
    exactly as ``Histogram.__add__`` would:

    >>> from driftline.detectors.binning import NumericBinning
    >>> binning = NumericBinning.from_reference(np.arange(10.0), bins=2)
    >>> a = [Histogram.observe(binning, np.array([1.0, 8.0]))]
    >>> b = [Histogram.observe(binning, np.array([np.nan, 2.0]))]
    >>> layout = PaneLayout.of(a)
    >>> total = (Pane.pack(layout, a) + Pane.pack(layout, b)).histograms[0]
    >>> total.counts.tolist(), total.moments == (a[0] + b[0]).moments
    ([1, 0, 2, 1, 0], True)
    """

    __slots__ = ("_state", "counts", "layout", "moments", "rows")

    def __init__(
        self,
        layout: PaneLayout,
        rows: int,
        counts: npt.NDArray[Any],  # int32, or int64 from 2**31 rows
        moments: npt.NDArray[np.float64],
    ) -> None:
        self.layout = layout
        self.rows = rows
        self.counts = counts
        self.moments = moments
        self._state: dict[str, Any] | None = None

    @classmethod
    def pack(cls, layout: PaneLayout, histograms: Sequence[Histogram]) -> Pane:
        """The pane of these histograms (one per feature, in ``layout``'s order)."""
        rows = histograms[0].n if histograms else 0
        counts = np.concatenate(
            [part for h in histograms for part in (h.counts, h.sketch)] or [np.zeros(0, np.int64)]
        ).astype(np.int32 if rows < _NARROW_ROWS else np.int64)
        moments = np.array(
            [
                (m.count, m.mean, m.m2, m.min, m.max)
                for m in (histogram.moments for histogram in histograms)
            ],
            dtype=np.float64,
        ).reshape(len(histograms), 5)
        return cls(layout, rows, counts, moments)

    def __add__(self, other: Pane) -> Pane:
        rows = self.rows + other.rows
        counts = np.add(
            self.counts, other.counts, dtype=np.int32 if rows < _NARROW_ROWS else np.int64
        )
        return Pane(self.layout, rows, counts, _merge_moments(self.moments, other.moments))

    @property
    def histograms(self) -> tuple[Histogram, ...]:
        """Each feature's histogram (views of this pane's arrays: do not change them)."""
        counts = self.counts.astype(np.int64)
        return tuple(
            Histogram(
                counts[start:middle],
                Moments(int(count), mean, m2, low, high) if count else Moments(),
                counts[middle:end],
            )
            for (start, middle, end), (count, mean, m2, low, high) in zip(
                self.layout.bounds, self.moments.tolist(), strict=True
            )
        )

    def to_state(self) -> dict[str, Any]:
        """The pane as JSON: its arrays compressed, in base64 (encoded once, then kept)."""
        if self._state is None:
            self._state = {
                "rows": self.rows,
                "counts": _encode(self.counts.astype("<i8")),
                "moments": _encode(self.moments.astype("<f8")),
            }
        return self._state

    @classmethod
    def from_state(cls, layout: PaneLayout, state: dict[str, Any] | list[Any]) -> Pane:
        """A pane from ``to_state`` (or, from older snapshots, a list of histogram states)."""
        if isinstance(state, list):
            return cls.pack(layout, [Histogram.from_state(h) for h in state])
        rows = int(state["rows"])
        counts = _decode(state["counts"], "<i8")
        moments = _decode(state["moments"], "<f8").reshape(-1, 5)
        if counts.size != layout.size or moments.shape[0] != len(layout.bounds):
            raise ValueError(
                f"a pane of {counts.size} counts and {moments.shape[0]} features does not fit "
                f"this profile ({layout.size} counts, {len(layout.bounds)} features)"
            )
        return cls(
            layout, rows, counts.astype(np.int32 if rows < _NARROW_ROWS else np.int64), moments
        )


def _merge_moments(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``Moments.__add__`` for every feature at once, to the same floats."""
    a_count, b_count = a[:, 0], b[:, 0]
    count = a_count + b_count
    delta = b[:, 1] - a[:, 1]
    merged = np.empty_like(a)
    merged[:, 0] = count
    with np.errstate(invalid="ignore", divide="ignore"):
        merged[:, 1] = a[:, 1] + delta * b_count / count
        merged[:, 2] = a[:, 2] + b[:, 2] + delta * delta * a_count * b_count / count
    np.minimum(a[:, 3], b[:, 3], out=merged[:, 3])
    np.maximum(a[:, 4], b[:, 4], out=merged[:, 4])
    # As Moments.__add__: an empty side leaves the other exactly as it was.
    merged = np.where((a_count == 0)[:, None], b, merged)
    return np.where((b_count == 0)[:, None], a, merged)


def _encode(array: npt.NDArray[Any]) -> str:
    return base64.b64encode(zlib.compress(array.tobytes(), 1)).decode("ascii")


def _decode(text: str, dtype: str) -> npt.NDArray[Any]:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype).copy()
