"""Small builders for unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from driftline.detectors.profile import ReferenceProfile
from driftline.monitoring import Monitor, calibrate
from driftline.schemas.events import EventRow
from driftline.schemas.monitors import MonitorSpec
from driftline.triggers.relay import OutboxRelay

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def make_monitor(
    seed: int = 0,
    *,
    panes: int = 5,
    lateness: str = "0s",
    min_events: int = 50,
    consecutive: int = 1,
    clean: int = 2,
    targets: list[dict[str, Any]] | None = None,
    thresholds: dict[str, Any] | None = None,
) -> Monitor:
    rng = np.random.default_rng(seed)
    spec = MonitorSpec.model_validate(
        {
            "model_id": "m",
            "reference": {"path": "unused.parquet"},
            "features": [{"name": "x", "kind": "numeric"}, {"name": "c", "kind": "categorical"}],
            "window": {
                "duration": f"{panes}m",
                "panes": panes,
                "allowed_lateness": lateness,
                "min_events": min_events,
            },
            "policy": {"consecutive_windows": consecutive, "clean_windows_to_close": clean},
            "thresholds": thresholds or {},
            "targets": targets or [],
        }
    )
    columns = {
        "x": rng.normal(size=5000),
        "c": np.array(rng.choice(["a", "b", "c"], 5000, p=[0.5, 0.3, 0.2]), dtype=object),
    }
    assert spec.features is not None
    profile = calibrate(ReferenceProfile.build(columns, spec.features), spec.thresholds)
    return Monitor(spec, tuple(spec.features), profile, 1)


def make_rows(
    rng: np.random.Generator,
    n: int,
    start: float,
    per_second: float,
    shift: float = 0.0,
    jitter: float = 0.0,
) -> list[EventRow]:
    ts = start + np.arange(n) / per_second + rng.uniform(-jitter, jitter, n)
    x = rng.normal(shift, 1.0, n)
    c = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2] if shift == 0 else [0.2, 0.3, 0.5])
    return [
        EventRow(event_id=str(i), ts=float(ts[i]), features={"x": float(x[i]), "c": str(c[i])})
        for i in range(n)
    ]


def assert_same_reports(left: list[Any], right: list[Any]) -> None:
    """Equal reports: counts, PSI, JS and verdicts exactly; float moments to 1e-9.

    Moments merged in another order (other batch boundaries) differ in the last bits.
    """
    import pytest

    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        dump_a, dump_b = a.model_dump(), b.model_dump()
        stats_a = [f.pop("stats") for f in dump_a["features"]]
        stats_b = [f.pop("stats") for f in dump_b["features"]]
        assert dump_a == dump_b
        for sa, sb in zip(stats_a, stats_b, strict=True):
            assert sa.keys() == sb.keys()
            for key, value in sa.items():
                if value is None or sb[key] is None:
                    assert value == sb[key], key
                else:
                    assert value == pytest.approx(sb[key], rel=1e-9, abs=1e-12), key


def make_retries_due(store: Any) -> None:
    """Make every pending delivery due now instead of after its real backoff."""
    with store.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE deliveries SET next_attempt_at = '2000-01-01 00:00:00'")


def recording_relay(
    store: Any, senders: Mapping[str, Any], target: Any
) -> tuple[OutboxRelay, list[str]]:
    """A relay for ``target`` of model ``m``, and the list its outcomes are appended to."""
    outcomes: list[str] = []
    relay = OutboxRelay(
        store, senders, {"m": [target]}, on_outcome=lambda _d, _t, o: outcomes.append(o)
    )
    return relay, outcomes


async def run_passes(relay: OutboxRelay, store: Any, passes: int, pause_s: float = 0.0) -> None:
    """Up to ``passes`` relay passes, each retry made due at once; stops when idle."""
    for _ in range(passes):
        if not await relay.run_once():
            return
        if pause_s:
            await asyncio.sleep(pause_s)
        make_retries_due(store)


def mark_delivered(store: Any, delivery_id: int, now: datetime, **extra: Any) -> Any:
    """Record a delivery's attempt as delivered (204) at ``now``."""
    return store.record_attempt(
        delivery_id,
        status="delivered",
        http_status=204,
        error=None,
        latency_s=0.1,
        next_attempt_at=now,
        now=now,
        **extra,
    )
