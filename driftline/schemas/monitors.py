"""The monitors configuration: which models to watch, against what, and what to do on drift.

Loaded from YAML at startup; every error names the field (``models[0].window.duration``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from driftline.exceptions import ConfigError
from driftline.schemas.values import category_label

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``"5m"``, ``"30s"``, ``"1.5h"``, ``"250ms"`` or a number of seconds.

    >>> parse_duration("5m"), parse_duration(90), parse_duration("250ms")
    (300.0, 90.0, 0.25)
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '5m'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    raise ValueError(f"{value!r} is not a duration; use e.g. '30s', '5m', '1h' or seconds")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One monitored feature: an input feature, or the model's prediction."""

    name: str = Field(min_length=1)
    kind: Literal["numeric", "categorical", "boolean"]
    source: Literal["features", "prediction"] = Field(
        "features",
        description="Where events carry it: in 'features', or as the 'prediction'. "
        "The reference file's column has the feature's name either way.",
    )
    bins: int = Field(10, ge=2, le=100, description="Quantile bins of a numeric feature.")
    max_categories: int = Field(
        50, ge=1, le=1000, description="Most reference categories kept; rarer ones pool as other."
    )
    threshold: float | None = Field(
        None, gt=0, description="Overrides the monitor's threshold for this feature."
    )


class ReferenceSpec(_Strict):
    """Where the reference (training) distribution comes from: a file or a stored profile."""

    path: Path | None = Field(None, description="Parquet or CSV file, relative to the config.")
    stored: Literal["latest"] | int | None = Field(
        None, description="Use a stored profile version ('latest' or a version number)."
    )

    @field_validator("path")
    @classmethod
    def _resolve(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        base = (info.context or {}).get("base_dir")
        if path is not None and base is not None and not path.is_absolute():
            return Path(base) / path
        return path

    @model_validator(mode="after")
    def _exactly_one(self) -> ReferenceSpec:
        if (self.path is None) == (self.stored is None):
            raise ValueError("give exactly one of 'path' (a Parquet/CSV file) or 'stored'")
        return self


class WindowSpec(_Strict):
    """A sliding event-time window: ``duration`` long, advancing by one pane."""

    duration: Duration = Field(description="Window length, e.g. '5m'.")
    panes: int = Field(5, ge=1, le=1440, description="Panes per window; it slides by one pane.")
    allowed_lateness: Duration = Field(
        0.0, ge=0, description="How far behind the newest event time an event may arrive."
    )
    min_events: int = Field(
        100, ge=1, description="Windows with fewer events are reported but never drifted."
    )
    max_future: Duration | None = Field(
        300.0,
        ge=0,
        description=(
            "How far an event's time may be ahead of its Kafka message's timestamp; "
            "later ones are dead-lettered (reason future) instead of moving the watermark "
            "past every real event. null: no limit."
        ),
    )

    deduplicate: bool = Field(
        False,
        description=(
            "Count an event_id once: a later event with the id of one counted in a pane "
            "still open is dropped (driftline_events_duplicate_total). Costs 8 bytes per "
            "event of the open panes, in memory and in each snapshot."
        ),
    )

    @model_validator(mode="after")
    def _pane_width(self) -> WindowSpec:
        if self.duration / self.panes < 1.0:
            raise ValueError("duration / panes must be at least one second")
        return self

    @property
    def pane_seconds(self) -> float:
        return self.duration / self.panes


class ThresholdSpec(_Strict):
    """When a feature counts as drifted.

    ``calibrated`` (default): thresholds from the reference, per feature and window
    size, so that a window without drift is flagged with probability
    ``false_alarm_rate`` across all the model's features. ``fixed``: the metric above
    ``value`` for every feature and window size.
    """

    mode: Literal["calibrated", "fixed"] = "calibrated"
    metric: Literal["psi", "js"] = "psi"
    value: float = Field(0.2, gt=0, description="Fixed mode: threshold on the metric.")
    false_alarm_rate: float = Field(
        0.01, gt=0, lt=0.5, description="Calibrated mode: chance a no-drift window is flagged."
    )
    correction: Literal["bonferroni", "bh"] = Field(
        "bonferroni", description="Calibrated mode: multiple-testing control across features."
    )
    calibration_samples: int = Field(
        2000, ge=200, le=100_000, description="Simulated no-drift windows per window size."
    )


class SeveritySpec(_Strict):
    """A severity level: it applies when every condition given holds (none given: always)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    min_drifted_features: int | None = Field(None, ge=1, description="Drifted features, at least.")
    min_drifted_share: float | None = Field(
        None, gt=0, le=1, description="Share of the monitored features drifted, at least."
    )
    min_score_ratio: float | None = Field(
        None, gt=0, description="The top feature's score over its threshold, at least."
    )

    def matches(self, drifted: int, features: int, top_ratio: float) -> bool:
        """Whether a window with these figures has this severity.

        >>> SeveritySpec(name="critical", min_score_ratio=2.0).matches(1, 10, 2.5)
        True
        >>> SeveritySpec(name="critical", min_drifted_share=0.5).matches(1, 10, 9.0)
        False
        """
        return (
            (self.min_drifted_features is None or drifted >= self.min_drifted_features)
            and (self.min_drifted_share is None or drifted >= self.min_drifted_share * features)
            and (self.min_score_ratio is None or top_ratio >= self.min_score_ratio)
        )


DEFAULT_SEVERITIES = (
    SeveritySpec(name="critical", min_drifted_share=0.5),
    SeveritySpec(name="critical", min_score_ratio=3.0),
    SeveritySpec(name="warning"),
)


class PolicySpec(_Strict):
    """When drifted windows become one retraining request (once per drift episode).

    A window is drifted when at least ``min_drifted_features`` (and, if given,
    ``min_drifted_share`` of the monitored features) drifted. ``consecutive_windows``
    drifted windows in a row open an episode; ``clean_windows_to_close`` clean ones
    close it. An episode sends one request, unless it opens less than ``cooldown``
    (event time) after the last request: then it is recorded as suppressed, and fires
    only if it is still drifting once the cooldown has passed.
    """

    min_drifted_features: int = Field(1, ge=1, description="Drifted features for a drifted window.")
    min_drifted_share: float | None = Field(
        None, gt=0, le=1, description="Share of features that must drift for a drifted window."
    )
    consecutive_windows: int = Field(
        1, ge=1, description="Drifted windows in a row that open an episode and fire."
    )
    clean_windows_to_close: int = Field(
        3, ge=1, description="Clean windows in a row that close an open episode."
    )
    cooldown: Duration = Field(
        0.0, ge=0, description="Least event time between two requests, e.g. '6h'."
    )
    severities: list[SeveritySpec] = Field(
        default_factory=lambda: list(DEFAULT_SEVERITIES),
        min_length=1,
        description="Severity levels, first match wins; the last should have no conditions.",
    )
    performance: PerformanceSpec | None = Field(
        None, description="Labels: a performance window worse than the reference's is degraded."
    )
    concept_drift: bool = Field(
        True, description="Labels: a concept-drift detection degrades its performance windows."
    )
    label_drift: bool = Field(
        False, description="Labels: label distribution drift degrades its performance windows."
    )

    def window_drifted(self, drifted: int, features: int) -> bool:
        """Whether a window with ``drifted`` of ``features`` features drifted counts as drifted.

        >>> share = PolicySpec(min_drifted_share=0.25)
        >>> share.window_drifted(1, 8), share.window_drifted(2, 8)
        (False, True)
        """
        if drifted < self.min_drifted_features:
            return False
        return self.min_drifted_share is None or drifted >= self.min_drifted_share * features

    def severity(self, drifted: int, features: int, top_ratio: float) -> str:
        """The name of the first severity level the window matches (the last one otherwise)."""
        for level in self.severities:
            if level.matches(drifted, features, top_ratio):
                return level.name
        return self.severities[-1].name


class PerformanceSpec(_Strict):
    """A performance window is degraded when ``metric`` is worse than the reference's by
    more than ``tolerance``: a number (fixed, in the metric's units), or ``calibrated``.

    Calibrated: the drop a window of the same number of labelled predictions shows with
    probability ``false_alarm_rate`` when nothing changed, simulated from the reference's
    own predictions (a two-level bootstrap of its confusion matrix for accuracy and F1,
    a normal approximation of the mean loss for MAE, RMSE and log loss).
    """

    metric: Literal["accuracy", "f1", "log_loss", "mae", "rmse"]
    tolerance: float | Literal["calibrated"] = Field(
        "calibrated", description="Allowed drop: 'calibrated' or a number in metric units."
    )
    false_alarm_rate: float = Field(
        0.01, gt=0, lt=0.5, description="Calibrated: chance an unchanged window is degraded."
    )

    @field_validator("tolerance")
    @classmethod
    def _positive(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and value < 0:
            raise ValueError("a fixed tolerance is 0 or more (in the metric's units)")
        return value

    @property
    def higher_is_better(self) -> bool:
        return self.metric in ("accuracy", "f1")


_Count = Annotated[int, Field(ge=1, le=1_000_000_000)]


class AdwinParams(_Strict):
    """What river's ``drift.ADWIN`` accepts, each within what it can run with."""

    model_config = ConfigDict(allow_inf_nan=False)  # and _Strict's

    delta: float = Field(1e-5, gt=0, lt=1)
    clock: _Count = 1
    max_buckets: Annotated[int, Field(ge=1, le=1_000)] = 5
    min_window_length: _Count = 5
    grace_period: _Count = 10


class PageHinkleyParams(_Strict):
    """What river's ``drift.PageHinkley`` accepts (``mode`` is always ``up``)."""

    model_config = ConfigDict(allow_inf_nan=False)  # and _Strict's

    min_instances: _Count = 30
    delta: float = Field(0.05, ge=0)
    threshold: float = Field(50.0, gt=0)
    alpha: float = Field(1.0, gt=0, le=1)
    mode: Literal["up"] = "up"


_PARAMS: dict[str, type[AdwinParams] | type[PageHinkleyParams]] = {
    "adwin": AdwinParams,
    "page_hinkley": PageHinkleyParams,
}


class ConceptSpec(_Strict):
    """A river concept-drift detector over the per-prediction loss (0/1 error for
    classification, absolute error for regression)."""

    detector: Literal["adwin", "page_hinkley"] = "adwin"
    params: dict[str, float | int | str] = Field(
        default_factory=dict,
        description=(
            "river parameters, e.g. {delta: 0.00001}: for adwin delta, clock, max_buckets, "
            "min_window_length, grace_period; for page_hinkley min_instances, delta, "
            "threshold, alpha (mode is up)."
        ),
    )

    @model_validator(mode="after")
    def _accepted(self) -> ConceptSpec:
        mode = self.params.get("mode", "up")
        if self.detector == "page_hinkley" and mode != "up":
            raise ValueError(
                f"params.mode: {mode!r}; Page-Hinkley watches the loss for increases only "
                "(mode: up): a change for the better is not a degradation"
            )
        try:
            _PARAMS[self.detector].model_validate(self.params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"params.{where}: {first['msg']} (for {self.detector})") from None
        return self

    @property
    def river_params(self) -> dict[str, Any]:
        """The parameters as validated (numbers as numbers), those given only."""
        checked = _PARAMS[self.detector].model_validate(self.params)
        return checked.model_dump(exclude_unset=True)


def _class_name(value: Any) -> Any:
    """A class as events name it: ``1``, ``1.0`` and ``"1"`` are one class."""
    if isinstance(value, int | float):  # booleans too: True is the class "true"
        return category_label(value)
    return value


#: A class of a classification model: a string, or a number or boolean as labels carry it.
ClassName = Annotated[str, BeforeValidator(_class_name)]


class LabelsSpec(_Strict):
    """Delayed ground truth: labels join predictions by ``event_id`` within ``horizon``.

    Performance windows have the model's window shape, by the prediction's event time,
    and close once the predictions' event time is ``horizon`` past them (their labels
    have had time to come).
    """

    task: Literal["classification", "regression"]
    classes: list[ClassName] | None = Field(
        None,
        min_length=2,
        max_length=100,
        description="Classification: the classes (numbers or strings, as the labels are "
        "sent); omitted: those of the reference's labels.",
    )
    prediction: Literal["label", "probability"] = Field(
        "label",
        description="'probability': the prediction is the probability of positive_class "
        "(binary classification; log loss is then reported).",
    )
    positive_class: ClassName | None = Field(
        None, description="Binary: the class scored (the last)."
    )
    decision_threshold: float = Field(0.5, gt=0, lt=1, description="Probability to predict it.")
    horizon: Duration = Field(
        86400.0, gt=0, description="How long (event time) a prediction waits for its label."
    )
    max_pending: int = Field(
        100_000, ge=1, le=10_000_000, description="Predictions (and early labels) kept waiting."
    )
    min_labelled: int = Field(
        100, ge=1, description="Labelled predictions for a sufficient performance window."
    )
    reference_label: str = Field("label", description="The reference file's true-label column.")
    reference_prediction: str | None = Field(
        "prediction", description="Its prediction column (None: no reference performance)."
    )
    concept: ConceptSpec | None = Field(
        ConceptSpec(), description="The concept-drift detector; null: none."
    )

    @model_validator(mode="after")
    def _consistent(self) -> LabelsSpec:
        if self.task == "regression" and (self.classes is not None or self.prediction != "label"):
            raise ValueError("classes and prediction: probability are for classification")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be unique")
        if self.prediction == "probability" and self.classes is not None and len(self.classes) != 2:
            raise ValueError("prediction: probability needs exactly 2 classes")
        if self.positive_class is not None:
            if self.prediction != "probability":
                raise ValueError("positive_class is for prediction: probability")
            if self.classes is not None and self.positive_class not in self.classes:
                raise ValueError(f"positive_class {self.positive_class!r} is not in classes")
        return self


def resolves_secrets(info: ValidationInfo) -> bool:
    """Whether validation reads the secrets targets name (environment variables) and
    checks them: not when the context says ``resolve_secrets: False``, for what never
    sends (``driftline replay``, reading a stored spec's target labels)."""
    return bool((info.context or {}).get("resolve_secrets", True))


#: The longest timeout of a target's call: an attempt's lease is reckoned from it.
MAX_TARGET_TIMEOUT_S = 3600.0


class _Target(_Strict):
    name: str | None = Field(
        None, max_length=128, description="Label of the target in metrics; derived if omitted."
    )
    timeout_s: float = Field(
        10.0,
        gt=0,
        le=MAX_TARGET_TIMEOUT_S,
        allow_inf_nan=False,
        description="Timeout of each call of an attempt, in seconds (at most an hour).",
    )
    max_attempts: int = Field(8, ge=1, le=1000, description="Attempts before a delivery is dead.")


class WebhookTarget(_Target):
    """A receiver of retraining events, signed per the Standard Webhooks spec.

    Several secrets (a list, or space-separated in the environment variable) sign each
    message with each of them: rotate by adding the new secret first, and remove the old
    one once every receiver verifies with the new.
    """

    type: Literal["webhook"] = "webhook"
    url: AnyHttpUrl
    secret: SecretStr | list[SecretStr] | None = Field(None, description="whsec_... secret(s).")
    secret_env: str | None = Field(None, description="Environment variable holding the secret.")
    _env_secrets: list[SecretStr] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _load_secret(self, info: ValidationInfo) -> WebhookTarget:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of 'secret' or 'secret_env'")
        if not resolves_secrets(info):
            return self
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env)
            if not value or not value.split():
                raise ValueError(f"environment variable {self.secret_env} is not set")
            # Kept out of the fields: a stored or returned spec never holds the secret.
            self._env_secrets = [SecretStr(v) for v in value.split()]
        if not self.signing_secrets:
            raise ValueError("give at least one secret")
        for secret in self.signing_secrets:
            _check_secret(secret)
        return self

    @property
    def signing_secrets(self) -> list[str]:
        """The secrets each message is signed with, the current one first."""
        secrets = self.secret if isinstance(self.secret, list) else [self.secret]
        if self.secret_env is not None:
            secrets = list(self._env_secrets)
        return [s.get_secret_value() for s in secrets if s is not None]

    @property
    def key(self) -> str:
        """What identifies the target in the outbox (``deliveries.target_url``)."""
        return str(self.url)

    @property
    def label(self) -> str:
        return self.name or (self.url.host or "webhook")


#: What a Kubeflow runtime parameter can be filled with, from the retraining event.
KFP_PARAMETER_SOURCES = (
    "model_id",
    "model_version",
    "trigger_id",
    "episode_id",
    "severity",
    "reference_version",
    "window_start",
    "window_end",
    "drifted_features",
)

#: Where a pod's Kubeflow Pipelines service-account token is projected in-cluster.
KFP_INCLUSTER_TOKEN = Path("/var/run/secrets/kubeflow/pipelines/token")


class KubeflowTarget(_Target):
    """Starts a Kubeflow Pipelines run (API v2beta1) per retraining request."""

    type: Literal["kubeflow"]
    endpoint: AnyHttpUrl = Field(
        description="KFP API server, e.g. http://ml-pipeline.kubeflow:8888"
    )
    pipeline_id: str | None = Field(None, description="The pipeline to run (or pipeline_name).")
    pipeline_name: str | None = Field(None, description="Looked up by name when id is not given.")
    pipeline_version_id: str | None = Field(None, description="Omitted: the latest version.")
    experiment_id: str | None = Field(None, description="Omitted: the default experiment.")
    namespace: str | None = Field(None, description="Namespace for pipeline_name lookups.")
    service_account: str | None = None
    parameters: dict[str, str] = Field(
        default_factory=lambda: {
            "model_id": "model_id",
            "model_version": "model_version",
            "trigger_id": "trigger_id",
            "drifted_features": "drifted_features",
        },
        description="Runtime parameter name -> field of the retraining event.",
    )
    token_file: Path | None = Field(
        None,
        description=f"Bearer token file, read at every call (in-cluster: {KFP_INCLUSTER_TOKEN}).",
    )
    token_env: str | None = Field(None, description="Environment variable holding a bearer token.")

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> KubeflowTarget:
        if (self.pipeline_id is None) == (self.pipeline_name is None):
            raise ValueError("give exactly one of 'pipeline_id' or 'pipeline_name'")
        if self.pipeline_version_id is not None and self.pipeline_id is None:
            raise ValueError("'pipeline_version_id' needs 'pipeline_id'")
        if self.token_file is not None and self.token_env is not None:
            raise ValueError("give at most one of 'token_file' or 'token_env'")
        if (
            self.token_env is not None
            and resolves_secrets(info)
            and not os.environ.get(self.token_env)
        ):
            raise ValueError(f"environment variable {self.token_env} is not set")
        unknown = sorted(set(self.parameters.values()) - set(KFP_PARAMETER_SOURCES))
        if unknown:
            raise ValueError(
                f"parameters: unknown fields {unknown}; use {', '.join(KFP_PARAMETER_SOURCES)}"
            )
        return self

    @property
    def key(self) -> str:
        base = str(self.endpoint).rstrip("/")
        return f"{base}/apis/v2beta1/runs#{self.pipeline_id or self.pipeline_name}"

    @property
    def label(self) -> str:
        return self.name or (self.endpoint.host or "kubeflow")


class KafkaTarget(_Target):
    """Publishes the retraining event to a Kafka topic, keyed by model id."""

    type: Literal["kafka"]
    topic: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]+$", description="Default: <topic prefix>.retraining."
    )

    @model_validator(mode="after")
    def _default_topic(self, info: ValidationInfo) -> KafkaTarget:
        if self.topic is None:
            prefix = (info.context or {}).get("topic_prefix", "driftline")
            object.__setattr__(self, "topic", f"{prefix}.retraining")
        return self

    @property
    def key(self) -> str:
        return f"kafka:{self.topic}"

    @property
    def label(self) -> str:
        return self.name or str(self.topic)


def _target_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "webhook"))
    return str(getattr(value, "type", "webhook"))


_TARGET_TAGS = frozenset({"webhook", "kubeflow", "kafka"})
Target = Annotated[
    Annotated[WebhookTarget, Tag("webhook")]
    | Annotated[KubeflowTarget, Tag("kubeflow")]
    | Annotated[KafkaTarget, Tag("kafka")],
    Discriminator(
        _target_type,
        custom_error_type="target_type",
        custom_error_message="type must be webhook (the default), kubeflow or kafka",
    ),
]


def _check_secret(secret: str) -> None:
    from standardwebhooks import Webhook

    try:
        Webhook(secret)
    except Exception as exc:
        raise ValueError(f"the secret is not a valid whsec_ base64 secret ({exc})") from None


class SegmentSpec(_Strict):
    """Drift per value of the events' ``segment`` too, for a bounded list of values."""

    values: list[str] = Field(min_length=1, max_length=50, description="Segments reported.")
    other: bool = Field(
        True, description="Also report the other segments (and events without one) pooled."
    )

    @field_validator("values")
    @classmethod
    def _unique_values(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values) or OTHER_SEGMENT in values:
            raise ValueError(f"segment values must be unique and not {OTHER_SEGMENT!r}")
        return values


OTHER_SEGMENT = "other"


class MonitorSpec(_Strict):
    """One monitored model."""

    model_id: str = Field(min_length=1, max_length=256)
    tenant: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,127}$",
        description="The team that owns the model: only its API keys see it.",
    )
    reference: ReferenceSpec
    features: list[FeatureSpec] | None = Field(
        None, description="Monitored features; omitted: every column of the reference file."
    )
    window: WindowSpec
    thresholds: ThresholdSpec = ThresholdSpec()
    policy: PolicySpec = PolicySpec()
    targets: list[Target] = Field(default_factory=list)
    segments: SegmentSpec | None = Field(
        None, description="Per-segment reports (triggers come from the whole model's windows)."
    )
    labels: LabelsSpec | None = Field(
        None, description="Delayed labels: live performance and concept drift."
    )

    @model_validator(mode="after")
    def _labels_for_performance(self) -> MonitorSpec:
        performance = self.policy.performance
        if performance is None:
            return self
        if self.labels is None:
            raise ValueError("policy.performance needs labels (the labels section)")
        if self.labels.reference_prediction is None:
            raise ValueError(
                "policy.performance compares with the reference's performance: "
                "set labels.reference_prediction"
            )
        regression = performance.metric in ("mae", "rmse")
        if regression != (self.labels.task == "regression"):
            raise ValueError(
                f"policy.performance.metric {performance.metric} is not a {self.labels.task} metric"
            )
        if performance.metric == "log_loss" and self.labels.prediction != "probability":
            raise ValueError(
                "policy.performance.metric log_loss needs labels.prediction: probability"
            )
        return self

    @field_validator("features")
    @classmethod
    def _unique_features(cls, features: list[FeatureSpec] | None) -> list[FeatureSpec] | None:
        names = [f.name for f in features or []]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature names must be unique; repeated: {duplicates}")
        if sum(f.source == "prediction" for f in features or []) > 1:
            raise ValueError("at most one feature can have source: prediction")
        return features


class MonitorsConfig(_Strict):
    """The whole monitors file."""

    models: list[MonitorSpec] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique_models(cls, models: list[MonitorSpec]) -> list[MonitorSpec]:
        ids = [m.model_id for m in models]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"model_id must be unique; repeated: {duplicates}")
        return models

    def by_model(self) -> dict[str, MonitorSpec]:
        return {m.model_id: m for m in self.models}


def load_monitors(
    path: Path, topic_prefix: str = "driftline", *, resolve_secrets: bool = True
) -> MonitorsConfig:
    """Read and validate a monitors YAML file; errors name the file and the field.

    ``topic_prefix`` names the default topic of Kafka targets (``<prefix>.retraining``).
    ``resolve_secrets=False``: the targets' secrets are neither read nor checked (for
    what sends nothing, like ``driftline replay``).
    """
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"monitors file {path} not found; set DRIFTLINE_MONITORS_PATH or create it"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return MonitorsConfig.model_validate(
            data,
            context={
                "base_dir": path.parent,
                "topic_prefix": topic_prefix,
                "resolve_secrets": resolve_secrets,
            },
        )
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_config_error(exc)}") from None


def describe_config_error(exc: ValidationError) -> str:
    """``models[0].window.duration: message`` for each error."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ""
        loc = err["loc"]
        for i, part in enumerate(loc):
            if i and isinstance(loc[i - 1], int) and part in _TARGET_TAGS:
                continue  # the union's tag (targets[0].webhook.url): not a field
            where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
        parts.append(f"{where or 'file'}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
