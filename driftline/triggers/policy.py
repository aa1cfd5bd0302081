"""Trigger policy: drifted windows open a drift episode, which fires one retraining event."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from driftline.schemas.monitors import PolicySpec
from driftline.schemas.reports import DriftReport
from driftline.schemas.retraining import DriftedFeature, RetrainingData, RetrainingEvent


def trigger_id(model_id: str, window_end: datetime) -> str:
    """Stable id of the episode that opened with the window ending at ``window_end``.

    >>> from datetime import UTC
    >>> trigger_id("m", datetime(2024, 1, 1, tzinfo=UTC))
    'trg_fbb75e40c79475b90a72ecf9'
    """
    digest = hashlib.sha256(f"{model_id}\n{window_end.isoformat()}".encode()).hexdigest()
    return f"trg_{digest[:24]}"


@dataclass
class EpisodePolicy:
    """Counts drifted and clean windows; fires once when an episode opens.

    An episode opens after ``consecutive_windows`` drifted windows in a row and
    closes after ``clean_windows_to_close`` clean ones; windows with too few events
    change nothing. Nothing fires while an episode is open.
    """

    spec: PolicySpec
    consecutive_drifted: int = 0
    consecutive_clean: int = 0
    episode_open: bool = False

    def observe(self, report: DriftReport) -> bool:
        """Account for one window; True when it opens an episode (fire a trigger)."""
        if not report.sufficient:
            return False
        if report.drifted:
            self.consecutive_drifted += 1
            self.consecutive_clean = 0
            if not self.episode_open and self.consecutive_drifted >= self.spec.consecutive_windows:
                self.episode_open = True
                return True
            return False
        self.consecutive_drifted = 0
        if self.episode_open:
            self.consecutive_clean += 1
            if self.consecutive_clean >= self.spec.clean_windows_to_close:
                self.episode_open = False
                self.consecutive_clean = 0
        return False

    def to_state(self) -> dict[str, Any]:
        return {
            "consecutive_drifted": self.consecutive_drifted,
            "consecutive_clean": self.consecutive_clean,
            "episode_open": self.episode_open,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.consecutive_drifted = int(state["consecutive_drifted"])
        self.consecutive_clean = int(state["consecutive_clean"])
        self.episode_open = bool(state["episode_open"])


def retraining_event(report: DriftReport, consecutive: int, now: datetime) -> RetrainingEvent:
    """The retraining event of the window that opened an episode.

    Drifted features come ranked by how far past their threshold they are.
    """
    drifted = sorted(
        (f for f in report.features if f.drifted),
        key=lambda f: f.score / f.threshold,
        reverse=True,
    )
    return RetrainingEvent(
        timestamp=now,
        data=RetrainingData(
            trigger_id=trigger_id(report.model_id, report.window_end),
            model_id=report.model_id,
            model_version=report.model_version,
            reference_version=report.reference_version,
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
