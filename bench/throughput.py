"""Benchmark: end-to-end throughput of a driftline worker on the embedded broker, in one
run against two references on the same broker and the same events:

- raw: aiokafka ``getmany`` plus ``orjson.loads`` of every message (the limit: no
  validation, no state, nothing stored);
- plain Faust: an agent decoding each event with ``json.loads`` (bench/plain_faust_agent.py);
- driftline: ``driftline worker`` (SQLite store, state and offsets stored per batch),
  from its partitions being assigned to its last counted event, read from its /metrics;
- and driftline's processing alone (``StreamProcessor`` in this process, no Kafka, no
  store), to show how much of the time is the framework and the store.

Events have 20 numeric features. Cases: 1 model and 100 models; single-event messages
and EventBatch messages of 100 rows.

    python bench/throughput.py [--rows 100000] [--batch-rows 500000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer

from driftline.detectors.profile import ReferenceProfile
from driftline.embedded.broker import EmbeddedBroker
from driftline.embedded.process import WorkerProcess
from driftline.monitoring import Monitor, calibrate
from driftline.schemas.monitors import MonitorSpec
from driftline.stream.batch import StreamProcessor
from driftline.stream.deadletter import SourceMessage
from driftline.stream.topics import Topics, ensure_topics

FEATURES = 20
START = 1_700_000_000.0
HERE = Path(__file__).parent
#: Pause between reads of the workers' counts. They read only that metric
#: (/metrics?name[]=...): the whole /metrics of 100 models x 20 features takes tens of
#: milliseconds to render, and reading it 50 times a second took 40% of such a worker.
POLL_S = 0.05


def messages(rows: int, models: int, batch: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: ``rows`` events at 1,000/s of event time, round-robin over models."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(rows, FEATURES)).round(5)
    names = [f"f{j}" for j in range(FEATURES)]
    out = []
    for start in range(0, rows, batch):
        model = f"model-{(start // batch) % models}"
        events = [
            {
                "event_id": f"e{i}",
                "ts": START + i / 1000,
                "features": dict(zip(names, values[i].tolist(), strict=True)),
                "prediction": 0.5,
            }
            for i in range(start, min(rows, start + batch))
        ]
        body = (
            {"model_id": model, "events": events} if batch > 1 else {"model_id": model, **events[0]}
        )
        out.append((model.encode(), orjson.dumps(body)))
    return out


def produce(bootstrap: str, topic: str, pairs: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "log.connection.close": False}
    )
    for key, value in pairs:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0


def raw_limit(bootstrap: str, topic: str, count: int) -> float:
    """Messages consumed and decoded per second: aiokafka getmany + orjson."""

    async def run() -> float:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=8 * 2**20,
            fetch_max_bytes=64 * 2**20,
        )
        await consumer.start()
        try:
            seen, started = 0, 0.0
            while seen < count:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for records in batches.values():
                    if not started:
                        started = time.perf_counter()
                    for record in records:
                        orjson.loads(record.value)
                    seen += len(records)
            return time.perf_counter() - started
        finally:
            await consumer.stop()

    return asyncio.run(run())


def plain_faust(bootstrap: str, topic: str, rows: int, workdir: Path) -> float:
    out = workdir / "plain.json"
    done = subprocess.run(
        [sys.executable, str(HERE / "plain_faust_agent.py"), bootstrap, topic, str(rows), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=workdir,
    )
    if not out.exists():
        raise RuntimeError(
            f"the plain Faust agent failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return float(json.loads(out.read_text())["seconds"])


def processor_only(pairs: list[tuple[bytes, bytes]], models: int, rows: int) -> float:
    """Seconds for driftline's processing alone (``StreamProcessor``, in this process: no
    Kafka, no store), in batches of 1,000 messages as the worker takes them."""
    rng = np.random.default_rng(1)
    specs = [
        MonitorSpec.model_validate(
            {
                "model_id": f"model-{m}",
                "reference": {"path": "unused.parquet"},
                "features": [{"name": f"f{j}", "kind": "numeric"} for j in range(FEATURES)],
                "window": {"duration": "1m", "panes": 6},
            }
        )
        for m in range(models)
    ]
    features = specs[0].features or []
    reference = {f"f{j}": rng.normal(size=5000) for j in range(FEATURES)}
    profile = calibrate(ReferenceProfile.build(reference, features), specs[0].thresholds)
    processor = StreamProcessor(
        {s.model_id: Monitor(s, tuple(features), profile, 1) for s in specs}
    )
    sources = [SourceMessage(k, v, "t", 0, i) for i, (k, v) in enumerate(pairs)]
    started = time.perf_counter()
    for i in range(0, len(sources), 1000):
        processor.process(sources[i : i + 1000], datetime.now(UTC))
    return time.perf_counter() - started


def wait_counted(apis: list[str], rows: int, tail: Any, within_s: float = 900) -> None:
    """Until the workers at ``apis`` have counted ``rows`` events (read every POLL_S: the
    timing is late by at most that, a conservative rate)."""
    deadline = time.monotonic() + within_s
    while (counted := sum(metric(api, "driftline_events_processed_total{") for api in apis)) < rows:
        if time.monotonic() > deadline:
            raise RuntimeError(f"counted {counted} of {rows}; {tail()}")
        time.sleep(POLL_S)


def metric(api: str, name: str) -> float:
    """The sum of a metric's samples (``name``: its name and what follows, "{" or " "),
    asking /metrics for it alone: a cheap read even of a worker with many models."""
    family = name.rstrip("{ ")
    url = f"{api}/metrics?{urllib.parse.urlencode({'name[]': family})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return sum(
            float(line.split()[-1])
            for line in response.read().decode().splitlines()
            if line.startswith(name)
        )


def worker_settings(
    bootstrap: str, prefix: str, monitors: Path, workdir: Path, **extra: str
) -> dict[str, str]:
    """A benchmark worker's settings: its own topics and group, a SQLite store in
    ``workdir`` (shared by workers of one prefix), logging warnings only."""
    return {
        "KAFKA_BOOTSTRAP": bootstrap,
        "TOPIC_PREFIX": prefix,
        "CONSUMER_GROUP": prefix,
        "MONITORS_PATH": str(monitors),
        "DATABASE_URL": f"sqlite:///{workdir / f'{prefix}.db'}",
        "DATA_DIR": str(workdir / f"{prefix}-data"),
        "LOG_LEVEL": "warn",
        **extra,
    }


def driftline_worker(
    bootstrap: str,
    prefix: str,
    models: int,
    pairs: list[tuple[bytes, bytes]],
    rows: int,
    workdir: Path,
) -> float:
    """Seconds from the worker's partitions being assigned to it having counted every row
    of the topic, filled beforehand like the baselines' (its startup is not measured)."""
    reference = workdir / "reference.parquet"
    rng = np.random.default_rng(1)
    pq.write_table(pa.table({f"f{j}": rng.normal(size=5000) for j in range(FEATURES)}), reference)
    config = {
        "models": [
            {
                "model_id": f"model-{m}",
                "reference": {"path": str(reference)},
                "window": {"duration": "1m", "panes": 6},
            }
            for m in range(models)
        ]
    }
    monitors = workdir / "monitors.yaml"
    monitors.write_text(yaml.safe_dump(config))
    settings = worker_settings(bootstrap, prefix, monitors, workdir)
    produce(bootstrap, Topics(prefix).predictions, pairs)
    worker = WorkerProcess(settings, workdir / "worker.log").start(ready_within_s=900)
    try:
        deadline = time.monotonic() + 120
        while metric(worker.api, "driftline_assigned_partitions ") < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no partitions assigned; {worker.log_tail()}")
            time.sleep(0.01)
        started = time.perf_counter()
        wait_counted([worker.api], rows, lambda: worker.log_tail())
        return time.perf_counter() - started
    finally:
        worker.stop()


def case(bootstrap: str, rows: int, models: int, batch: int) -> dict[str, Any]:
    pairs = messages(rows, models, batch)
    baseline = Topics(f"bench{os.getpid()}m{models}b{batch}")
    ensure_topics(bootstrap, baseline.all(), 1)
    produce(bootstrap, baseline.predictions, pairs)
    raw_s = raw_limit(bootstrap, baseline.predictions, len(pairs))
    prefix = f"{baseline.prefix}w"
    ensure_topics(bootstrap, Topics(prefix).all(), 1)
    alone_s = processor_only(pairs, models, rows)
    with tempfile.TemporaryDirectory() as directory:
        plain_s = plain_faust(bootstrap, baseline.predictions, rows, Path(directory))
        ours_s = driftline_worker(bootstrap, prefix, models, pairs, rows, Path(directory))
    result = {
        "models": models,
        "rows_per_message": batch,
        "rows": rows,
        "message_bytes": round(sum(len(v) for _, v in pairs) / len(pairs)),
        "raw_rows_per_s": rows / raw_s,
        "plain_faust_rows_per_s": rows / plain_s,
        "driftline_rows_per_s": rows / ours_s,
        "processing_only_rows_per_s": rows / alone_s,
    }
    result["vs_plain_faust"] = result["driftline_rows_per_s"] / result["plain_faust_rows_per_s"]
    result["vs_raw"] = result["driftline_rows_per_s"] / result["raw_rows_per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="single-event cases")
    parser.add_argument(
        "--batch-rows", type=int, default=500_000, help="EventBatch cases (100 rows/message)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    results: list[dict[str, Any]] = []
    with EmbeddedBroker() as bootstrap:
        for models in (1, 100):
            for batch in (1, 100):
                rows = args.rows if batch == 1 else args.batch_rows
                r = case(bootstrap, rows, models, batch)
                # The EventBatch target compares with the plain agent on single
                # events (decoding each event one by one), measured just before.
                per_event = results[-1]["plain_faust_rows_per_s"] if batch > 1 else None
                if per_event:
                    r["vs_plain_faust_per_event"] = r["driftline_rows_per_s"] / per_event
                results.append(r)
                if not args.json:
                    versus = (
                        f"; x{r['vs_plain_faust_per_event']:.1f} its single events"
                        if per_event
                        else ""
                    )
                    print(
                        f"{r['models']:>3} model(s), {r['rows_per_message']:>3} row(s)/message: "
                        f"driftline {r['driftline_rows_per_s']:>9,.0f} rows/s | "
                        f"plain Faust {r['plain_faust_rows_per_s']:>8,.0f} "
                        f"(x{r['vs_plain_faust']:.1f}{versus}) | raw consume+decode "
                        f"{r['raw_rows_per_s']:>9,.0f} ({r['vs_raw']:.0%}) | driftline's "
                        f"processing alone {r['processing_only_rows_per_s']:>8,.0f}",
                        flush=True,
                    )
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=2))
    else:
        print(f"machine: {machine}")


if __name__ == "__main__":
    main()
