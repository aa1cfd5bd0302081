"""The /v1 API's response bodies: what the OpenAPI document promises, as pydantic models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftline.schemas.monitors import WindowSpec
from driftline.schemas.reports import DriftReport, PerformanceReport
from driftline.schemas.retraining import RetrainingEvent


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Body):
    """An RFC 9457 problem; ``detail`` starts with the field at fault when there is one."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class FeatureRef(_Body):
    name: str
    kind: Literal["numeric", "categorical", "boolean"]


class ModelSummary(_Body):
    model_id: str
    tenant: str
    reference_version: int | None
    features: list[FeatureRef]
    window: WindowSpec
    watermark: float | None
    last_report: DriftReport | None


class Models(_Body):
    models: list[ModelSummary]


class Reports(_Body):
    reports: list[DriftReport]


class PerformanceReports(_Body):
    reports: list[PerformanceReport]


class Trigger(_Body):
    trigger_id: str
    model_id: str
    episode_id: str
    status: Literal["fired", "suppressed"]
    source: Literal["drift", "alertmanager"]
    severity: str
    window_end: str
    created_at: str
    event: RetrainingEvent


class Triggers(_Body):
    triggers: list[Trigger]


class Attempt(_Body):
    attempt: int
    at: str
    outcome: Literal["delivered", "retry", "dead"]
    http_status: int | None
    latency_s: float | None
    error: str | None


class Delivery(_Body):
    id: int
    trigger_id: str
    model_id: str
    tenant: str | None = Field(description="The tenant of its monitor when it was recorded.")
    target_type: Literal["webhook", "kubeflow", "kafka"]
    target_url: str
    status: Literal["pending", "delivered", "dead", "cancelled"]
    reason: str | None = Field(description="Why it was cancelled (its monitor deleted).")
    attempts: int
    last_status: int | None
    last_error: str | None
    external_id: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None
    attempt_log: list[Attempt]


class Deliveries(_Body):
    deliveries: list[Delivery]


class OneDelivery(_Body):
    delivery: Delivery


class DisabledEndpoint(_Body):
    url: str
    reason: str
    disabled_at: str


class DisabledEndpoints(_Body):
    endpoints: list[DisabledEndpoint]


class Enabled(_Body):
    enabled: str


class AlertOutcome(_Body):
    fingerprint: str
    status: Literal["firing", "resolved"]
    model_id: str | None
    outcome: Literal["fired", "suppressed", "duplicate", "resolved", "ignored"]
    trigger_id: str | None


class AlertOutcomes(_Body):
    alerts: list[AlertOutcome]


class Health(_Body):
    status: Literal["ok"]


class Readiness(_Body):
    ready: bool
    checks: dict[str, bool] = Field(description="Each dependency and whether it is usable.")


class MonitorBody(_Body):
    model_id: str
    tenant: str
    source: Literal["file", "api"]
    paused: bool
    version: int
    reference_version: int | None
    updated_at: str
    created_at: str | None = Field(
        description="When this monitor was made (one deleted and made again is another)."
    )
    spec: dict[str, Any] = Field(description="The monitor spec as stored (never secrets).")
    running: bool = Field(description="Whether this worker evaluates it now.")


class MonitorList(_Body):
    monitors: list[MonitorBody]


class OneMonitor(_Body):
    monitor: MonitorBody


class Deleted(_Body):
    deleted: str


class ReferenceVersion(_Body):
    version: int
    fingerprint: str
    source: str
    n_rows: int
    features: list[str]
    created_at: str
    active: bool


class ReferenceList(_Body):
    references: list[ReferenceVersion]


class OneReference(_Body):
    reference: ReferenceVersion


class EpisodeState(_Body):
    open: bool
    episode_id: str | None
    fired: bool
    consecutive_drifted_windows: int
    consecutive_clean_windows: int


class EpisodeRequest(_Body):
    trigger_id: str
    status: Literal["fired", "suppressed"]
    severity: str
    created_at: str


class Episode(_Body):
    episode_id: str
    started_at: str
    source: Literal["drift", "performance", "alertmanager"]
    requests: list[EpisodeRequest]


class JoinCounts(_Body):
    joined: int
    expired_predictions: int = Field(description="Predictions whose label never came in time.")
    evicted_predictions: int = Field(description="Predictions dropped for labels.max_pending.")
    evicted_labels: int


class ConceptState(_Body):
    detector: Literal["adwin", "page_hinkley"]
    detections: int
    estimation: float | None = Field(description="ADWIN's current mean loss.")


class LabelsState(_Body):
    pending_predictions: int
    pending_labels: int
    counts: JoinCounts
    concept: ConceptState | None
    current_window: PerformanceReport | None = Field(
        description="The performance window in progress (its labels may still come)."
    )
    episode: EpisodeState
    reports: list[PerformanceReport]


class ModelState(_Body):
    model_id: str
    consumed_here: bool = Field(description="This worker consumes the model's partition now.")
    watermark: float | None
    current_window: DriftReport | None = Field(
        description="The window in progress, evaluated as if it closed now."
    )
    episode: EpisodeState
    reports: list[DriftReport]
    episodes: list[Episode]
    labels: LabelsState | None = Field(
        None, description="With a labels section: joins, concept drift and performance."
    )
