"""Mergeable moments of a numeric feature: count, mean, variance, min, max."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Moments:
    """Count, mean, sum of squared deviations, min and max of the non-missing values.

    Merging two is exact (Chan et al.'s parallel update), so panes can be summed
    into windows in any grouping:

    >>> a = Moments.of(np.array([1.0, 2.0]))
    >>> b = Moments.of(np.array([3.0, np.nan, 4.0]))
    >>> (a + b).mean, round((a + b).variance, 6), (a + b).min, (a + b).max
    (2.5, 1.666667, 1.0, 4.0)
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def of(cls, values: npt.NDArray[np.float64]) -> Moments:
        """Moments of the finite ``values`` (NaN is missing; infinities only fall in bins)."""
        present = values[np.isfinite(values)]
        if present.size == 0:
            return cls()
        mean = float(present.mean())
        return cls(
            count=int(present.size),
            mean=mean,
            m2=float(np.sum((present - mean) ** 2)),
            min=float(present.min()),
            max=float(present.max()),
        )

    def __add__(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        return Moments(
            count=count,
            mean=self.mean + delta * other.count / count,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / count,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); NaN below two values."""
        return self.m2 / (self.count - 1) if self.count > 1 else math.nan

    @property
    def std(self) -> float:
        return math.sqrt(self.variance) if self.count > 1 else math.nan

    def to_state(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean": self.mean,
            "m2": self.m2,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Moments:
        if not state["count"]:
            return cls()
        return cls(
            int(state["count"]),
            float(state["mean"]),
            float(state["m2"]),
            float(state["min"]),
            float(state["max"]),
        )
