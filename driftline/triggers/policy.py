"""Trigger policy: drifted windows open a drift episode, which sends one retraining request."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from driftline.schemas.monitors import PolicySpec
from driftline.schemas.reports import DriftReport, PerformanceReport
from driftline.schemas.retraining import (
    DriftedFeature,
    PerformanceInfo,
    ReferenceInfo,
    RetrainingData,
    RetrainingEvent,
)


def trigger_id(model_id: str, window_end: datetime, source: str = "drift") -> str:
    """Stable id of the trigger of the window ending at ``window_end``.

    >>> trigger_id("m", datetime(2024, 1, 1, tzinfo=UTC))
    'trg_fbb75e40c79475b90a72ecf9'
    >>> trigger_id("m", datetime(2024, 1, 1, tzinfo=UTC), "performance")
    'trg_78f09277e62da46eb94ac38a'
    """
    key = f"{model_id}\n{window_end.isoformat()}"
    if source != "drift":  # drift ids stay as they were before other sources existed
        key += f"\n{source}"
    return f"trg_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


class Window(Protocol):
    """What the policy reads of a window report (drift or performance)."""

    @property
    def model_id(self) -> str: ...
    @property
    def window_end(self) -> datetime: ...
    @property
    def sufficient(self) -> bool: ...
    @property
    def drifted(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """What a window did to the policy: fire a request, or record a suppressed one."""

    status: Literal["fired", "suppressed"]
    episode_id: str
    episode_started_at: datetime


@dataclass
class EpisodePolicy:
    """Counts drifted and clean windows; one request per drift episode, cooldown between.

    An episode opens after ``consecutive_windows`` drifted windows in a row and closes
    after ``clean_windows_to_close`` clean ones; windows with too few events change
    nothing. An episode opening less than ``cooldown`` (event time) after the last
    request is suppressed; it fires on its first drifted window past the cooldown.
    """

    spec: PolicySpec
    #: Which windows it sees: drift, or performance (its episodes have their own ids).
    source: str = "drift"
    consecutive_drifted: int = 0
    consecutive_clean: int = 0
    episode_id: str | None = None
    episode_started: float | None = None
    episode_fired: bool = False
    last_fired_end: float | None = None

    @property
    def episode_open(self) -> bool:
        return self.episode_id is not None

    def observe(self, report: Window) -> Decision | None:
        """Account for one window; a decision when it fires or suppresses a request."""
        if not report.sufficient:
            return None
        if not report.drifted:
            self.consecutive_drifted = 0
            if self.episode_open:
                self.consecutive_clean += 1
                if self.consecutive_clean >= self.spec.clean_windows_to_close:
                    self.episode_id, self.episode_started = None, None
                    self.episode_fired = False
                    self.consecutive_clean = 0
            return None
        self.consecutive_drifted += 1
        self.consecutive_clean = 0
        end = report.window_end.timestamp()
        if self.episode_id is None:
            if self.consecutive_drifted < self.spec.consecutive_windows:
                return None
            self.episode_id = trigger_id(report.model_id, report.window_end, self.source)
            self.episode_started, self.episode_fired = end, False
            if not self._cooled(end):
                return self._decision("suppressed")
        elif self.episode_fired or not self._cooled(end):
            return None
        self.episode_fired, self.last_fired_end = True, end
        return self._decision("fired")

    def _cooled(self, end: float) -> bool:
        return self.last_fired_end is None or end - self.last_fired_end >= self.spec.cooldown

    def _decision(self, status: Literal["fired", "suppressed"]) -> Decision:
        assert self.episode_id is not None
        assert self.episode_started is not None
        started = datetime.fromtimestamp(self.episode_started, UTC)
        return Decision(status, self.episode_id, started)

    def to_state(self) -> dict[str, Any]:
        return {
            "consecutive_drifted": self.consecutive_drifted,
            "consecutive_clean": self.consecutive_clean,
            "episode_id": self.episode_id,
            "episode_started": self.episode_started,
            "episode_fired": self.episode_fired,
            "last_fired_end": self.last_fired_end,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.consecutive_drifted = int(state["consecutive_drifted"])
        self.consecutive_clean = int(state["consecutive_clean"])
        self.episode_id = state["episode_id"]
        self.episode_started = state["episode_started"]
        self.episode_fired = bool(state["episode_fired"])
        self.last_fired_end = state["last_fired_end"]


def retraining_event(
    report: DriftReport,
    decision: Decision,
    consecutive: int,
    severity: str,
    reference: ReferenceInfo,
    now: datetime,
) -> RetrainingEvent:
    """The retraining event of the window that fired (or was suppressed).

    Drifted features come ranked by how far past their threshold they are.
    """
    drifted = sorted((f for f in report.features if f.drifted), key=lambda f: -f.ratio)
    return RetrainingEvent(
        timestamp=now,
        data=RetrainingData(
            trigger_id=trigger_id(report.model_id, report.window_end),
            episode_id=decision.episode_id,
            episode_started_at=decision.episode_started_at,
            status=decision.status,
            severity=severity,
            model_id=report.model_id,
            model_version=report.model_version,
            reference=reference,
            window_start=report.window_start,
            window_end=report.window_end,
            n=report.n,
            consecutive_drifted_windows=consecutive,
            drifted_features=[
                DriftedFeature(
                    name=f.name,
                    metric=f.metric,
                    score=f.score,
                    threshold=f.threshold,
                    psi=f.psi,
                    js=f.js,
                )
                for f in drifted
            ],
        ),
    )


def performance_event(
    report: PerformanceReport,
    decision: Decision,
    consecutive: int,
    reference: ReferenceInfo,
    now: datetime,
) -> RetrainingEvent:
    """The retraining event of a degraded performance window: ``critical`` when the
    metric check failed, ``warning`` for concept or label drift alone."""
    check = report.check
    degraded = check is not None and check.degraded
    return RetrainingEvent(
        timestamp=now,
        data=RetrainingData(
            trigger_id=trigger_id(report.model_id, report.window_end, "performance"),
            episode_id=decision.episode_id,
            episode_started_at=decision.episode_started_at,
            status=decision.status,
            source="performance",
            severity="critical" if degraded else "warning",
            model_id=report.model_id,
            model_version=report.model_version,
            reference=reference,
            window_start=report.window_start,
            window_end=report.window_end,
            n=report.labelled,
            consecutive_drifted_windows=consecutive,
            drifted_features=[],
            performance=PerformanceInfo(
                metric=None if check is None else check.metric,
                value=None if check is None else check.value,
                reference=None if check is None else check.reference,
                limit=None if check is None else check.limit,
                labelled=report.labelled,
                coverage=report.coverage,
                concept_detections=report.concept_detections,
                label_drift=report.label_drift is not None and report.label_drift.drifted,
                reasons=report.reasons,
            ),
        ),
    )


def report_severity(spec: PolicySpec, report: DriftReport) -> str:
    """The severity of a drifted window under ``spec``'s levels."""
    ratios = [f.ratio for f in report.features if f.drifted]
    return spec.severity(len(ratios), len(report.features), max(ratios, default=0.0))
