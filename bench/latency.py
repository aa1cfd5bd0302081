"""Benchmark: detection latency, from the event that closes a drifted window reaching
the broker to the signed webhook of its retraining request being received (and its
signature verified), through a real worker, broker, SQLite store and HTTP receiver.

Windows of one second of event time alternate between clean and drifted data, and
the policy opens (and fires) a new episode on every drifted window. Each window's
data goes in one EventBatch; sending the next one moves the watermark past it.

    python bench/latency.py [--windows 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from aiohttp import web
from confluent_kafka import Producer
from standardwebhooks import Webhook

sys.path.insert(0, str(Path(__file__).parent))
from throughput import worker_settings

from driftline.embedded.broker import EmbeddedBroker
from driftline.embedded.process import WorkerProcess
from driftline.stream.topics import Topics, ensure_topics

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
START = 1_700_000_000.0


async def run(windows: int, pause_s: float) -> dict[str, Any]:
    received: dict[str, float] = {}

    async def hook(request: web.Request) -> web.Response:
        body = await request.text()
        payload = Webhook(SECRET).verify(body, dict(request.headers))
        received[payload["data"]["window_end"]] = time.perf_counter()
        arrived.set()
        return web.Response(status=204)

    arrived = asyncio.Event()

    app = web.Application()
    app.router.add_post("/", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sent: dict[str, float] = {}
    try:
        with EmbeddedBroker() as bootstrap, tempfile.TemporaryDirectory() as directory:
            workdir = Path(directory)
            worker = start_worker(bootstrap, workdir, f"http://127.0.0.1:{port}/")
            try:
                producer = Producer(
                    {"bootstrap.servers": bootstrap, "linger.ms": 0, "log.connection.close": False}
                )
                rng = np.random.default_rng(0)
                for k in range(windows + 1):
                    body = window_body(rng, k)
                    moment = await asyncio.to_thread(send, producer, body)
                    if k % 2 == 0 and k:  # this batch closed the drifted window k - 1
                        end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START + k))
                        sent[end] = moment
                    await asyncio.sleep(pause_s)
                deadline = time.monotonic() + 30
                while len(received) < len(sent) and time.monotonic() < deadline:
                    arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
            finally:
                worker.stop()
    finally:
        await runner.cleanup()
    latencies = sorted(received[end] - moment for end, moment in sent.items() if end in received)
    # A clean window flagged by chance (the calibrated 1% false-alarm rate) keeps the
    # episode open, so the next drifted window sends nothing: a few are expected.
    if len(latencies) < 0.9 * len(sent):
        raise RuntimeError(f"only {len(latencies)} of {len(sent)} drifted windows fired")

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "drifted_windows": len(sent),
        "triggers": len(latencies),
        "p50_s": statistics.median(latencies),
        "p95_s": percentile(0.95),
        "p99_s": percentile(0.99),
        "max_s": latencies[-1],
    }


def window_body(rng: np.random.Generator, k: int) -> bytes:
    """200 events in second ``k`` of event time: drifted (shifted 3 sd) when k is odd."""
    shift = 3.0 if k % 2 else 0.0
    x = rng.normal(shift, 1.0, 200)
    rows = [
        {"event_id": f"{k}-{i}", "ts": START + k + i / 200, "features": {"x": float(x[i])}}
        for i in range(200)
    ]
    return orjson.dumps({"model_id": "m", "events": rows})


def send(producer: Producer, body: bytes) -> float:
    producer.produce(Topics("lat").predictions, key=b"m", value=body)
    producer.flush(10)
    return time.perf_counter()


def start_worker(bootstrap: str, workdir: Path, url: str) -> WorkerProcess:
    rng = np.random.default_rng(1)
    pq.write_table(pa.table({"x": rng.normal(size=5000)}), workdir / "reference.parquet")
    monitor = {
        "model_id": "m",
        "reference": {"path": "reference.parquet"},
        "window": {"duration": "1s", "panes": 1, "min_events": 50},
        "policy": {"consecutive_windows": 1, "clean_windows_to_close": 1},
        "targets": [{"url": url, "secret": SECRET}],
    }
    (workdir / "monitors.yaml").write_text(yaml.safe_dump({"models": [monitor]}))
    ensure_topics(bootstrap, Topics("lat").all(), 1)
    settings = worker_settings(
        bootstrap,
        "lat",
        workdir / "monitors.yaml",
        workdir,
        SESSION_TIMEOUT_S="6",
        BATCH_TIMEOUT_S="0.01",
    )
    worker = WorkerProcess(settings, workdir / "worker.log").start()
    deadline = time.monotonic() + 60
    while not assigned(worker):
        if time.monotonic() > deadline:
            raise RuntimeError(worker.log_tail())
        time.sleep(0.1)
    return worker


def assigned(worker: WorkerProcess) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{worker.api}/metrics", timeout=5) as response:
        return any(
            line.startswith("driftline_assigned_partitions ") and float(line.split()[-1]) > 0
            for line in response.read().decode().splitlines()
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.25, help="seconds between windows")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.windows, args.pause))
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({"machine": machine, **result}, indent=2))
        return
    print(
        f"detection latency over {result['triggers']} drifted windows: "
        f"p50 {result['p50_s'] * 1000:.0f} ms, p95 {result['p95_s'] * 1000:.0f} ms, "
        f"p99 {result['p99_s'] * 1000:.0f} ms, max {result['max_s'] * 1000:.0f} ms"
    )
    print(f"machine: {machine}")


if __name__ == "__main__":
    main()
