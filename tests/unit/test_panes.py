"""Packed panes must add up exactly as their histograms do, and survive a snapshot."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.binning import CategoricalBinning, NumericBinning
from driftline.detectors.histogram import Histogram
from driftline.detectors.panes import Pane, PaneLayout
from driftline.stream.consumer import _parts
from driftline.stream.deadletter import SourceMessage

NUMERIC = NumericBinning.from_reference(np.random.default_rng(0).normal(size=500), bins=8)
CATEGORIES = CategoricalBinning.from_reference(np.array(["a", "b", "c"], dtype=object))

numbers = st.one_of(
    st.floats(-4, 4, allow_nan=False, width=64),
    st.just(np.nan),
    st.just(np.inf),
    st.just(-np.inf),
)


@st.composite
def panes(draw: st.DrawFn) -> list[Histogram]:
    """Histograms of one pane: a numeric and a categorical feature over the same rows."""
    rows = draw(st.integers(0, 12))
    values = np.array(draw(st.lists(numbers, min_size=rows, max_size=rows)), dtype=np.float64)
    labels = np.array(
        draw(st.lists(st.sampled_from(["a", "b", "z", None]), min_size=rows, max_size=rows)),
        dtype=object,
    )
    return [Histogram.observe(NUMERIC, values), Histogram.observe(CATEGORIES, labels)]


def same(a: Histogram, b: Histogram) -> bool:
    return (
        a.counts.tolist() == b.counts.tolist()
        and a.sketch.tolist() == b.sketch.tolist()
        and a.moments == b.moments
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(panes(), min_size=1, max_size=5))
def test_packed_panes_add_up_as_their_histograms(parts: list[list[Histogram]]) -> None:
    layout = PaneLayout.of(parts[0])
    packed = Pane.pack(layout, parts[0])
    expected = parts[0]
    for part in parts[1:]:
        packed = packed + Pane.pack(layout, part)
        expected = [a + b for a, b in zip(expected, part, strict=True)]
    assert all(same(a, b) for a, b in zip(packed.histograms, expected, strict=True))
    assert packed.rows == expected[0].n
    restored = Pane.from_state(layout, packed.to_state())
    assert all(same(a, b) for a, b in zip(restored.histograms, expected, strict=True))
    # Snapshots written before panes were packed: a list of histogram states.
    older = Pane.from_state(layout, [h.to_state() for h in expected])
    assert all(same(a, b) for a, b in zip(older.histograms, expected, strict=True))


def test_an_empty_pane_leaves_the_other_exactly_as_it_was() -> None:
    # 2.5268284329722572 * 7 / 7 is not 2.5268284329722572: merging must not compute it.
    layout = PaneLayout([(2, 0)])
    empty = Pane(layout, 0, np.zeros(2, np.int32), np.array([[0, 0.0, 0.0, np.inf, -np.inf]]))
    full = Pane(
        layout, 7, np.array([7, 0], np.int32), np.array([[7, 2.5268284329722572, 1.5, 0, 4]])
    )
    assert (empty + full).moments.tolist() == full.moments.tolist()
    assert (full + empty).moments.tolist() == full.moments.tolist()


def test_a_pane_of_another_layout_is_refused() -> None:
    histograms = [Histogram.observe(NUMERIC, np.array([1.0]))]
    state = Pane.pack(PaneLayout.of(histograms), histograms).to_state()
    with pytest.raises(ValueError, match="does not fit"):
        Pane.from_state(PaneLayout([(3, 0)]), state)


def test_counts_widen_past_two_billion_rows() -> None:
    histograms = [Histogram.observe(NUMERIC, np.array([1.0]))]
    layout = PaneLayout.of(histograms)
    big = Pane(layout, 2**31 - 1, np.full(layout.size, 2**31 - 1, np.int32), np.zeros((1, 5)))
    total = big + Pane.pack(layout, histograms)
    assert total.counts.dtype == np.int64
    assert int(total.counts.max()) == 2**31


def test_a_batch_is_processed_in_parts_of_bounded_bytes() -> None:
    messages = [SourceMessage(None, b"x" * n, "t", 0, i) for i, n in enumerate([3, 4, 9, 1, 1])]
    parts = list(_parts(messages, 8))
    assert [[m.offset for m in part] for part in parts] == [[0, 1], [2], [3, 4]]
    exactly = [SourceMessage(None, b"x" * n, "t", 0, i) for i, n in enumerate([4, 4, 1])]
    assert [[m.offset for m in part] for part in _parts(exactly, 8)] == [[0, 1], [2]]
    assert list(_parts([], 8)) == []
