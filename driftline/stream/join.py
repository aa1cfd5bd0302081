"""Joining delayed labels to predictions by ``event_id`` (groundwork for #8).

Predictions wait for their label up to ``horizon_s`` of event time (past the newest
event time seen); labels that arrive before their prediction wait the same way. Both
waits are bounded by ``max_pending`` entries: beyond it the oldest are evicted and
counted, so memory stays bounded whatever the label rate. Every label that does not
join comes back with a reason (``duplicate``, ``expired``, ``unknown``) for the
dead-letter topic. Not wired into the stream yet.

Entries expire in the order they arrived, which is event-time order for producers
that send in order; an entry that arrives far out of order waits longer (still
bounded by ``max_pending``). Each of the three tables (waiting predictions, early
labels, recently joined ids) holds at most ``max_pending`` entries.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LabelValue = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Joined:
    """A prediction with its label; ``ts`` is the prediction's event time."""

    event_id: str
    ts: float
    prediction: Any
    label: LabelValue


@dataclass(frozen=True, slots=True)
class Unjoined:
    """A label that will never join, and why."""

    event_id: str
    label: LabelValue
    reason: str  # duplicate | expired | unknown


@dataclass
class JoinCounts:
    joined: int = 0
    #: Predictions whose label never came within the horizon (or evicted for space).
    expired_predictions: int = 0
    evicted_predictions: int = 0
    evicted_labels: int = 0


@dataclass
class LabelJoin:
    """Pending predictions and early labels of one model, in event-time order of arrival.

    >>> join = LabelJoin(horizon_s=60, max_pending=1000)
    >>> join.add_predictions([("e1", 0.0, "fraud")])
    []
    >>> joined, unjoined = join.add_labels([("e1", 5.0, "legit"), ("e1", 6.0, "legit")])
    >>> [(j.event_id, j.prediction, j.label) for j in joined], [u.reason for u in unjoined]
    ([('e1', 'fraud', 'legit')], ['duplicate'])
    """

    horizon_s: float
    max_pending: int
    watermark: float = float("-inf")
    counts: JoinCounts = field(default_factory=JoinCounts)
    _predictions: OrderedDict[str, tuple[float, Any]] = field(default_factory=OrderedDict)
    _labels: OrderedDict[str, tuple[float, LabelValue]] = field(default_factory=OrderedDict)
    #: Ids joined recently (bounded like the rest): a second label is a duplicate.
    _joined: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def add_predictions(self, rows: Iterable[tuple[str, float, Any]]) -> list[Joined]:
        """Predictions ``(event_id, ts, prediction)``; those whose label came first join."""
        joined = []
        for event_id, ts, prediction in rows:
            self._advance(ts)
            early = self._labels.pop(event_id, None)
            if early is not None:
                joined.append(self._join(event_id, ts, prediction, early[1]))
            elif event_id not in self._joined:
                self._predictions[event_id] = (ts, prediction)
                self._bound(self._predictions, "evicted_predictions")
        self._expire()
        return joined

    def add_labels(
        self, rows: Iterable[tuple[str, float, LabelValue]]
    ) -> tuple[list[Joined], list[Unjoined]]:
        """Labels ``(event_id, ts, label)``: joined, or waiting, or refused with a reason."""
        joined, unjoined = [], []
        for event_id, ts, label in rows:
            self._advance(ts)
            pending = self._predictions.pop(event_id, None)
            if pending is not None:
                joined.append(self._join(event_id, pending[0], pending[1], label))
            elif event_id in self._joined or event_id in self._labels:
                unjoined.append(Unjoined(event_id, label, "duplicate"))
            elif ts < self.watermark - self.horizon_s:
                unjoined.append(Unjoined(event_id, label, "expired"))
            else:  # its prediction may still come
                self._labels[event_id] = (ts, label)
                self._bound(self._labels, "evicted_labels")
        unjoined.extend(self._expire())
        return joined, unjoined

    def _join(self, event_id: str, ts: float, prediction: Any, label: LabelValue) -> Joined:
        self.counts.joined += 1
        self._joined[event_id] = ts
        self._bound(self._joined, None)
        return Joined(event_id, ts, prediction, label)

    def _advance(self, ts: float) -> None:
        self.watermark = max(self.watermark, ts)

    def _bound(self, entries: OrderedDict[str, Any], counter: str | None) -> None:
        while len(entries) > self.max_pending:
            entries.popitem(last=False)
            if counter is not None:
                setattr(self.counts, counter, getattr(self.counts, counter) + 1)

    def _expire(self) -> list[Unjoined]:
        """Drop what waited past the horizon; early labels that expire are ``unknown``."""
        limit = self.watermark - self.horizon_s
        while self._predictions and next(iter(self._predictions.values()))[0] < limit:
            self._predictions.popitem(last=False)
            self.counts.expired_predictions += 1
        unknown = []
        while self._labels and next(iter(self._labels.values()))[0] < limit:
            event_id, (_, label) = self._labels.popitem(last=False)
            unknown.append(Unjoined(event_id, label, "unknown"))
        while self._joined and next(iter(self._joined.values())) < limit:
            self._joined.popitem(last=False)
        return unknown

    @property
    def pending(self) -> int:
        """Entries held: waiting predictions, early labels and recently joined ids."""
        return len(self._predictions) + len(self._labels) + len(self._joined)

    def to_state(self) -> dict[str, Any]:
        return {
            "watermark": None if self.watermark == float("-inf") else self.watermark,
            "counts": vars(self.counts).copy(),
            "predictions": [[k, ts, p] for k, (ts, p) in self._predictions.items()],
            "labels": [[k, ts, v] for k, (ts, v) in self._labels.items()],
            "joined": [[k, ts] for k, ts in self._joined.items()],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], horizon_s: float, max_pending: int) -> LabelJoin:
        join = cls(horizon_s, max_pending)
        join.watermark = float("-inf") if state["watermark"] is None else state["watermark"]
        join.counts = JoinCounts(**state["counts"])
        join._predictions = OrderedDict((k, (ts, p)) for k, ts, p in state["predictions"])
        join._labels = OrderedDict((k, (ts, v)) for k, ts, v in state["labels"])
        join._joined = OrderedDict((k, ts) for k, ts in state["joined"])
        return join
