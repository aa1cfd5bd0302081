"""Benchmark: resident memory of a driftline worker with 100 models x 50 numeric features
and windows of 12 panes, once every model has all 12 panes filled, and its growth while
2M more events go through, million by million (it must stay flat: panes are summaries,
not events). Also the RSS of the worker's imports alone, and its startup time on an
empty store and on restart. Default settings (snapshot cadence 1 s).

    python bench/memory.py [--models 100] [--features 50] [--events 2000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).parent))
from throughput import worker_settings

from driftline.embedded.broker import EmbeddedBroker
from driftline.embedded.process import WorkerProcess
from driftline.stream.topics import Topics, ensure_topics

START = 1_700_000_000.0
PANE_S = 10
PANES = 12
ROWS = 100  # rows per EventBatch message


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def counted(api: str) -> float:
    url = f"{api}/metrics?name[]=driftline_events_processed_total"
    with urllib.request.urlopen(url, timeout=10) as response:
        return sum(
            float(line.split()[-1])
            for line in response.read().decode().splitlines()
            if line.startswith("driftline_events_processed_total{")
        )


#: What the worker imports, heaviest first; the last one brings the rest of driftline.
LIBRARIES = [
    "numpy",
    "sqlalchemy",
    "alembic",
    "aiohttp",
    "aiokafka",
    "confluent_kafka",
    "pydantic",
    "faust.app.base",
    "scipy.special",
    "pyarrow.parquet",
    "driftline.stream.worker",
]

_IMPORTS = """
import importlib, json, sys
from itertools import pairwise
from pathlib import Path

def rss():
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(l.split()[1]) / 1024 for l in status if l.startswith("VmRSS:"))

sizes = [("python", rss())]
for name in sys.argv[1:]:
    importlib.import_module(name)
    sizes.append((name, rss()))
print(json.dumps(sizes))
"""


def import_rss() -> list[tuple[str, float]]:
    """RSS of a fresh interpreter after each of the worker's libraries is imported."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS, *LIBRARIES], capture_output=True, check=True, text=True
    )
    return [(name, float(mb)) for name, mb in json.loads(done.stdout)]


def run(models: int, features: int, events: int) -> dict[str, Any]:
    names = [f"f{j}" for j in range(features)]
    rng = np.random.default_rng(0)
    with EmbeddedBroker() as bootstrap, tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        pq.write_table(
            pa.table({n: rng.normal(size=2000) for n in names}), workdir / "reference.parquet"
        )
        config = {
            "models": [
                {
                    "model_id": f"model-{m}",
                    "reference": {"path": "reference.parquet"},
                    "window": {"duration": PANE_S * PANES, "panes": PANES, "min_events": 10},
                }
                for m in range(models)
            ]
        }
        (workdir / "monitors.yaml").write_text(yaml.safe_dump(config))
        topics = Topics("mem")
        ensure_topics(bootstrap, topics.all(), 1)
        settings = worker_settings(
            bootstrap, "mem", workdir / "monitors.yaml", workdir, SESSION_TIMEOUT_S="6"
        )
        launched = time.perf_counter()
        worker = WorkerProcess(settings, workdir / "worker.log").start(ready_within_s=900)
        startup_s = time.perf_counter() - launched
        pid = worker._process.pid  # type: ignore[union-attr]
        producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 20, "log.connection.close": False}
        )
        sent = 0
        samples: list[tuple[int, float]] = []
        try:
            started_mb = rss_mb(pid)
            # Event time advances one pane per round; every model gets rows every round.
            per_round = models * ROWS
            rounds = max(PANES + 1, events // per_round)
            for r in range(rounds):
                values = rng.normal(size=(ROWS, features)).round(4).tolist()
                for m in range(models):
                    rows = [
                        {
                            "event_id": f"{r}-{m}-{i}",
                            "ts": START + r * PANE_S + i * PANE_S / ROWS,
                            "features": dict(zip(names, values[i], strict=True)),
                        }
                        for i in range(ROWS)
                    ]
                    body = orjson.dumps({"model_id": f"model-{m}", "events": rows})
                    producer.produce(topics.predictions, key=f"model-{m}".encode(), value=body)
                    producer.poll(0)
                    sent += ROWS
                producer.flush(60)
                if r == PANES or r % 10 == 0 or r == rounds - 1:
                    while counted(worker.api) < sent:
                        time.sleep(0.05)
                    samples.append((sent, rss_mb(pid)))
        finally:
            worker.stop()
        # A restart on the same store: the reference files are unchanged, so their stored
        # calibrations are reused.
        launched = time.perf_counter()
        WorkerProcess(settings, workdir / "restart.log").start(ready_within_s=900).stop()
        restart_s = time.perf_counter() - launched
    filled = (PANES + 1) * models * ROWS
    full = next(mb for n, mb in samples if n >= filled)
    after_full = [mb for n, mb in samples if n >= filled]
    # RSS at each further million events after the windows filled (the last sample at or
    # before it): the growth over each million.
    marks = [full]
    for million in range(1, (sent - filled) // 1_000_000 + 1):
        marks.append(next(mb for n, mb in reversed(samples) if n <= filled + million * 1_000_000))
    return {
        "models": models,
        "features": features,
        "panes": PANES,
        "events": sent,
        "startup_s": startup_s,
        "restart_s": restart_s,
        "rss_started_mb": started_mb,
        "rss_windows_full_mb": full,
        "rss_end_mb": samples[-1][1],
        "rss_max_after_full_mb": max(after_full),
        "growth_after_full_mb": samples[-1][1] - full,
        "growth_per_million_mb": [b - a for a, b in pairwise(marks)],
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.models, args.features, args.events)
    result["imports_rss_mb"] = import_rss()
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({"machine": machine, **result}, indent=2))
        return
    print(
        f"{result['models']} models x {result['features']} features, {result['panes']} panes: "
        f"RSS {result['rss_started_mb']:.0f} MB at start, {result['rss_windows_full_mb']:.0f} MB "
        f"with every window full, {result['rss_end_mb']:.0f} MB after {result['events']:,} "
        f"events (growth {result['growth_after_full_mb']:+.1f} MB, "
        f"max {result['rss_max_after_full_mb']:.0f} MB)"
    )
    growth = ", ".join(f"{mb:+.1f} MB" for mb in result["growth_per_million_mb"])
    print(f"growth over each million events after the windows filled: {growth}")
    print(
        f"startup until /readyz: {result['startup_s']:.1f} s on an empty store (building and "
        f"calibrating {result['models']} reference profiles), {result['restart_s']:.1f} s "
        "on restart (the stored calibrations reused)"
    )
    sizes = result["imports_rss_mb"]
    steps = ", ".join(f"{name} +{mb - before:.0f}" for (_, before), (name, mb) in pairwise(sizes))
    print(
        f"of which the worker's imports alone: {sizes[-1][1]:.0f} MB RSS in a fresh "
        f"interpreter (python {sizes[0][1]:.0f} MB, then {steps})"
    )
    print(f"machine: {machine}")


if __name__ == "__main__":
    main()
