"""Pure event processing: rows of one model in, window reports and triggers out.

No Faust, no I/O, no clock: the agent passes ``now`` for the trigger timestamp.
``driftline replay`` and the tests drive the same code as the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
from msgspec.structs import astuple

from driftline.detectors.histogram import Column
from driftline.detectors.panes import Pane, PaneLayout
from driftline.detectors.profile import FeatureProfile, ReferenceProfile
from driftline.detectors.window import PaneRing
from driftline.monitoring import Monitor, histograms_of, window_report
from driftline.schemas.events import LabelRow, PredictionRow, TypedDecoder
from driftline.schemas.monitors import OTHER_SEGMENT, FeatureSpec
from driftline.schemas.reports import DriftReport, PerformanceReport
from driftline.schemas.retraining import ReferenceInfo, RetrainingEvent
from driftline.schemas.values import category_label
from driftline.stream.dedup import SeenIds
from driftline.stream.outcomes import LabelRejection, OutcomeResult, OutcomeState
from driftline.triggers.policy import EpisodePolicy, report_severity, retraining_event


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row that was not counted: its position in the input, a reason code, and why."""

    position: int
    reason: str
    message: str


@dataclass
class ProcessResult:
    accepted: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    reports: list[DriftReport] = field(default_factory=list)
    triggers: list[RetrainingEvent] = field(default_factory=list)
    performance: list[PerformanceReport] = field(default_factory=list)
    label_rejections: list[LabelRejection] = field(default_factory=list)
    #: Labels by outcome (joined, duplicate, ...), for metrics.
    labels: dict[str, int] = field(default_factory=dict)
    #: Events dropped as duplicates of counted ones (``window.deduplicate``).
    duplicates: int = 0

    def add_outcomes(self, outcome: OutcomeResult) -> None:
        self.performance.extend(outcome.reports)
        self.triggers.extend(outcome.triggers)
        self.label_rejections.extend(outcome.rejections)
        for name, count in outcome.labels.items():
            self.labels[name] = self.labels.get(name, 0) + count


#: A label as the processor gets it: the row, and where it came from (for dead letters).
LabelItem = tuple[LabelRow, Any]


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    """A model's state before a call of ``MonitorState.process`` (its label join keeps
    its own journal)."""

    ring: Any
    segments: dict[str, Any]
    seen: Any
    policy: dict[str, Any]
    model_version: str | None
    last_report: DriftReport | None


class MonitorState:
    """Everything driftline keeps of one model: its pane ring and its trigger policy."""

    def __init__(self, monitor: Monitor) -> None:
        window = monitor.spec.window
        self.monitor = monitor
        self.ring = PaneRing[Pane](window.pane_seconds, window.panes, window.allowed_lateness)
        #: The ids counted in the open panes, when duplicates are dropped.
        self.seen = SeenIds(window.pane_seconds) if window.deduplicate else None
        self._layout = PaneLayout.of([f.histogram for f in monitor.profile.features])
        self.policy = EpisodePolicy(monitor.spec.policy)
        self.reference = ReferenceInfo(
            version=monitor.reference_version, fingerprint=monitor.fingerprint
        )
        self.model_version: str | None = None
        self.last_report: DriftReport | None = None
        segments = monitor.spec.segments
        names = (
            []
            if segments is None
            else [*segments.values] + ([OTHER_SEGMENT] if segments.other else [])
        )
        #: One ring per reported segment, sharing the model's watermark.
        self.segment_rings = {
            name: PaneRing[Pane](window.pane_seconds, window.panes, window.allowed_lateness)
            for name in names
        }
        #: The fast path's column getter: (feature names, the prediction feature's name or
        #: "", the getter of a row's feature values), when every feature is numeric.
        self._row_values = _row_values(monitor.features)
        #: Its messages' decoder, when every feature is numeric (the fastest path).
        self.typed = (
            None
            if self._row_values is None
            else _typed_decoder(monitor.model_id, tuple(self._row_values[0]))
        )
        #: Labels joined to predictions: performance windows and concept drift.
        self.outcomes = (
            None if monitor.spec.labels is None else OutcomeState(monitor, self.reference)
        )

    def process(
        self,
        rows: Sequence[PredictionRow],
        model_version: str | None = None,
        *,
        now: datetime,
        labels: Sequence[LabelItem] = (),
        order: Sequence[bool] | None = None,
        numeric: bool = False,
        typed: bool = False,
    ) -> ProcessResult:
        """Count ``rows`` into their panes, close the windows the watermark passed, decide.

        ``labels`` are joined to the predictions (in ``order``: True for the next row,
        False for the next label; default: the rows, then the labels). ``numeric``: every
        feature value is known to be a float or None (decoded so); ``typed``: every row is
        a ``TypedRow`` of this model's ``typed`` decoder. ``now``
        (wall-clock time) only stamps the retraining events fired.

        All or nothing: if it raises, the state is as it was before the call, so the
        caller can dead-letter the rows without any of them having been counted.
        """
        saved = self._begin()
        try:
            result = self._process(rows, model_version, now, labels, order, numeric, typed)
        except BaseException:
            self._rollback(saved)
            raise
        if self.outcomes is not None:
            self.outcomes.commit()
        return result

    def _begin(self) -> _Checkpoint:
        """What ``_rollback`` needs to undo a call of ``process``: cheap, since panes never
        change in place (a ring is copied as its mapping) and the label join journals."""
        if self.outcomes is not None:
            self.outcomes.begin()
        return _Checkpoint(
            self.ring.checkpoint(),
            {name: ring.checkpoint() for name, ring in self.segment_rings.items()},
            None if self.seen is None else self.seen.checkpoint(),
            self.policy.to_state(),
            self.model_version,
            self.last_report,
        )

    def _rollback(self, saved: _Checkpoint) -> None:
        self.ring.rollback(saved.ring)
        for name, ring in self.segment_rings.items():
            ring.rollback(saved.segments[name])
        if self.seen is not None and saved.seen is not None:
            self.seen.rollback(saved.seen)
        self.policy.restore(saved.policy)
        self.model_version, self.last_report = saved.model_version, saved.last_report
        if self.outcomes is not None:
            self.outcomes.rollback()

    def _process(
        self,
        rows: Sequence[PredictionRow],
        model_version: str | None,
        now: datetime,
        labels: Sequence[LabelItem],
        order: Sequence[bool] | None,
        numeric: bool,
        typed: bool,
    ) -> ProcessResult:
        result = ProcessResult()
        if model_version is not None:
            self.model_version = model_version
        columns = self._numeric_columns(rows, numeric, typed)
        if columns is not None:  # every value a number or missing: no row to check
            positions = list(range(len(rows)))
        else:
            values = self._values(rows)
            positions, result.rejections = self._check_types(values, len(rows))
        if positions:
            chosen = rows if len(positions) == len(rows) else [rows[p] for p in positions]
            ts = np.fromiter(map(_TS, chosen), np.float64, len(positions))
            late, watermarks = self.ring.lateness(ts)
            for position, event_ts, mark in zip(
                np.asarray(positions)[late], ts[late], watermarks[late], strict=True
            ):
                result.rejections.append(
                    Rejection(int(position), "late", _late_message(event_ts, mark))
                )
            drop = late  # late, or a duplicate of an event counted in an open pane
            if self.seen is not None:
                fresh = np.flatnonzero(~late)
                duplicate = self.seen.duplicates(
                    [chosen[i].event_id for i in fresh.tolist()],
                    self.ring.pane_index(ts[fresh]),
                    watermarks[fresh],
                )
                if duplicate.any():
                    drop = late.copy()
                    drop[fresh[duplicate]] = True
                    result.duplicates = int(duplicate.sum())
            any_drop = bool(drop.any())
            if any_drop:
                on_time = [p for p, dropped in zip(positions, drop, strict=True) if not dropped]
            else:
                on_time = positions
            if columns is None:
                columns = self._columns(values, on_time, len(rows))
            elif any_drop:
                columns = {name: column[~drop] for name, column in columns.items()}
            self._count([rows[p] for p in on_time] if any_drop else rows, ts[~drop], columns)
            result.accepted = len(on_time)
        else:
            on_time = []
        if self.outcomes is not None:
            counted = set(on_time)
            if order is None:
                order = [True] * len(rows) + [False] * len(labels)
            items: list[tuple[PredictionRow | LabelRow, Any]] = []
            row_at = label_at = 0
            for is_row in order:
                if is_row:
                    if row_at in counted:
                        items.append((rows[row_at], None))
                    row_at += 1
                else:
                    items.append(labels[label_at])
                    label_at += 1
            result.add_outcomes(self.outcomes.process(items, self.model_version, now))
        else:
            result.label_rejections.extend(
                LabelRejection(
                    origin,
                    row,
                    "labels_not_configured",
                    f"model {self.monitor.model_id} has no labels section in its monitor",
                )
                for row, origin in labels
            )
        for window in self.ring.close_ready():
            report = window_report(
                self.monitor,
                window.summary.histograms,
                window.start,
                window.end,
                self.model_version,
            )
            result.reports.append(report)
            self.last_report = report
            decision = self.policy.observe(report)
            if decision is not None:
                result.triggers.append(
                    retraining_event(
                        report,
                        decision,
                        self.policy.consecutive_drifted,
                        report_severity(self.monitor.spec.policy, report),
                        self.reference,
                        now,
                    )
                )
        result.reports.extend(self._close_segments())
        if self.seen is not None:
            self.seen.forget_through(self.ring.closed_through)
        result.rejections.sort(key=lambda r: r.position)
        return result

    def current_profile(self) -> tuple[ReferenceProfile, float, float] | None:
        """The window in progress as a reference profile (on the active reference's bins),
        with its start and end; None before any event."""
        window = self.ring.open_window()
        if window is None:
            return None
        features = tuple(
            FeatureProfile(reference.name, reference.kind, reference.binning, histogram)
            for reference, histogram in zip(
                self.monitor.profile.features, window.summary.histograms, strict=True
            )
        )
        n_rows = features[0].histogram.n if features else 0
        return ReferenceProfile(features, n_rows), window.start, window.end

    def current_report(self) -> DriftReport | None:
        """The window in progress, evaluated as if it closed now (None before any event)."""
        window = self.ring.open_window()
        if window is None:
            return None
        return window_report(
            self.monitor, window.summary.histograms, window.start, window.end, self.model_version
        )

    def _close_segments(self) -> list[DriftReport]:
        reports = []
        for name, ring in self.segment_rings.items():
            ring.observe(self.ring.max_event_time)
            for window in ring.close_ready():
                reports.append(
                    window_report(
                        self.monitor,
                        window.summary.histograms,
                        window.start,
                        window.end,
                        self.model_version,
                        name,
                    )
                )
        return reports

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this state is (JSON-able)."""
        return {
            "reference_version": self.monitor.reference_version,
            "window": _window_shape(self.monitor),
            "ring": self.ring.to_state(Pane.to_state),
            "segments": {
                name: ring.to_state(Pane.to_state) for name, ring in self.segment_rings.items()
            },
            "policy": self.policy.to_state(),
            "labels": _labels_config(self.monitor),
            "outcomes": None if self.outcomes is None else self.outcomes.to_state(),
            "model_version": self.model_version,
            "seen": None if self.seen is None else self.seen.to_state(),
            "last_report": None
            if self.last_report is None
            else self.last_report.model_dump(mode="json"),
        }

    def restore(self, state: dict[str, Any]) -> bool:
        """Continue from a snapshot; False (and unchanged) if it is of another reference
        or another window shape."""
        if state.get("reference_version") != self.monitor.reference_version:
            return False
        if state.get("window") != _window_shape(self.monitor):
            return False

        def pane_from_state(pane: Any) -> Pane:
            return Pane.from_state(self._layout, pane)

        self.ring.restore(state["ring"], pane_from_state)
        for name, ring_state in state.get("segments", {}).items():
            if name in self.segment_rings:
                self.segment_rings[name].restore(ring_state, pane_from_state)
        self.policy.restore(state["policy"])
        # Outcomes continue only under the same labels section; else they start afresh
        # (the drift windows are unaffected).
        same_labels = state.get("labels") == _labels_config(self.monitor)
        if self.outcomes is not None and state.get("outcomes") is not None and same_labels:
            self.outcomes.restore(state["outcomes"])
        self.model_version = state["model_version"]
        if self.seen is not None:
            self.seen.restore(state.get("seen") or {})
        last = state.get("last_report")
        self.last_report = None if last is None else DriftReport.model_validate(last)
        return True

    def flush(self, *, now: datetime) -> ProcessResult:
        """Close every open window, as if event time had moved a whole window on."""
        window = self.monitor.spec.window
        if self.ring.watermark != float("-inf"):
            self.ring.observe(
                self.ring.watermark
                + window.allowed_lateness
                + window.duration
                + window.pane_seconds
            )
        result = self.process([], now=now)
        if self.outcomes is not None:
            result.add_outcomes(self.outcomes.flush(self.model_version, now))
        return result

    def _numeric_columns(
        self, rows: Sequence[PredictionRow], numeric: bool, typed: bool = False
    ) -> dict[str, Column] | None:
        """Every column at once (the fast path), when every monitored feature is numeric,
        present in every row, and every value a number or null (known to be when
        ``numeric``); else None. ``typed`` rows have every feature (None if missing)."""
        if self._row_values is None or not rows:
            return None
        names, prediction, by_name = self._row_values
        # Typed rows' features are structs whose fields are the names, in order.
        get: Callable[[Any], tuple[Any, ...]] = astuple if typed else by_name
        flat: npt.NDArray[np.float64] | None = None
        try:
            if numeric:  # floats (or None: then the list below) straight into an array
                values = chain.from_iterable(map(get, map(_FEATURES, rows)))
                flat = np.fromiter(values, np.float64, len(rows) * len(names))
        except TypeError:  # a None
            pass
        except KeyError:  # a feature left out: the row-by-row path
            return None
        if flat is None:
            try:
                matrix = [get(row.features) for row in rows]
            except KeyError:
                return None
            if not numeric and not set(map(type, chain.from_iterable(matrix))) <= _NUMBERS:
                return None
            flat = np.array(matrix, dtype=np.float64)
        if prediction:
            predictions = [row.prediction for row in rows]
            if not set(map(type, predictions)) <= _NUMBERS:
                return None
        block = flat.reshape(len(rows), -1).T.copy()
        columns: dict[str, Column] = dict(zip(names, block, strict=True))
        if prediction:
            columns[prediction] = _floats(predictions)
        return columns

    def _values(self, rows: Sequence[PredictionRow]) -> list[list[Any]]:
        """Each monitored feature's raw values, one list per feature (columnar)."""
        return [
            [row.prediction for row in rows]
            if feature.source == "prediction"
            else [row.features.get(feature.name) for row in rows]
            for feature in self.monitor.features
        ]

    def _check_types(self, values: list[list[Any]], n: int) -> tuple[list[int], list[Rejection]]:
        """Rows whose values fit their features' kinds, and a rejection for each other row
        (its first bad feature). A column of the usual types is checked in one step."""
        problems: dict[int, tuple[FeatureSpec, object]] = {}
        for feature, column in zip(self.monitor.features, values, strict=True):
            fits = _EXPECTED.get(feature.kind)
            if fits is None or set(map(type, column)) <= _FAST_TYPES[feature.kind]:
                continue
            for position, value in enumerate(column):
                if value is not None and not fits(value) and position not in problems:
                    problems[position] = (feature, value)
        if not problems:
            return list(range(n)), []
        rejections = []
        for position, (feature, value) in sorted(problems.items()):
            where = "prediction" if feature.source == "prediction" else f"features.{feature.name}"
            rejections.append(
                Rejection(
                    position,
                    "feature_type",
                    f"{where}: expected {_EXPECTED_TEXT[feature.kind]} or null, got {value!r}",
                )
            )
        return [p for p in range(n) if p not in problems], rejections

    def _count(
        self,
        rows: Sequence[PredictionRow],
        ts: npt.NDArray[np.float64],
        columns: dict[str, Column],
    ) -> None:
        """Count ``rows``, whose values are ``columns`` and event times ``ts``."""
        if not rows:
            return
        panes = self.ring.pane_index(ts)
        segments = self._segment_of(rows) if self.segment_rings else None
        for pane in np.unique(panes):
            selected = panes == pane
            histograms = histograms_of(self.monitor.profile, columns, selected)
            self.ring.add(int(pane), Pane.pack(self._layout, histograms))
            if segments is None:
                continue
            for name, ring in self.segment_rings.items():
                in_segment = selected & (segments == name)
                if in_segment.any():
                    histograms = histograms_of(self.monitor.profile, columns, in_segment)
                    ring.add(int(pane), Pane.pack(self._layout, histograms))
        self.ring.observe(float(ts.max()))

    def _segment_of(self, rows: Sequence[PredictionRow]) -> npt.NDArray[np.object_]:
        """Each row's reported segment: its own if listed, else ``other`` (or None)."""
        pooled = OTHER_SEGMENT if OTHER_SEGMENT in self.segment_rings else None
        listed = self.segment_rings.keys() - {OTHER_SEGMENT}
        return np.array(
            [row.segment if row.segment in listed else pooled for row in rows], dtype=object
        )

    def _columns(self, values: list[list[Any]], positions: list[int], n: int) -> dict[str, Column]:
        columns: dict[str, Column] = {}
        every = len(positions) == n
        for feature, column in zip(self.monitor.features, values, strict=True):
            chosen = column if every else [column[p] for p in positions]
            if feature.kind == "numeric":
                columns[feature.name] = _floats(chosen)
            elif set(map(type, chosen)) <= {str, type(None)}:
                columns[feature.name] = np.array(chosen, dtype=object)
            else:
                columns[feature.name] = np.array([category_label(v) for v in chosen], dtype=object)
        return columns


_FEATURES = attrgetter("features")
_TS = attrgetter("ts")


def _row_values(
    features: Sequence[FeatureSpec],
) -> tuple[list[str], str, Callable[[Mapping[str, Any]], tuple[Any, ...]]] | None:
    if not features or any(f.kind != "numeric" for f in features):
        return None
    from_prediction = [f.name for f in features if f.source == "prediction"]
    if len(from_prediction) > 1:
        return None
    names = [f.name for f in features if f.source != "prediction"]
    if not names:
        return None
    get = itemgetter(*names)
    getter = get if len(names) > 1 else (lambda values: (get(values),))
    return names, from_prediction[0] if from_prediction else "", getter


@lru_cache(maxsize=1024)
def _typed_decoder(model_id: str, names: tuple[str, ...]) -> TypedDecoder:
    """One decoder per model and feature list (a state is rebuilt on each rebalance)."""
    return TypedDecoder(model_id, names)


def _window_shape(monitor: Monitor) -> dict[str, Any]:
    """What a snapshot's panes depend on: the window section, less ``max_future`` and
    ``deduplicate`` (which only decide which events come in; snapshots from before they
    existed lack them)."""
    return monitor.spec.window.model_dump(mode="json", exclude={"max_future", "deduplicate"})


def _labels_config(monitor: Monitor) -> dict[str, Any] | None:
    """What a snapshot's outcome state depends on: the labels section (None without)."""
    labels = monitor.spec.labels
    return None if labels is None else labels.model_dump(mode="json")


def _late_message(ts: float, watermark: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC).isoformat()
    mark = datetime.fromtimestamp(watermark, UTC).isoformat()
    return (
        f"event time {moment} is in a window already closed (watermark {mark}); "
        "raise window.allowed_lateness to accept later events"
    )


_EXPECTED: dict[str, Callable[[object], bool]] = {
    "numeric": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}
_EXPECTED_TEXT = {"numeric": "a number", "boolean": "true/false"}
#: Column types that need no check value by value (bool is not int here: type() is exact).
_FAST_TYPES: dict[str, set[type]] = {
    "numeric": {float, int, type(None)},
    "boolean": {bool, type(None)},
}


_NUMBERS = _FAST_TYPES["numeric"]


def _floats(values: list[Any]) -> npt.NDArray[np.float64]:
    """A numeric column: numbers as float64, missing (None) as NaN."""
    try:
        return np.array(values, dtype=np.float64)
    except TypeError:  # None among them
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
