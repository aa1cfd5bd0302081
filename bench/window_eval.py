"""Benchmark: evaluate one window of 1,000 rows x 20 numeric features against a
10,000-row reference, as the worker does when a window closes.

"driftline" is the full path: histograms (bins, quantile sketch, moments), PSI and
JS, calibrated thresholds and p-values, and the report with per-feature statistics.
"bare numpy" is searchsorted + bincount + PSI + JS alone, for scale.

    python bench/window_eval.py [--repeat 3000] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from driftline.detectors.profile import ReferenceProfile
from driftline.monitoring import Monitor, calibrate, histograms_of, window_report
from driftline.schemas.monitors import MonitorSpec

FEATURES, ROWS, REFERENCE_ROWS = 20, 1_000, 10_000


def setup() -> tuple[Monitor, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    spec = MonitorSpec.model_validate(
        {
            "model_id": "bench",
            "reference": {"path": "unused.parquet"},
            "features": [{"name": f"f{i}", "kind": "numeric"} for i in range(FEATURES)],
            "window": {"duration": "1m", "panes": 1},
        }
    )
    assert spec.features is not None
    reference = {f"f{i}": rng.normal(size=REFERENCE_ROWS) for i in range(FEATURES)}
    profile = calibrate(ReferenceProfile.build(reference, spec.features), spec.thresholds)
    current = {f"f{i}": rng.normal(0.1, 1.0, ROWS) for i in range(FEATURES)}
    return Monitor(spec, tuple(spec.features), profile), current


def time_per_call(function: object, repeat: int) -> list[float]:
    call = function  # type: ignore[assignment]
    for _ in range(min(200, repeat)):
        call()  # type: ignore[operator]
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    monitor, current = setup()
    profile = monitor.profile
    edges = [f.binning.edges for f in profile.features]  # type: ignore[union-attr]
    reference_counts = [f.histogram.counts for f in profile.features]

    def driftline_window() -> object:
        return window_report(monitor, histograms_of(profile, current), 0.0, 60.0, None)

    floored = [np.maximum(c / c.sum(), 1e-4) for c in reference_counts]
    floored = [q / q.sum() for q in floored]
    raw = [c / c.sum() for c in reference_counts]

    def bare_numpy() -> object:
        out = []
        for i in range(FEATURES):
            values = current[f"f{i}"]
            bins = np.searchsorted(edges[i][1:-1], values, side="right") + 2
            counts = np.bincount(bins, minlength=edges[i].size + 2)
            p = counts / counts.sum()
            pf = np.maximum(p, 1e-4)
            pf /= pf.sum()
            psi = np.sum((pf - floored[i]) * np.log(pf / floored[i]))
            m = 0.5 * (p + raw[i])
            with np.errstate(divide="ignore", invalid="ignore"):
                js = 0.5 * (np.nansum(p * np.log2(p / m)) + np.nansum(raw[i] * np.log2(raw[i] / m)))
            out.append((psi, js))
        return out

    results = {}
    for name, function in (("driftline", driftline_window), ("bare numpy", bare_numpy)):
        samples = time_per_call(function, args.repeat)
        results[name] = {
            "median_ms": statistics.median(samples) * 1e3,
            "p95_ms": float(np.quantile(samples, 0.95)) * 1e3,
        }
    info = {
        "rows": ROWS,
        "features": FEATURES,
        "reference_rows": REFERENCE_ROWS,
        "repeat": args.repeat,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "results": results,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(
        f"one window: {ROWS} rows x {FEATURES} numeric features vs {REFERENCE_ROWS} reference "
        f"rows ({args.repeat} runs, Python {info['python']}, numpy {info['numpy']})"
    )
    for name, figures in results.items():
        print(f"  {name:<11} median {figures['median_ms']:.3f} ms   p95 {figures['p95_ms']:.3f} ms")


if __name__ == "__main__":
    main()
