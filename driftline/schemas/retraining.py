"""The retraining event driftline publishes once per drift episode."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

RETRAINING_REQUESTED: Final = "driftline.retraining.requested"


class DriftedFeature(BaseModel):
    """A drifted feature, ranked by how far past its threshold it is (``score / threshold``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    metric: Literal["psi", "js"]
    score: float
    threshold: float
    psi: float
    js: float


class ReferenceInfo(BaseModel):
    """The reference profile the window was compared with."""

    model_config = ConfigDict(frozen=True)

    version: int | None
    fingerprint: str


class AlertInfo(BaseModel):
    """The Alertmanager alert behind a trigger whose source is ``alertmanager``."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str
    starts_at: datetime
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str | None = None


class PerformanceInfo(BaseModel):
    """Why a performance window (source ``performance``) was degraded."""

    model_config = ConfigDict(frozen=True)

    #: The checked metric, its value in the window, the reference's, and the limit.
    metric: str | None
    value: float | None
    reference: float | None
    limit: float | None
    labelled: int
    coverage: float | None
    concept_detections: int
    label_drift: bool
    reasons: list[str]


class RetrainingData(BaseModel):
    """What triggered: the model, the episode, the window, and the drifted features.

    ``status`` is ``fired`` for a request sent to the targets and ``suppressed`` for
    an episode that opened inside the cooldown (recorded, not sent).
    """

    model_config = ConfigDict(frozen=True)

    trigger_id: str
    #: The id of the drift episode: the trigger id of the window that opened it.
    episode_id: str
    episode_started_at: datetime
    status: Literal["fired", "suppressed"] = "fired"
    #: drift: input drift windows; performance: labelled performance windows (concept
    #: drift included); alertmanager: an alert routed to driftline.
    source: Literal["drift", "performance", "alertmanager"] = "drift"
    severity: str
    model_id: str
    model_version: str | None
    reference: ReferenceInfo | None
    #: The window that fired (None for alert triggers).
    window_start: datetime | None
    window_end: datetime | None
    n: int | None
    consecutive_drifted_windows: int
    drifted_features: list[DriftedFeature]
    alert: AlertInfo | None = None
    performance: PerformanceInfo | None = None

    def field_value(self, name: str) -> Any:
        """A field as a Kubeflow runtime parameter: scalars, dates in ISO form, names joined."""
        if name == "drifted_features":
            return ",".join(f.name for f in self.drifted_features)
        if name == "reference_version":
            return None if self.reference is None else self.reference.version
        value = getattr(self, name)
        return value.isoformat() if isinstance(value, datetime) else value


class RetrainingEvent(BaseModel):
    """Body of the webhook (Standard Webhooks shape: ``type``, ``timestamp``, ``data``)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["driftline.retraining.requested"] = RETRAINING_REQUESTED
    timestamp: datetime
    data: RetrainingData
