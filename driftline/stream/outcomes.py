"""Live performance and concept drift of one model, from labels joined to predictions.

Pure, like ``MonitorState``: rows in, performance windows and triggers out. Each
labelled prediction is counted in the pane of the prediction's event time; a
performance window closes once the predictions' event time is the label horizon past
it (its labels have had time to come), so its coverage and metrics are final.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from driftline.detectors.concept import ConceptDriftDetector
from driftline.detectors.histogram import Histogram
from driftline.detectors.outcomes import OutcomeProfile, label_feature, metric_value, metrics_of
from driftline.detectors.performance import Classification, Regression
from driftline.detectors.window import ClosedWindow, PaneRing
from driftline.exceptions import ReferenceDataError
from driftline.monitoring import Monitor, compare_features
from driftline.schemas.events import LabelRow, PredictionRow
from driftline.schemas.reports import PerformanceCheck, PerformanceReport
from driftline.schemas.retraining import ReferenceInfo, RetrainingEvent
from driftline.schemas.values import category_label
from driftline.stream.join import Joined, LabelJoin, Unjoined
from driftline.triggers.policy import EpisodePolicy, performance_event


@dataclass(frozen=True, slots=True)
class OutcomePane:
    """One pane of prediction time: its scoreable predictions, and the labelled ones."""

    predictions: int
    performance: Classification | Regression
    label: Histogram
    detections: int = 0

    def __add__(self, other: Self) -> Self:
        return type(self)(
            self.predictions + other.predictions,
            self.performance + other.performance,  # type: ignore[operator]
            self.label + other.label,
            self.detections + other.detections,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "predictions": self.predictions,
            "performance": self.performance.to_state(),
            "label": self.label.to_state(),
            "detections": self.detections,
        }


@dataclass(frozen=True, slots=True)
class LabelRejection:
    """A label that was not counted: its origin (as given), a reason code and why."""

    origin: Any
    row: LabelRow
    reason: str
    message: str


@dataclass
class OutcomeResult:
    reports: list[PerformanceReport] = field(default_factory=list)
    triggers: list[RetrainingEvent] = field(default_factory=list)
    rejections: list[LabelRejection] = field(default_factory=list)
    #: Labels by outcome: joined, duplicate, expired, unknown, label_type, late.
    labels: dict[str, int] = field(default_factory=dict)


_REASON = {
    "duplicate": "a label for this event_id was already joined or is waiting",
    "expired": "its prediction waited longer than labels.horizon and expired",
    "unknown": "no prediction with this event_id came within labels.horizon",
}


class OutcomeState:
    """The label join, performance panes, concept detector and policy of one model."""

    def __init__(self, monitor: Monitor, reference: ReferenceInfo) -> None:
        labels = monitor.spec.labels
        outcomes = monitor.profile.outcomes
        if labels is None or outcomes is None:
            raise ReferenceDataError(
                f"model {monitor.model_id}: its reference profile has no labels; "
                "build it again with the labels section"
            )
        window = monitor.spec.window
        self.monitor = monitor
        self.labels = labels
        self.outcomes: OutcomeProfile = outcomes
        self.scorer = outcomes.scorer
        self.reference = reference
        self.join = LabelJoin(labels.horizon, labels.max_pending)
        self.ring = PaneRing[OutcomePane](
            window.pane_seconds, window.panes, window.allowed_lateness + labels.horizon
        )
        concept = labels.concept
        self.detector = None
        if concept is not None:
            self.detector = ConceptDriftDetector(concept.detector, concept.river_params)
        self.policy = EpisodePolicy(monitor.spec.policy, source="performance")
        self.last_report: PerformanceReport | None = None
        self._label_feature = label_feature(self.scorer.task, len(self.scorer.classes))
        self._saved: tuple[Any, Any, dict[str, Any], PerformanceReport | None] | None = None

    def begin(self) -> None:
        """Start a transaction: ``rollback`` undoes what follows (``commit`` keeps it)."""
        self.join.begin()
        self._saved = (
            self.ring.checkpoint(),
            None if self.detector is None else self.detector.checkpoint(),
            self.policy.to_state(),
            self.last_report,
        )

    def commit(self) -> None:
        self.join.commit()
        self._saved = None

    def rollback(self) -> None:
        assert self._saved is not None
        ring, detector, policy, self.last_report = self._saved
        self.join.rollback()
        self.ring.rollback(ring)
        if self.detector is not None and detector is not None:
            self.detector.rollback(detector)
        self.policy.restore(policy)
        self._saved = None

    def process(
        self,
        items: Sequence[tuple[PredictionRow | LabelRow, Any]],
        model_version: str | None,
        now: datetime,
    ) -> OutcomeResult:
        """Predictions (on time, in arrival order) and labels (with their origins), as they
        came; close the performance windows the predictions' event time passed."""
        result = OutcomeResult()
        pairs: list[Joined] = []
        predicted: list[float] = []
        for row, origin in items:
            if not isinstance(row, LabelRow):
                if not self.scorer.scoreable(row.prediction):
                    continue
                predicted.append(row.ts)
                pairs += self.join.add_predictions([(row.event_id, row.ts, row.prediction)])
            elif (problem := self.scorer.label_problem(row.label)) is not None:
                result.rejections.append(LabelRejection(origin, row, "label_type", problem))
            else:
                joined, refused = self.join.add_labels(
                    [(row.event_id, row.ts, row.label)], [origin]
                )
                pairs += joined
                self._refuse(refused, result)
            self._refuse(self.join.expire_labels(), result)
        result.labels["joined"] = len(pairs)
        self._count(predicted, pairs, result)
        self.ring.observe(self.join.watermark)
        self._close(self.ring.close_ready(), model_version, now, result)
        for rejection in result.rejections:
            result.labels[rejection.reason] = result.labels.get(rejection.reason, 0) + 1
        return result

    def flush(self, model_version: str | None, now: datetime) -> OutcomeResult:
        """Close every window (end of a replayed file): labels still missing stay missing."""
        result = OutcomeResult()
        window = self.monitor.spec.window
        if self.ring.max_event_time != float("-inf"):
            self.ring.observe(
                self.ring.max_event_time
                + self.ring.allowed_lateness
                + window.duration
                + window.pane_seconds
            )
        self._close(self.ring.close_ready(), model_version, now, result)
        return result

    def current_report(self, model_version: str | None) -> PerformanceReport | None:
        """The performance window in progress (None before any prediction)."""
        window = self.ring.open_window()
        return None if window is None else self._report(window, model_version)

    def _refuse(self, refused: list[Unjoined], result: OutcomeResult) -> None:
        for u in refused:
            row = LabelRow(event_id=u.event_id, ts=u.ts, label=u.label)
            message = f"label for event_id {u.event_id!r}: {_REASON[u.reason]}"
            result.rejections.append(LabelRejection(u.origin, row, f"label_{u.reason}", message))

    def _count(self, predicted: list[float], pairs: list[Joined], result: OutcomeResult) -> None:
        """Add this batch's predictions and labelled pairs to the panes of their event time."""
        pane_seconds = self.ring.pane_seconds
        closed_before = self.ring.watermark
        pred_ts = np.asarray(predicted, dtype=np.float64)
        pair_ts = np.fromiter((p.ts for p in pairs), np.float64, len(pairs))
        # A pair whose pane closed already (a prediction far out of order): not counted.
        late = (self.ring.pane_index(pair_ts) + 1) * pane_seconds <= closed_before
        if late.any():
            result.labels["late"] = int(late.sum())
            pairs = [p for p, is_late in zip(pairs, late, strict=True) if not is_late]
            pair_ts = pair_ts[~late]
        pred_ts = pred_ts[(self.ring.pane_index(pred_ts) + 1) * pane_seconds > closed_before]
        detections: npt.NDArray[np.int64] = np.zeros(len(pairs), dtype=np.int64)
        if self.detector is not None and pairs:
            losses = self.scorer.losses([p.prediction for p in pairs], [p.label for p in pairs])
            for hit in self.detector.update(losses):
                detections[hit] += 1
        pred_panes = self.ring.pane_index(pred_ts)
        pair_panes = self.ring.pane_index(pair_ts)
        for pane in np.union1d(pred_panes, pair_panes):
            chosen = [p for p, selected in zip(pairs, pair_panes == pane, strict=True) if selected]
            self.ring.add(
                int(pane),
                self._pane(
                    int((pred_panes == pane).sum()),
                    chosen,
                    int(detections[pair_panes == pane].sum()),
                ),
            )

    def _pane(self, predictions: int, pairs: list[Joined], detections: int) -> OutcomePane:
        given = [p.prediction for p in pairs]
        truth = [p.label for p in pairs]
        column: npt.NDArray[Any]
        if self.scorer.task == "regression":
            performance: Classification | Regression = (
                self.scorer.score(given, truth) if pairs else Regression()
            )
            column = np.asarray(truth, dtype=np.float64)
        else:
            performance = (
                self.scorer.score(given, truth)
                if pairs
                else Classification.empty(list(self.scorer.classes))
            )
            column = np.array([category_label(v) for v in truth], dtype=object)
        (label,) = self.outcomes.label.histograms({"label": column})
        return OutcomePane(predictions, performance, label, detections)

    def _close(
        self,
        windows: list[ClosedWindow[OutcomePane]],
        model_version: str | None,
        now: datetime,
        result: OutcomeResult,
    ) -> None:
        for window in windows:
            report = self._report(window, model_version)
            result.reports.append(report)
            self.last_report = report
            decision = self.policy.observe(report)
            if decision is not None:
                result.triggers.append(
                    performance_event(
                        report, decision, self.policy.consecutive_drifted, self.reference, now
                    )
                )

    def _report(
        self, window: ClosedWindow[OutcomePane], model_version: str | None
    ) -> PerformanceReport:
        summary = window.summary
        performance = summary.performance
        labelled = performance.n
        sufficient = labelled >= self.labels.min_labelled
        policy = self.monitor.spec.policy
        reasons = []
        check = None
        if policy.performance is not None:
            spec = policy.performance
            value = metric_value(performance, spec.metric)
            limit = self.outcomes.limit(
                spec.metric, spec.tolerance, labelled, spec.false_alarm_rate
            )
            degraded = (
                sufficient
                and value is not None
                and limit is not None
                and (value < limit if spec.higher_is_better else value > limit)
            )
            reference = self.outcomes.reference_value(spec.metric)
            check = PerformanceCheck(
                metric=spec.metric,
                value=value,
                reference=reference,
                limit=limit,
                tolerance=spec.tolerance,
                degraded=degraded,
            )
            if degraded:
                reasons.append(f"{spec.metric} {value:.4g} is past its limit {limit:.4g}")
        (label_drift,) = compare_features(
            [self._label_feature],
            self.outcomes.label,
            [summary.label],
            self.monitor.spec.thresholds,
            sufficient,
        )
        if policy.label_drift and label_drift.drifted:
            reasons.append(
                f"label distribution drifted ({label_drift.metric} {label_drift.score:.4g})"
            )
        if policy.concept_drift and summary.detections and sufficient:
            reasons.append(f"concept drift detected {summary.detections} time(s)")
        per_class = None
        if isinstance(performance, Classification):
            per_class = {
                name: {k: _finite(v) for k, v in values.items()}
                for name, values in performance.per_class().items()
            }
        return PerformanceReport(
            model_id=self.monitor.model_id,
            model_version=model_version,
            reference_version=self.monitor.reference_version,
            window_start=datetime.fromtimestamp(window.start, UTC),
            window_end=datetime.fromtimestamp(window.end, UTC),
            task=self.scorer.task,
            predictions=summary.predictions,
            labelled=labelled,
            coverage=labelled / summary.predictions if summary.predictions else None,
            sufficient=sufficient,
            metrics=metrics_of(performance),
            reference_metrics=None
            if self.outcomes.performance is None
            else metrics_of(self.outcomes.performance),
            per_class=per_class,
            check=check,
            label_drift=label_drift,
            concept_detections=summary.detections,
            drifted=bool(reasons),
            reasons=reasons,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "join": self.join.to_state(),
            "ring": self.ring.to_state(OutcomePane.to_state),
            "detector": None if self.detector is None else self.detector.to_state(),
            "policy": self.policy.to_state(),
            "last_report": None
            if self.last_report is None
            else self.last_report.model_dump(mode="json"),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.join = LabelJoin.from_state(
            state["join"], self.labels.horizon, self.labels.max_pending
        )
        self.ring.restore(state["ring"], self._pane_from_state)
        if self.detector is not None and state["detector"] is not None:
            self.detector = ConceptDriftDetector.from_state(state["detector"])
        self.policy.restore(state["policy"])
        last = state["last_report"]
        self.last_report = None if last is None else PerformanceReport.model_validate(last)

    def _pane_from_state(self, state: dict[str, Any]) -> OutcomePane:
        kind = Regression if self.scorer.task == "regression" else Classification
        return OutcomePane(
            int(state["predictions"]),
            kind.from_state(state["performance"]),
            Histogram.from_state(state["label"]),
            int(state["detections"]),
        )


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN: undefined
