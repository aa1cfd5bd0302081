import numpy as np
import pytest

from driftline.detectors.window import PaneRing


def ring_of(panes: int = 3, lateness: float = 0.0) -> PaneRing[int]:
    return PaneRing[int](pane_seconds=10.0, panes=panes, allowed_lateness=lateness)


def test_sliding_windows_are_sums_of_their_panes() -> None:
    ring = ring_of()
    for index, value in enumerate([1, 2, 4, 8]):
        ring.add(index, value)
    ring.observe(45.0)
    closed = ring.close_ready()
    assert [(w.start, w.end, w.summary) for w in closed] == [
        (-20.0, 10.0, 1),
        (-10.0, 20.0, 3),
        (0.0, 30.0, 7),
        (10.0, 40.0, 14),
    ]
    assert ring.close_ready() == []


def test_watermark_waits_for_allowed_lateness() -> None:
    ring = ring_of(panes=1, lateness=5.0)
    ring.add(0, 1)
    ring.observe(12.0)  # watermark 7: pane [0, 10) still open
    assert ring.close_ready() == []
    assert not ring.late_mask(np.array([3.0])).any()
    ring.observe(15.0)
    assert [w.summary for w in ring.close_ready()] == [1]
    assert ring.late_mask(np.array([3.0, 10.0])).tolist() == [True, False]
    with pytest.raises(ValueError, match="already closed"):
        ring.add(0, 1)


def test_lateness_follows_arrival_order_within_a_batch() -> None:
    ring = ring_of(panes=1)
    ring.observe(5.0)
    late, marks = ring.lateness(np.array([25.0, 3.0, 19.0, 21.0]))
    assert late.tolist() == [False, True, True, False]
    assert marks.tolist() == [5.0, 25.0, 25.0, 25.0]


def test_gaps_are_skipped_without_empty_windows() -> None:
    ring = ring_of(panes=2)
    ring.add(0, 1)
    ring.add(1_000_000, 5)
    ring.observe(1_000_000 * 10.0 + 25.0)
    closed = ring.close_ready()
    assert [(w.end, w.summary) for w in closed] == [
        (10.0, 1),
        (20.0, 1),
        (10_000_010.0, 5),
        (10_000_020.0, 5),
    ]
    # Everything up to the watermark is closed, including the empty stretch.
    assert ring.late_mask(np.array([10_000_015.0])).tolist() == [True]


def test_state_round_trip() -> None:
    ring = ring_of()
    ring.add(3, 7)
    ring.observe(33.0)
    ring.close_ready()
    ring.add(4, 1)
    restored = ring_of()
    restored.restore(ring.to_state(lambda p: p), int)
    ring.observe(100.0)
    restored.observe(100.0)
    assert ring.close_ready() == restored.close_ready()


def test_rejects_nonsense_parameters() -> None:
    with pytest.raises(ValueError, match="pane_seconds > 0"):
        PaneRing[int](0, 3)
