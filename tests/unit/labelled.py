"""A labelled model for the outcome tests: a binary classifier of ``x`` whose truth can flip."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from driftline.detectors.outcomes import OutcomeProfile, Scorer
from driftline.detectors.profile import ReferenceProfile
from driftline.monitoring import Monitor, calibrate
from driftline.schemas.monitors import MonitorSpec
from driftline.stream.deadletter import SourceMessage

START = 1_700_000_000.0


def truth(rng: np.random.Generator, x: np.ndarray, flipped: bool = False) -> np.ndarray:
    """The true class: mostly ``x > 0`` (10% noise); flipped, mostly ``x < 0``."""
    noisy = rng.uniform(size=x.size) < 0.1
    positive = (x > 0) ^ noisy
    return np.where(positive ^ flipped, "yes", "no")


def probability(x: np.ndarray) -> np.ndarray:
    """The model: P(yes) = sigmoid(3x), rounded like a served score."""
    return np.round(1 / (1 + np.exp(-3 * x)), 4)


def labelled_monitor(
    labels: dict[str, Any] | None = None, policy: dict[str, Any] | None = None, seed: int = 0
) -> Monitor:
    spec = MonitorSpec.model_validate(
        {
            "model_id": "m",
            "reference": {"path": "unused.parquet"},
            "features": [{"name": "x", "kind": "numeric"}],
            "window": {"duration": "5m", "panes": 5, "min_events": 50},
            "labels": {
                "task": "classification",
                "classes": ["no", "yes"],
                "prediction": "probability",
                "horizon": "5m",
                "min_labelled": 50,
                **(labels or {}),
            },
            "policy": {"clean_windows_to_close": 2, **(policy or {})},
        }
    )
    assert spec.features is not None
    assert spec.labels is not None
    rng = np.random.default_rng(seed)
    x = rng.normal(size=5000)
    scorer = Scorer("classification", ("no", "yes"), probability=True)
    profile = ReferenceProfile.build({"x": x}, spec.features)
    outcomes = OutcomeProfile.build(scorer, list(truth(rng, x)), list(probability(x)))
    from dataclasses import replace

    profile = calibrate(replace(profile, outcomes=outcomes), spec.thresholds)
    return Monitor(spec, tuple(spec.features), profile, 1)


def prediction_messages(
    rng: np.random.Generator, n: int, start: float, per_second: float, flipped: bool = False
) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Single-event prediction messages, and the label rows their truth gives."""
    x = rng.normal(size=n)
    ts = start + np.arange(n) / per_second
    p = probability(x)
    classes = truth(rng, x, flipped)
    messages, labels = [], []
    for i in range(n):
        event_id = f"e{int(ts[i] * 1000)}-{i}"
        messages.append(
            orjson.dumps(
                {
                    "model_id": "m",
                    "event_id": event_id,
                    "ts": float(ts[i]),
                    "features": {"x": float(x[i])},
                    "prediction": float(p[i]),
                }
            )
        )
        labels.append(
            {"model_id": "m", "event_id": event_id, "ts": float(ts[i]), "label": str(classes[i])}
        )
    return messages, labels


def label_message(label: dict[str, Any], delay: float) -> bytes:
    return orjson.dumps({**label, "ts": label["ts"] + delay})


def as_sources(values: list[bytes], topic: str = "t.predictions") -> list[SourceMessage]:
    return [SourceMessage(b"m", v, topic, 0, i) for i, v in enumerate(values)]


def rounded(value: Any) -> Any:
    """Floats to 12 significant digits: sums merged in another order differ in the last bits."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


def same_reports(left: list[Any], right: list[Any]) -> bool:
    """Performance reports equal but for the last bits of summed floats."""
    return rounded([r.model_dump(mode="json") for r in left]) == rounded(
        [r.model_dump(mode="json") for r in right]
    )
