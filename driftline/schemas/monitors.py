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
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from driftline.exceptions import ConfigError

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


class PolicySpec(_Strict):
    """When drifted windows become one retraining request (once per drift episode)."""

    min_drifted_features: int = Field(1, ge=1, description="Drifted features for a drifted window.")
    consecutive_windows: int = Field(
        1, ge=1, description="Drifted windows in a row that open an episode and fire."
    )
    clean_windows_to_close: int = Field(
        3, ge=1, description="Clean windows in a row that close an open episode."
    )


class WebhookTarget(_Strict):
    """A receiver of retraining events, signed per the Standard Webhooks spec."""

    type: Literal["webhook"] = "webhook"
    url: AnyHttpUrl
    secret: SecretStr | None = Field(None, description="whsec_... signing secret.")
    secret_env: str | None = Field(None, description="Environment variable holding the secret.")
    timeout_s: float = Field(10.0, gt=0, description="Per-attempt HTTP timeout.")
    max_attempts: int = Field(8, ge=1, description="Attempts before a delivery is dead.")

    @model_validator(mode="after")
    def _load_secret(self) -> WebhookTarget:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of 'secret' or 'secret_env'")
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env)
            if not value:
                raise ValueError(f"environment variable {self.secret_env} is not set")
            object.__setattr__(self, "secret", SecretStr(value))
        _check_secret(self.signing_secret)
        return self

    @property
    def signing_secret(self) -> str:
        assert self.secret is not None  # set by the validator
        return self.secret.get_secret_value()


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
    reference: ReferenceSpec
    features: list[FeatureSpec] | None = Field(
        None, description="Monitored features; omitted: every column of the reference file."
    )
    window: WindowSpec
    thresholds: ThresholdSpec = ThresholdSpec()
    policy: PolicySpec = PolicySpec()
    targets: list[WebhookTarget] = Field(default_factory=list)
    segments: SegmentSpec | None = Field(
        None, description="Per-segment reports (triggers come from the whole model's windows)."
    )

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


def load_monitors(path: Path) -> MonitorsConfig:
    """Read and validate a monitors YAML file; errors name the file and the field."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"monitors file {path} not found; set DRIFTLINE_MONITORS_PATH or create it"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return MonitorsConfig.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_config_error(exc)}") from None


def describe_config_error(exc: ValidationError) -> str:
    """``models[0].window.duration: message`` for each error."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ""
        for part in err["loc"]:
            where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
        parts.append(f"{where or 'file'}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
