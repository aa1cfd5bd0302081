"""A worker restarting on an unchanged reference file reuses its stored calibration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftline.detectors import profile as profile_module
from driftline.schemas.monitors import MonitorSpec
from driftline.store import Store
from driftline.stream.worker import prepare_monitor


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store.connect(database_url)
    yield store
    store.close()


@pytest.fixture
def calibrations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calibrations (the real ones run)."""
    calls: list[int] = []
    build = profile_module.Calibration.build

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(profile_module.Calibration, "build", counted)
    return calls


def spec(path: Path, false_alarm_rate: float = 0.01) -> MonitorSpec:
    return MonitorSpec.model_validate(
        {
            "model_id": "m",
            "reference": {"path": str(path)},
            "window": {"duration": 60, "panes": 2},
            "thresholds": {"false_alarm_rate": false_alarm_rate, "calibration_samples": 200},
        }
    )


def reference(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pq.write_table(pa.table({"a": rng.normal(size=500), "b": rng.gamma(2.0, size=500)}), path)
    return path


def test_an_unchanged_reference_is_not_calibrated_again(
    tmp_path: Path, store: Store, calibrations: list[int]
) -> None:
    path = reference(tmp_path / "ref.parquet", seed=1)
    first = prepare_monitor(spec(path), store)
    assert len(calibrations) == 1
    again = prepare_monitor(spec(path), store)
    assert len(calibrations) == 1  # the stored calibration, not a new one
    assert again.reference_version == first.reference_version
    assert again.profile.fingerprint() == first.profile.fingerprint()
    # Other thresholds are calibrated (and stored as a new version).
    stricter = prepare_monitor(spec(path, false_alarm_rate=0.001), store)
    assert len(calibrations) == 2
    assert stricter.reference_version != first.reference_version
    # Other data too, even in the same file.
    reference(path, seed=2)
    changed = prepare_monitor(spec(path, false_alarm_rate=0.001), store)
    assert len(calibrations) == 3
    assert changed.profile.fingerprint() != stricter.profile.fingerprint()
