"""Sliding event-time windows as a ring of panes, closed by a watermark.

A window of ``panes`` panes slides by one pane; each pane holds a mergeable summary,
so a window is the sum of its panes and memory does not grow with the number of events.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar

import numpy as np
import numpy.typing as npt


class Mergeable(Protocol):
    def __add__(self, other: Self) -> Self: ...


P = TypeVar("P", bound=Mergeable)


@dataclass(frozen=True, slots=True)
class ClosedWindow(Generic[P]):
    """A window ``[start, end)`` of event time (epoch seconds) and the sum of its panes."""

    start: float
    end: float
    summary: P


class PaneRing(Generic[P]):
    """Panes of ``pane_seconds``, aligned to the epoch; windows of ``panes`` panes.

    The watermark is the newest event time seen minus ``allowed_lateness``. A pane
    closes when the watermark passes its end, and closing it closes the window that
    ends with it. Events for a closed pane are late: ``late_mask`` finds them.

    >>> ring = PaneRing[int](pane_seconds=60, panes=2)
    >>> ring.add(0, 5); ring.add(1, 7); ring.observe(125.0)
    >>> [(w.start, w.end, w.summary) for w in ring.close_ready()]
    [(-60.0, 60.0, 5), (0.0, 120.0, 12)]
    >>> ring.late_mask(np.array([30.0, 130.0, 400.0, 200.0])).tolist()
    [True, False, False, True]
    """

    def __init__(self, pane_seconds: float, panes: int, allowed_lateness: float = 0.0) -> None:
        if pane_seconds <= 0 or panes < 1 or allowed_lateness < 0:
            raise ValueError("pane_seconds > 0, panes >= 1 and allowed_lateness >= 0 are needed")
        self.pane_seconds = float(pane_seconds)
        self.panes = panes
        self.allowed_lateness = float(allowed_lateness)
        self._panes: dict[int, P] = {}
        self._max_ts = -math.inf
        self._closed_through: int | None = None  # newest closed pane

    @property
    def max_event_time(self) -> float:
        """The newest event time seen (-inf before any)."""
        return self._max_ts

    @property
    def closed_through(self) -> int | None:
        """The newest closed pane (None before any closed)."""
        return self._closed_through

    @property
    def watermark(self) -> float:
        return self._max_ts - self.allowed_lateness

    def pane_index(self, ts: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.floor(ts / self.pane_seconds).astype(np.int64)

    def late_mask(self, ts: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Which of these events, arriving in this order, fall in panes already closed."""
        return self.lateness(ts)[0]

    def lateness(
        self, ts: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        """``(late, watermarks)``: each event judged against the watermark when it arrived.

        The watermark an event meets is set by the events before it (in this call and
        earlier ones), so the outcome does not depend on how events are batched.
        """
        seen = np.maximum.accumulate(np.concatenate(([self._max_ts], ts)))[:-1]
        watermarks = seen - self.allowed_lateness
        return (self.pane_index(ts) + 1) * self.pane_seconds <= watermarks, watermarks

    def add(self, index: int, summary: P) -> None:
        """Merge ``summary`` into pane ``index`` (which must not be closed)."""
        if self._closed_through is not None and index <= self._closed_through:
            raise ValueError(f"pane {index} is already closed")
        current = self._panes.get(index)
        self._panes[index] = summary if current is None else current + summary

    def observe(self, max_ts: float) -> None:
        """Advance the watermark to the newest event time seen."""
        self._max_ts = max(self._max_ts, max_ts)

    def close_ready(self) -> list[ClosedWindow[P]]:
        """Close every pane the watermark has passed; return the non-empty windows they end.

        A pane is closed exactly when the watermark is at or past its end, whether
        it holds data or not; windows without data are not returned.
        """
        if self.watermark == -math.inf:
            return []
        last = math.floor(self.watermark / self.pane_seconds) - 1  # newest pane passed
        if self._closed_through is not None:
            first = self._closed_through + 1
        else:  # nothing closed yet: no window ends before the oldest pane
            first = min(self._panes, default=last + 1)
        if last < first:
            return []
        ends: set[int] = set()
        for index in self._panes:
            if index <= last:
                ends.update(range(max(index, first), min(index + self.panes - 1, last) + 1))
        closed = [self._window(end) for end in sorted(ends)]
        for index in [i for i in self._panes if i <= last - self.panes + 1]:
            del self._panes[index]  # no window still to close can contain it
        self._closed_through = last
        return closed

    def open_window(self) -> ClosedWindow[P] | None:
        """The window in progress: the one ending with the newest pane that holds data.

        >>> ring = PaneRing[int](pane_seconds=60, panes=3)
        >>> ring.add(0, 5); ring.add(2, 7)
        >>> window = ring.open_window()
        >>> (window.start, window.end, window.summary)
        (0.0, 180.0, 12)
        """
        if not self._panes:
            return None
        return self._window(max(self._panes))

    def _window(self, end: int) -> ClosedWindow[P]:
        start = end - self.panes + 1
        members = [self._panes[i] for i in sorted(self._panes) if start <= i <= end]
        summary = members[0]
        for pane in members[1:]:
            summary = summary + pane
        return ClosedWindow(start * self.pane_seconds, (end + 1) * self.pane_seconds, summary)

    def checkpoint(self) -> tuple[dict[int, P], float, int | None]:
        """What ``rollback`` needs to undo every change since (panes never change in
        place: adding makes a new one, so a copy of the mapping is enough)."""
        return dict(self._panes), self._max_ts, self._closed_through

    def rollback(self, checkpoint: tuple[dict[int, P], float, int | None]) -> None:
        """Back to ``checkpoint``.

        >>> ring = PaneRing[int](pane_seconds=60, panes=2)
        >>> ring.add(0, 5); saved = ring.checkpoint()
        >>> ring.add(0, 1); ring.observe(500.0); _ = ring.close_ready()
        >>> ring.rollback(saved); ring.open_window().summary, ring.max_event_time
        (5, -inf)
        """
        self._panes, self._max_ts, self._closed_through = checkpoint

    def to_state(self, pane_state: Callable[[P], Any]) -> dict[str, Any]:
        return {
            "max_ts": None if self._max_ts == -math.inf else self._max_ts,
            "closed_through": self._closed_through,
            "panes": {str(i): pane_state(p) for i, p in sorted(self._panes.items())},
        }

    def restore(self, state: dict[str, Any], pane_from_state: Callable[[Any], P]) -> None:
        self._max_ts = -math.inf if state["max_ts"] is None else float(state["max_ts"])
        self._closed_through = state["closed_through"]
        self._panes = {int(i): pane_from_state(p) for i, p in state["panes"].items()}
