"""The retraining event driftline publishes once per drift episode."""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

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


class RetrainingData(BaseModel):
    """What triggered: the model, the window, and the drifted features."""

    model_config = ConfigDict(frozen=True)

    trigger_id: str
    model_id: str
    model_version: str | None
    reference_version: int | None
    window_start: datetime
    window_end: datetime
    n: int
    consecutive_drifted_windows: int
    drifted_features: list[DriftedFeature]


class RetrainingEvent(BaseModel):
    """Body of the webhook (Standard Webhooks shape: ``type``, ``timestamp``, ``data``)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["driftline.retraining.requested"] = RETRAINING_REQUESTED
    timestamp: datetime
    data: RetrainingData
