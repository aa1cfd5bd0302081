"""Mergeable model-performance accumulators over labelled predictions.

Like histograms, they sum exactly across panes, so a window's performance is the sum
of its panes' accumulators whatever the grouping. ``stream/outcomes.py`` keeps one
per pane of prediction time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: Probabilities are clipped to [EPS, 1 - EPS] for log loss (scikit-learn's default).
EPS = 1e-15


@dataclass(frozen=True)
class Classification:
    """A confusion matrix over ``classes`` and, when scores are probabilities, log loss.

    >>> c = Classification.of(["a", "b"], np.array(["a", "a", "b", "b"]),
    ...                       np.array(["a", "b", "b", "b"]))
    >>> c.accuracy, round(c.macro_f1, 4)
    (0.75, 0.7333)
    >>> (c + c).confusion.tolist()
    [[2, 2], [0, 4]]
    """

    classes: tuple[str, ...]
    #: ``confusion[i, j]``: label ``classes[i]`` predicted as ``classes[j]``.
    confusion: npt.NDArray[np.int64]
    log_loss_sum: float = 0.0
    #: Predictions that came with the probability of their label.
    scored: int = 0

    @classmethod
    def empty(cls, classes: list[str]) -> Classification:
        return cls(tuple(classes), np.zeros((len(classes), len(classes)), dtype=np.int64))

    @classmethod
    def of(
        cls,
        classes: list[str],
        labels: npt.NDArray[Any],
        predictions: npt.NDArray[Any],
        label_probabilities: npt.NDArray[np.float64] | None = None,
    ) -> Classification:
        """Accumulate pairs; labels or predictions outside ``classes`` are ignored.

        ``label_probabilities[i]``, when given, is the probability the model gave to
        the true label of pair ``i`` (NaN: not scored).
        """
        index = {c: i for i, c in enumerate(classes)}
        truth = np.array([index.get(str(v), -1) for v in labels], dtype=np.int64)
        guess = np.array([index.get(str(v), -1) for v in predictions], dtype=np.int64)
        known = (truth >= 0) & (guess >= 0)
        k = len(classes)
        confusion = np.bincount(truth[known] * k + guess[known], minlength=k * k).reshape(k, k)
        loss, scored = 0.0, 0
        if label_probabilities is not None:
            p = np.asarray(label_probabilities, dtype=np.float64)[known]
            p = p[np.isfinite(p)]
            loss = float(-np.log(np.clip(p, EPS, 1 - EPS)).sum())
            scored = int(p.size)
        return cls(tuple(classes), confusion.astype(np.int64), loss, scored)

    def __add__(self, other: Classification) -> Classification:
        if self.classes != other.classes:
            raise ValueError("cannot add accumulators of different classes")
        return Classification(
            self.classes,
            self.confusion + other.confusion,
            self.log_loss_sum + other.log_loss_sum,
            self.scored + other.scored,
        )

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.n) if self.n else math.nan

    def per_class(self) -> dict[str, dict[str, float]]:
        """Precision, recall and F1 of each class (NaN where undefined)."""
        tp = np.diag(self.confusion).astype(np.float64)
        predicted = self.confusion.sum(axis=0).astype(np.float64)
        actual = self.confusion.sum(axis=1).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, tp / predicted, np.nan)
            recall = np.where(actual > 0, tp / actual, np.nan)
            f1 = np.where(
                (precision + recall) > 0, 2 * precision * recall / (precision + recall), 0.0
            )
        f1 = np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)
        return {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i])}
            for i, c in enumerate(self.classes)
        }

    @property
    def macro_f1(self) -> float:
        """F1 averaged over the classes that occur (as labels or predictions)."""
        values = [v["f1"] for v in self.per_class().values() if not math.isnan(v["f1"])]
        return float(np.mean(values)) if values else math.nan

    @property
    def log_loss(self) -> float | None:
        return self.log_loss_sum / self.scored if self.scored else None

    def to_state(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
            "log_loss_sum": self.log_loss_sum,
            "scored": self.scored,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Classification:
        return cls(
            tuple(state["classes"]),
            np.asarray(state["confusion"], dtype=np.int64),
            float(state["log_loss_sum"]),
            int(state["scored"]),
        )


@dataclass(frozen=True)
class Regression:
    """Sums for MAE and RMSE (and the mean error, the bias) over labelled predictions.

    >>> r = Regression.of(np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 1.0]))
    >>> r.mae, round(r.rmse, 4), round(r.bias, 4)
    (0.8333333333333334, 1.1902, -0.5)
    """

    n: int = 0
    abs_error_sum: float = 0.0
    sq_error_sum: float = 0.0
    error_sum: float = 0.0

    @classmethod
    def of(
        cls, labels: npt.NDArray[np.float64], predictions: npt.NDArray[np.float64]
    ) -> Regression:
        error = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
        error = error[np.isfinite(error)]
        return cls(
            int(error.size),
            float(np.abs(error).sum()),
            float((error**2).sum()),
            float(error.sum()),
        )

    def __add__(self, other: Regression) -> Regression:
        return Regression(
            self.n + other.n,
            self.abs_error_sum + other.abs_error_sum,
            self.sq_error_sum + other.sq_error_sum,
            self.error_sum + other.error_sum,
        )

    @property
    def mae(self) -> float:
        return self.abs_error_sum / self.n if self.n else math.nan

    @property
    def rmse(self) -> float:
        return math.sqrt(self.sq_error_sum / self.n) if self.n else math.nan

    @property
    def bias(self) -> float:
        """Mean of prediction - label."""
        return self.error_sum / self.n if self.n else math.nan

    def to_state(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "abs_error_sum": self.abs_error_sum,
            "sq_error_sum": self.sq_error_sum,
            "error_sum": self.error_sum,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Regression:
        return cls(
            int(state["n"]),
            float(state["abs_error_sum"]),
            float(state["sq_error_sum"]),
            float(state["error_sum"]),
        )
