"""Predictions scored against their labels, and the reference's own performance.

``Scorer`` turns (prediction, label) pairs into classes, errors and losses the same way
for the reference file and for the stream. ``OutcomeProfile`` is what the reference
says about outcomes: its label distribution (compared like a feature) and its
performance, with the limits a window's performance is held to (fixed or calibrated).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson
from scipy.special import ndtri

from driftline.detectors.performance import Classification, Regression
from driftline.detectors.profile import ReferenceProfile
from driftline.schemas.monitors import FeatureSpec
from driftline.schemas.values import category_label

Task = Literal["classification", "regression"]
Metric = Literal["accuracy", "f1", "log_loss", "mae", "rmse"]
#: Simulated windows for a calibrated classification limit.
BOOTSTRAP = 2000


def label_feature(task: Task, classes: int = 0) -> FeatureSpec:
    """The label, profiled and compared like a feature."""
    if task == "regression":
        return FeatureSpec(name="label", kind="numeric")
    return FeatureSpec(name="label", kind="categorical", max_categories=max(classes, 1))


@dataclass(frozen=True)
class Scorer:
    """How one model's predictions and labels are read.

    >>> s = Scorer("classification", ("no", "yes"), probability=True)
    >>> s.score([0.9, 0.2], ["yes", "yes"]).accuracy, s.losses([0.9, 0.2], ["yes", "yes"])
    (0.5, [0.0, 1.0])
    """

    task: Task
    classes: tuple[str, ...] = ()
    probability: bool = False
    positive_class: str | None = None
    decision_threshold: float = 0.5

    @property
    def positive(self) -> str:
        return self.positive_class or self.classes[-1]

    @property
    def negative(self) -> str:
        return next(c for c in self.classes if c != self.positive)

    def label_problem(self, label: Any) -> str | None:
        """Why a label cannot be scored (None: it can)."""
        if self.task == "regression":
            if isinstance(label, bool) or not isinstance(label, int | float):
                return f"label: expected a number for regression, got {label!r}"
            return None if math.isfinite(label) else "label: expected a finite number"
        if category_label(label) not in self.classes:
            return f"label: {label!r} is not one of the classes {list(self.classes)}"
        return None

    def scoreable(self, prediction: Any) -> bool:
        """Whether a prediction can be scored once its label comes."""
        if self.task == "regression" or self.probability:
            return (
                isinstance(prediction, int | float)
                and not isinstance(prediction, bool)
                and math.isfinite(prediction)
                and (not self.probability or 0.0 <= prediction <= 1.0)
            )
        return category_label(prediction) in self.classes

    def _classes(
        self, predictions: Sequence[Any], labels: Sequence[Any]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.float64] | None]:
        truth = np.array([category_label(v) for v in labels], dtype=object)
        if not self.probability:
            guess = np.array([category_label(v) for v in predictions], dtype=object)
            return truth, guess, None
        p = np.asarray(predictions, dtype=np.float64)
        guess = np.where(p >= self.decision_threshold, self.positive, self.negative).astype(object)
        return truth, guess, np.where(truth == self.positive, p, 1.0 - p)

    def score(
        self, predictions: Sequence[Any], labels: Sequence[Any]
    ) -> Classification | Regression:
        """The performance accumulator of these pairs."""
        if self.task == "regression":
            return Regression.of(
                np.asarray(labels, np.float64), np.asarray(predictions, np.float64)
            )
        truth, guess, p_label = self._classes(predictions, labels)
        return Classification.of(list(self.classes), truth, guess, p_label)

    def losses(self, predictions: Sequence[Any], labels: Sequence[Any]) -> list[float]:
        """Per-pair loss for concept-drift detection: 0/1 error, or the absolute error."""
        if self.task == "regression":
            error = np.asarray(predictions, np.float64) - np.asarray(labels, np.float64)
            return np.abs(error).tolist()  # type: ignore[no-any-return]
        truth, guess, _ = self._classes(predictions, labels)
        return (truth != guess).astype(np.float64).tolist()  # type: ignore[no-any-return]

    def row_losses(
        self, predictions: Sequence[Any], labels: Sequence[Any]
    ) -> dict[str, npt.NDArray[np.float64]]:
        """Per-row losses whose mean is a metric: for calibrated limits of mean losses."""
        if self.task == "regression":
            error = np.asarray(predictions, np.float64) - np.asarray(labels, np.float64)
            return {"mae": np.abs(error), "rmse": error**2}
        _, _, p_label = self._classes(predictions, labels)
        if p_label is None:
            return {}
        return {"log_loss": -np.log(np.clip(p_label, 1e-15, 1 - 1e-15))}


def metric_value(performance: Classification | Regression, metric: Metric) -> float | None:
    """One metric of an accumulator (None where it is undefined)."""
    value: float | None
    if isinstance(performance, Regression):
        value = {"mae": performance.mae, "rmse": performance.rmse}.get(metric)
    elif metric == "accuracy":
        value = performance.accuracy
    elif metric == "f1":
        value = performance.macro_f1
    elif metric == "log_loss":
        value = performance.log_loss
    else:
        value = None
    return None if value is None or math.isnan(value) else float(value)


def metrics_of(performance: Classification | Regression) -> dict[str, float | None]:
    """Every metric of an accumulator, for reports (None where undefined)."""
    if isinstance(performance, Regression):
        names: tuple[Metric, ...] = ("mae", "rmse")
        values: dict[str, float | None] = {n: metric_value(performance, n) for n in names}
        values["bias"] = None if math.isnan(performance.bias) else performance.bias
        return values
    return {name: metric_value(performance, name) for name in ("accuracy", "f1", "log_loss")}


@dataclass(frozen=True)
class OutcomeProfile:
    """The reference's labels and, when it has predictions, its performance."""

    scorer: Scorer
    #: The label's distribution, profiled (and calibrated) like a feature.
    label: ReferenceProfile
    performance: Classification | Regression | None
    #: Mean and variance of each mean-type loss per row (calibrated limits).
    loss_moments: dict[str, tuple[float, float]] = field(default_factory=dict)
    memo: dict[tuple[str, int, float], float] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(
        cls, scorer: Scorer, labels: Sequence[Any], predictions: Sequence[Any] | None
    ) -> OutcomeProfile:
        """Profile the reference's labels (and score its predictions, when given)."""
        if scorer.task == "classification":
            column: npt.NDArray[Any] = np.array([category_label(v) for v in labels], dtype=object)
        else:
            column = np.asarray(labels, dtype=np.float64)
        feature = label_feature(scorer.task, len(scorer.classes))
        label = ReferenceProfile.build({"label": column}, [feature])
        if predictions is None:
            return cls(scorer, label, None)
        moments = {
            name: (float(values.mean()), float(values.var(ddof=1)))
            for name, values in scorer.row_losses(predictions, labels).items()
            if values.size > 1
        }
        return cls(scorer, label, scorer.score(predictions, labels), moments)

    def reference_value(self, metric: Metric) -> float | None:
        return None if self.performance is None else metric_value(self.performance, metric)

    def limit(
        self, metric: Metric, tolerance: float | str, n: int, false_alarm_rate: float
    ) -> float | None:
        """The worst value a window of ``n`` labelled predictions may have before it is
        degraded (None: the reference has no value to compare with)."""
        reference = self.reference_value(metric)
        if reference is None or n < 1:
            return None
        higher_is_better = metric in ("accuracy", "f1")
        if not isinstance(tolerance, str):
            return reference - tolerance if higher_is_better else reference + tolerance
        key = (metric, n, false_alarm_rate)
        limit = self.memo.get(key)
        if limit is None:
            limit = self._calibrated(metric, n, false_alarm_rate)
            if len(self.memo) > 4096:
                self.memo.clear()
            self.memo[key] = limit
        return limit

    def _calibrated(self, metric: Metric, n: int, alpha: float) -> float:
        if metric in ("accuracy", "f1"):
            assert isinstance(self.performance, Classification)
            return _bootstrap_limit(self.performance, metric, n, alpha, self._seed(n))
        mean, var = self.loss_moments[metric]
        n_ref = self.performance.n if self.performance is not None else n
        spread = math.sqrt(var * (1.0 / n + 1.0 / n_ref))
        worst = mean + float(ndtri(1 - alpha)) * spread
        return math.sqrt(max(worst, 0.0)) if metric == "rmse" else worst

    def _seed(self, n: int) -> int:
        digest = hashlib.sha256(orjson.dumps(self.to_state(), option=orjson.OPT_SORT_KEYS))
        return int(digest.hexdigest()[:12], 16) + n

    def calibrated(
        self, metric: Literal["psi", "js"], alpha: float, samples: int
    ) -> OutcomeProfile:
        """With the label's drift thresholds calibrated like the features'."""
        return OutcomeProfile(
            self.scorer,
            self.label.calibrated(metric, alpha, samples),
            self.performance,
            self.loss_moments,
        )

    def to_state(self) -> dict[str, Any]:
        s = self.scorer
        return {
            "task": s.task,
            "classes": list(s.classes),
            "probability": s.probability,
            "positive_class": s.positive_class,
            "decision_threshold": s.decision_threshold,
            "label": self.label.to_state(),
            "performance": None if self.performance is None else self.performance.to_state(),
            "loss_moments": {k: list(v) for k, v in sorted(self.loss_moments.items())},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> OutcomeProfile:
        scorer = Scorer(
            state["task"],
            tuple(state["classes"]),
            bool(state["probability"]),
            state["positive_class"],
            float(state["decision_threshold"]),
        )
        performance: Classification | Regression | None = None
        if state["performance"] is not None:
            kind = Regression if scorer.task == "regression" else Classification
            performance = kind.from_state(state["performance"])
        return cls(
            scorer,
            ReferenceProfile.from_state(state["label"]),
            performance,
            {k: (float(v[0]), float(v[1])) for k, v in state["loss_moments"].items()},
        )


def _bootstrap_limit(
    reference: Classification, metric: Metric, n: int, alpha: float, seed: int
) -> float:
    """The ``alpha`` quantile of ``metric`` over windows of ``n`` pairs drawn like the
    reference's, itself redrawn (two levels: the reference is a sample too)."""
    rng = np.random.default_rng(seed)
    cells = reference.confusion.ravel().astype(np.float64)
    total = int(cells.sum())
    again = rng.multinomial(total, cells / total, size=BOOTSTRAP) / total
    windows = rng.multinomial(n, again)
    k = len(reference.classes)
    values = confusion_metric(windows.reshape(-1, k, k), metric)
    return float(np.nanquantile(values, alpha))


def confusion_metric(confusion: npt.NDArray[np.int64], metric: Metric) -> npt.NDArray[np.float64]:
    """Accuracy or macro F1 of a stack of confusion matrices, as ``Classification`` has them.

    >>> m = np.array([[[1, 1], [0, 2]]])
    >>> confusion_metric(m, "accuracy").tolist(), confusion_metric(m, "f1").round(4).tolist()
    ([0.75], [0.7333])
    """
    n = confusion.sum(axis=(1, 2)).astype(np.float64)
    tp = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    if metric == "accuracy":
        with np.errstate(invalid="ignore", divide="ignore"):
            return tp.sum(axis=1) / n  # type: ignore[no-any-return]
    predicted = confusion.sum(axis=1).astype(np.float64)
    actual = confusion.sum(axis=2).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(actual > 0, tp / actual, np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        f1 = np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)
        return np.nanmean(f1, axis=1)  # type: ignore[no-any-return]
