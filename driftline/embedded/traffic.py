"""Synthetic prediction traffic for the demo and tests: reference-like, then drifted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

COUNTRIES = ["US", "DE", "FR", "IN", "BR"]
REFERENCE_COUNTRY_P = [0.40, 0.20, 0.15, 0.15, 0.10]
DRIFTED_COUNTRY_P = [0.20, 0.10, 0.10, 0.35, 0.25]
DEVICES = ["ios", "android", "web"]
DEVICE_P = [0.45, 0.40, 0.15]


@dataclass(frozen=True)
class TrafficModel:
    """A fraud-scoring model's inputs; ``drifted`` moves amount, score and country."""

    drifted: bool = False

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, Any]:
        """``n`` rows as columns (numeric arrays and lists of strings)."""
        shift = 0.6 if self.drifted else 0.0
        return {
            "amount": rng.lognormal(3.0 + shift, 0.8, n).round(2),
            "age": np.clip(rng.normal(40, 12, n), 18, 90).round(0),
            "tenure_days": rng.exponential(400, n).round(0),
            "score": rng.beta(2, 5 - 2.5 * (shift > 0), n).round(4),
            "country": list(
                rng.choice(
                    COUNTRIES, n, p=DRIFTED_COUNTRY_P if self.drifted else REFERENCE_COUNTRY_P
                )
            ),
            "device": list(rng.choice(DEVICES, n, p=DEVICE_P)),
        }

    def rows(
        self, rng: np.random.Generator, n: int, ts: np.ndarray, start_id: int
    ) -> list[dict[str, Any]]:
        """``n`` EventBatch rows at event times ``ts``."""
        columns = self.sample(rng, n)
        names = list(columns)
        rows = []
        for i in range(n):
            features = {name: _plain(columns[name][i]) for name in names}
            rows.append(
                {
                    "event_id": f"e{start_id + i}",
                    "ts": float(ts[i]),
                    "features": features,
                    "prediction": round(float(features["score"]) * 1.3 % 1, 4),
                }
            )
        return rows


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
