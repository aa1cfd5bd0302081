"""Joining delayed labels to predictions by ``event_id``.

Predictions wait for their label up to ``horizon_s`` of event time: until the newest
prediction time seen (the watermark) is ``horizon_s`` past them. Labels that arrive
before their prediction wait the same way. Labels do not move the watermark: the
predictions' event time, which also closes the windows, decides what expires.

Memory is bounded by ``max_pending``: at most that many waiting predictions, that many
early labels, and that many remembered ids each of joined and of expired predictions
(only ids and times; they tell a duplicate or an expired label from an unknown one).
Past the bound the oldest entries go first, and are counted. Every label that does
not join comes back with a reason (``duplicate``, ``expired``, ``unknown``) and the
origin it was given, for the dead-letter topic.

Entries expire in the order they arrived, which is event-time order for producers
that send in order; an entry that arrives far out of order waits longer (still
bounded by ``max_pending``).

A join's changes can be undone exactly (``begin``, then ``rollback`` or ``commit``):
the processing of a batch that fails leaves the join as it was, so its rows are
dead-lettered without having been counted. Copying the join per batch would cost its
size (an ``OrderedDict`` of 100,000 entries takes 50 ms to copy); instead the entries
removed or changed are journaled, and each waiting entry carries the sequence number
of its arrival, which puts a restored entry back in its place.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

LabelValue = float | int | bool | str
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Joined:
    """A prediction with its label; ``ts`` is the prediction's event time."""

    event_id: str
    ts: float
    prediction: Any
    label: LabelValue


@dataclass(frozen=True, slots=True)
class Unjoined:
    """A label that will never join, why, and where it came from (as given)."""

    event_id: str
    ts: float
    label: LabelValue
    reason: str  # duplicate | expired | unknown
    origin: Any = None


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
    #: event_id -> (ts, prediction, arrival sequence number)
    _predictions: OrderedDict[str, tuple[float, Any, int]] = field(default_factory=OrderedDict)
    #: event_id -> (ts, label, origin, arrival sequence number)
    _labels: OrderedDict[str, tuple[float, LabelValue, Any, int]] = field(
        default_factory=OrderedDict
    )
    #: Ids joined recently (bounded like the rest): a second label is a duplicate.
    _joined: OrderedDict[str, float] = field(default_factory=OrderedDict)
    #: Ids of predictions that expired or were evicted: their label is expired.
    _expired: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _seq: int = 0
    #: During a transaction: what it removed or changed, ``(entries, key, old value,
    #: from the front)``; and what ``rollback`` restores besides.
    _undo: list[tuple[OrderedDict[str, Any], str, Any, bool]] | None = None
    _saved: tuple[float, JoinCounts, int] | None = None

    def begin(self) -> None:
        """Start a transaction: what follows can be undone by ``rollback``."""
        self._undo, self._saved = [], (self.watermark, replace(self.counts), self._seq)

    def commit(self) -> None:
        self._undo, self._saved = None, None

    def rollback(self) -> None:
        """Undo everything since ``begin``, exactly (the order of arrival included)."""
        assert self._undo is not None
        assert self._saved is not None
        self.watermark, self.counts, seq = self._saved
        for entries, key, old, front in reversed(self._undo):
            if old is _MISSING:  # added (an id remembered): the newest, so the last
                del entries[key]
            else:  # removed, or its value changed
                entries[key] = old
                if front:
                    entries.move_to_end(key, last=False)
        for name in ("_predictions", "_labels"):  # arrivals since begin go; order back
            entries = getattr(self, name)
            kept = [item for item in entries.items() if item[1][-1] <= seq]
            setattr(self, name, OrderedDict(sorted(kept, key=lambda item: item[1][-1])))
        self._seq = seq
        self._undo, self._saved = None, None

    def _pop_oldest(self, entries: OrderedDict[str, Any]) -> tuple[str, Any]:
        key, value = entries.popitem(last=False)
        if self._undo is not None:
            self._undo.append((entries, key, value, True))
        return key, value

    def add_predictions(self, rows: Iterable[tuple[str, float, Any]]) -> list[Joined]:
        """Predictions ``(event_id, ts, prediction)``; those whose label came first join."""
        joined = []
        labels, predictions, undo = self._labels, self._predictions, self._undo
        remembered, horizon, most = self._joined, self.horizon_s, self.max_pending
        watermark, seq = self.watermark, self._seq
        for event_id, ts, prediction in rows:
            if ts > watermark:
                watermark = self.watermark = ts
            early = labels.pop(event_id, None)
            if early is not None:
                if undo is not None:
                    undo.append((labels, event_id, early, False))
                joined.append(self._join(event_id, ts, prediction, early[1]))
            elif event_id in remembered:
                continue
            elif ts < watermark - horizon:  # expired on arrival
                self._forget(event_id, ts, "expired_predictions")
            elif (waiting := predictions.get(event_id)) is None:
                seq += 1
                predictions[event_id] = (ts, prediction, seq)
                if len(predictions) > most:
                    self._evict_predictions()
            else:  # sent again while waiting: the new value, in its place
                if undo is not None:
                    undo.append((predictions, event_id, waiting, False))
                predictions[event_id] = (ts, prediction, waiting[2])
        self._seq = seq
        self._expire_predictions()
        return joined

    def _evict_predictions(self) -> None:
        while len(self._predictions) > self.max_pending:
            old_id, (old_ts, _, _) = self._pop_oldest(self._predictions)
            self._forget(old_id, old_ts, "evicted_predictions")

    def add_labels(
        self, rows: Iterable[tuple[str, float, LabelValue]], origins: Iterable[Any] = ()
    ) -> tuple[list[Joined], list[Unjoined]]:
        """Labels ``(event_id, ts, label)``: joined, or waiting, or refused with a reason.

        ``origins`` (optional, one per row) come back with the label if it never joins.
        """
        joined, unjoined = [], []
        marks = iter(origins)
        for event_id, ts, label in rows:
            origin = next(marks, None)
            pending = self._predictions.pop(event_id, None)
            if pending is not None:
                if self._undo is not None:
                    self._undo.append((self._predictions, event_id, pending, False))
                joined.append(self._join(event_id, pending[0], pending[1], label))
            elif event_id in self._joined or event_id in self._labels:
                unjoined.append(Unjoined(event_id, ts, label, "duplicate", origin))
            elif event_id in self._expired or ts < self.watermark - self.horizon_s:
                unjoined.append(Unjoined(event_id, ts, label, "expired", origin))
            else:  # its prediction may still come
                self._seq += 1
                self._labels[event_id] = (ts, label, origin, self._seq)
                while len(self._labels) > self.max_pending:
                    old_id, (old_ts, old_label, old_origin, _) = self._pop_oldest(self._labels)
                    self.counts.evicted_labels += 1
                    unjoined.append(Unjoined(old_id, old_ts, old_label, "unknown", old_origin))
        return joined, unjoined

    def expire_labels(self) -> list[Unjoined]:
        """Early labels whose prediction did not come within the horizon: ``unknown``."""
        limit = self.watermark - self.horizon_s
        unknown = []
        while self._labels and next(iter(self._labels.values()))[0] < limit:
            event_id, (ts, label, origin, _) = self._pop_oldest(self._labels)
            unknown.append(Unjoined(event_id, ts, label, "unknown", origin))
        return unknown

    def _join(self, event_id: str, ts: float, prediction: Any, label: LabelValue) -> Joined:
        self.counts.joined += 1
        self._remember(self._joined, event_id, ts)
        return Joined(event_id, ts, prediction, label)

    def _forget(self, event_id: str, ts: float, counter: str) -> None:
        setattr(self.counts, counter, getattr(self.counts, counter) + 1)
        self._remember(self._expired, event_id, ts)

    def _remember(self, ids: OrderedDict[str, float], event_id: str, ts: float) -> None:
        undo = self._undo
        if undo is not None:
            undo.append((ids, event_id, ids.get(event_id, _MISSING), False))
        ids[event_id] = ts
        if len(ids) > self.max_pending:
            old_id, old_ts = ids.popitem(last=False)
            if undo is not None:
                undo.append((ids, old_id, old_ts, True))

    def _expire_predictions(self) -> None:
        """Predictions past the horizon stop waiting; ids older than two horizons go."""
        limit = self.watermark - self.horizon_s
        while self._predictions and next(iter(self._predictions.values()))[0] < limit:
            event_id, (ts, _, _) = self._pop_oldest(self._predictions)
            self._forget(event_id, ts, "expired_predictions")
        for ids in (self._joined, self._expired):
            while ids and next(iter(ids.values())) < limit - self.horizon_s:
                self._pop_oldest(ids)

    @property
    def waiting(self) -> tuple[int, int]:
        """Predictions waiting for their label, and early labels waiting for a prediction."""
        return len(self._predictions), len(self._labels)

    @property
    def pending(self) -> int:
        """What waits to join: predictions and early labels."""
        return sum(self.waiting)

    @property
    def held(self) -> int:
        """Every entry held, remembered ids included (at most 4 x ``max_pending``)."""
        return self.pending + len(self._joined) + len(self._expired)

    def to_state(self) -> dict[str, Any]:
        return {
            "watermark": None if self.watermark == float("-inf") else self.watermark,
            "counts": vars(self.counts).copy(),
            "predictions": [[k, ts, p] for k, (ts, p, _) in self._predictions.items()],
            "labels": [[k, ts, v, o] for k, (ts, v, o, _) in self._labels.items()],
            "joined": [[k, ts] for k, ts in self._joined.items()],
            "expired": [[k, ts] for k, ts in self._expired.items()],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], horizon_s: float, max_pending: int) -> LabelJoin:
        join = cls(horizon_s, max_pending)
        join.watermark = float("-inf") if state["watermark"] is None else state["watermark"]
        join.counts = JoinCounts(**state["counts"])
        arrivals = itertools.count(1)
        join._predictions = OrderedDict(
            (k, (ts, p, next(arrivals))) for k, ts, p in state["predictions"]
        )
        join._labels = OrderedDict(
            (k, (ts, v, o, next(arrivals))) for k, ts, v, o in state["labels"]
        )
        join._seq = next(arrivals)
        join._joined = OrderedDict((k, ts) for k, ts in state["joined"])
        join._expired = OrderedDict((k, ts) for k, ts in state["expired"])
        return join
