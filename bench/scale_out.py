"""Benchmark: scale-out. Rows per second of 1 driftline worker, and of 2 workers in one
consumer group, on a predictions topic of 4 partitions (8 models, 2 per partition), on
the embedded broker and one SQLite store.

The workers start first, on empty topics, and once the group is stable (every partition
assigned, each worker holding some) the events are produced, already encoded, from a
thread of this script. The rate is measured from the first row counted to the last,
over the rows counted in that time; the producer's own time is printed beside it, to
show it did not hold the workers back.

On a 2-core machine the broker, the two workers and this script share the cores: the
figure shows what a second worker adds there, not what it adds on its own core.

    python bench/scale_out.py [--rows 400000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).parent))
from throughput import FEATURES, START, metric, wait_counted, worker_settings

from driftline.embedded.broker import EmbeddedBroker
from driftline.embedded.process import WorkerProcess
from driftline.stream.topics import Topics, ensure_topics

PARTITIONS = 4
MODELS = 8


def messages(rows: int, batch: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value): model m on partition m % 4, rows round-robin over models."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(rows, FEATURES)).round(5)
    names = [f"f{j}" for j in range(FEATURES)]
    out = []
    for n, start in enumerate(range(0, rows, batch)):
        m = n % MODELS
        events = [
            {
                "event_id": f"e{i}",
                "ts": START + i / 1000,
                "features": dict(zip(names, values[i].tolist(), strict=True)),
                "prediction": 0.5,
            }
            for i in range(start, min(rows, start + batch))
        ]
        model = f"model-{m}"
        body = (
            {"model_id": model, "events": events} if batch > 1 else {"model_id": model, **events[0]}
        )
        out.append((m % PARTITIONS, model.encode(), orjson.dumps(body)))
    return out


def produce(bootstrap: str, topic: str, triples: list[tuple[int, bytes, bytes]]) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "log.connection.close": False}
    )
    for partition, key, value in triples:
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0


def run(bootstrap: str, workers: int, rows: int, batch: int, workdir: Path) -> dict[str, Any]:
    prefix = f"scale{os.getpid()}w{workers}b{batch}"
    topics = Topics(prefix)
    ensure_topics(bootstrap, topics.all(), PARTITIONS)
    reference = workdir / "reference.parquet"
    rng = np.random.default_rng(1)
    pq.write_table(pa.table({f"f{j}": rng.normal(size=5000) for j in range(FEATURES)}), reference)
    monitors = workdir / f"{prefix}.yaml"
    monitors.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "model_id": f"model-{m}",
                        "reference": {"path": str(reference)},
                        "window": {"duration": "1m", "panes": 6},
                    }
                    for m in range(MODELS)
                ]
            }
        )
    )
    triples = messages(rows, batch)
    processes = [
        WorkerProcess(
            worker_settings(
                bootstrap,
                prefix,
                monitors,
                workdir,
                DATA_DIR=str(workdir / f"{prefix}-{w}"),
                SESSION_TIMEOUT_S="6",
            ),
            workdir / f"{prefix}-{w}.log",
        )
        for w in range(workers)
    ]
    # Migrations are serialised by a lock: start the first, then the others together.
    processes[0].start(ready_within_s=300)
    starting = [
        threading.Thread(target=p.start, kwargs={"ready_within_s": 300}) for p in processes[1:]
    ]
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join()
    try:
        deadline = time.monotonic() + 300
        while True:
            held = [metric(p.api, "driftline_assigned_partitions ") for p in processes]
            # predictions and labels: 2 x 4 partitions in all, some for every worker
            if sum(held) == 2 * PARTITIONS and all(held):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the group did not settle: {held}")
            time.sleep(0.01)
        produced: list[float] = []

        def send() -> None:
            begun = time.perf_counter()
            produce(bootstrap, topics.predictions, triples)
            produced.append(time.perf_counter() - begun)

        producer = threading.Thread(target=send)
        producer.start()
        while not (counted_before := counted(processes)):
            time.sleep(0.005)
        started = time.perf_counter()
        wait_counted([p.api for p in processes], rows, lambda: processes[0].log_tail())
        elapsed = time.perf_counter() - started
        producer.join()
    finally:
        for p in processes:
            p.stop()
    return {
        "workers": workers,
        "rows_per_message": batch,
        "rows": rows,
        "rows_measured": rows - counted_before,
        "rows_per_s": (rows - counted_before) / elapsed,
        "producer_s": produced[0],
        "workers_s": elapsed,
    }


def counted(processes: list[WorkerProcess]) -> float:
    return sum(metric(p.api, "driftline_events_processed_total{") for p in processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000, help="rows of the batch case")
    parser.add_argument("--single-rows", type=int, default=150_000, help="single-event case")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    results = []
    with EmbeddedBroker() as bootstrap, tempfile.TemporaryDirectory() as directory:
        for batch, rows in ((1, args.single_rows), (100, args.rows)):
            for workers in (1, 2):
                results.append(run(bootstrap, workers, rows, batch, Path(directory)))
                if not args.json:
                    r = results[-1]
                    print(
                        f"{r['workers']} worker(s), {PARTITIONS} partitions, {MODELS} models, "
                        f"{r['rows_per_message']:>3} row(s)/message: {r['rows_per_s']:>9,.0f} "
                        f"rows/s (over {r['rows_measured']:,.0f} of {r['rows']:,} rows in "
                        f"{r['workers_s']:.2f} s; producing them all took {r['producer_s']:.2f} s)",
                        flush=True,
                    )
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=2))
    else:
        print(f"machine: {machine}")


if __name__ == "__main__":
    main()
