"""Synthetic prediction traffic for the demo and tests: reference-like, then drifted."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import KafkaError, Producer

from driftline.exceptions import BrokerError
from driftline.kafka_clients import librdkafka_config

if TYPE_CHECKING:
    from driftline.settings import Settings

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


def write_reference(path: Path, rows: int = 5000, seed: int = 7) -> None:
    """A reference (training) sample of the traffic model as Parquet."""
    rng = np.random.default_rng(seed)
    pq.write_table(pa.table(TrafficModel().sample(rng, rows)), path)


def stream_traffic(
    bootstrap: str,
    topic: str,
    model_id: str,
    rate: float,
    drift_after_s: float,
    duration_s: float | None = None,
    settings: Settings | None = None,
) -> int:
    """Produce live events (event time = now) at ``rate`` per second, drifted after
    ``drift_after_s`` seconds; for ``duration_s`` seconds or until interrupted. Returns
    how many the broker acknowledged; raises BrokerError if some were not delivered."""
    delivered, failures = 0, []

    def acknowledged(rows: int, error: KafkaError | None, _: object) -> None:
        nonlocal delivered
        if error is None:
            delivered += rows
        else:
            failures.append(error.str())

    producer = Producer(
        librdkafka_config(bootstrap, settings, **{"enable.idempotence": True, "linger.ms": 20})
    )
    rng = np.random.default_rng()
    started = time.time()
    sent = 0
    try:
        while duration_s is None or time.time() - started < duration_s:
            tick = time.time()
            drifted = tick - started >= drift_after_s
            n = max(1, int(rng.poisson(rate)))
            ts = np.sort(rng.uniform(tick - 1.0, tick, n))
            rows = TrafficModel(drifted=drifted).rows(rng, n, ts, sent)
            body = {"model_id": model_id, "model_version": "demo", "events": rows}
            producer.produce(
                topic,
                key=model_id.encode(),
                value=orjson.dumps(body),
                on_delivery=functools.partial(acknowledged, n),
            )
            producer.poll(0)
            sent += n
            time.sleep(max(0.0, 1.0 - (time.time() - tick)))
    except KeyboardInterrupt:
        pass
    finally:
        left = producer.flush(10)
    if failures or left:
        reason = failures[-1] if failures else "no acknowledgement within 10 s"
        raise BrokerError(
            f"{sent - delivered} of {sent} events not delivered to {bootstrap} ({reason}); "
            "check DRIFTLINE_KAFKA_BOOTSTRAP and DRIFTLINE_KAFKA_SECURITY_PROTOCOL"
        )
    return delivered
