"""Benchmark: what all-or-nothing processing costs.

``MonitorState.process`` checkpoints a model's state before each batch and puts it
back if the batch fails (so a failed batch's rows are dead-lettered without having been
counted): the windows are copied as their mapping of panes, the label join journals
its changes, the concept detector is copied. This runs the same batches through the
worker's ``StreamProcessor`` with the checkpoint and without it (``_process`` called
directly), for a model of 10 features and for a labelled classifier (joins, a
performance window, ADWIN).

    python bench/all_or_nothing.py [--events 60000] [--batch 500] [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from driftline.detectors.outcomes import OutcomeProfile, Scorer
from driftline.detectors.profile import ReferenceProfile
from driftline.monitoring import Monitor, calibrate
from driftline.schemas.monitors import MonitorSpec
from driftline.stream.batch import StreamProcessor
from driftline.stream.deadletter import SourceMessage
from driftline.stream.processing import MonitorState

NOW = datetime(2024, 1, 1, tzinfo=UTC)
START = 1_700_000_000.0


def monitor(labelled: bool) -> Monitor:
    rng = np.random.default_rng(0)
    features = [{"name": f"f{i}", "kind": "numeric"} for i in range(10)]
    spec = MonitorSpec.model_validate(
        {
            "model_id": "m",
            "reference": {"path": "unused.parquet"},
            "features": features,
            "window": {"duration": "5m", "panes": 5, "min_events": 50},
            **(
                {
                    "labels": {
                        "task": "classification",
                        "classes": ["no", "yes"],
                        "prediction": "probability",
                        "horizon": "5m",
                    }
                }
                if labelled
                else {}
            ),
        }
    )
    assert spec.features is not None
    x = rng.normal(size=(5000, 10))
    profile = ReferenceProfile.build({f"f{i}": x[:, i] for i in range(10)}, spec.features)
    if labelled:
        truth = np.where(x[:, 0] > 0, "yes", "no").tolist()
        predictions = (1 / (1 + np.exp(-3 * x[:, 0]))).round(4).tolist()
        scorer = Scorer("classification", ("no", "yes"), probability=True)
        profile = replace(profile, outcomes=OutcomeProfile.build(scorer, truth, predictions))
    return Monitor(spec, tuple(spec.features), calibrate(profile, spec.thresholds), 1)


def messages(n: int, labelled: bool) -> list[SourceMessage]:
    """Single events, 10 a second; with labels, each prediction's label 30 s later."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 10))
    bodies: list[tuple[float, bytes]] = []
    for i in range(n):
        ts = START + i / 10
        event: dict[str, Any] = {
            "model_id": "m",
            "event_id": f"e{i}",
            "ts": ts,
            "features": {f"f{j}": float(x[i, j]) for j in range(10)},
        }
        if labelled:
            event["prediction"] = round(float(1 / (1 + np.exp(-3 * x[i, 0]))), 4)
            label = {"model_id": "m", "event_id": f"e{i}", "ts": ts + 30, "label": "yes"}
            bodies.append((ts + 30, orjson.dumps(label)))
        bodies.append((ts, orjson.dumps(event)))
    bodies.sort(key=lambda item: item[0])
    return [SourceMessage(b"m", body, "t", 0, i) for i, (_, body) in enumerate(bodies)]


def run(sources: list[SourceMessage], model: Monitor, batch: int, all_or_nothing: bool) -> float:
    """Rows (messages) per second through the processor."""
    processor = StreamProcessor({"m": model})
    if not all_or_nothing:  # the same work, without the checkpoint and the journal
        state = processor.states["m"]

        def bare(rows: Any, model_version: Any = None, **kwargs: Any) -> Any:
            return MonitorState._process(
                state,
                rows,
                model_version,
                kwargs["now"],
                kwargs.get("labels", ()),
                kwargs.get("order"),
                kwargs.get("numeric", False),
                kwargs.get("typed", False),
            )

        state.process = bare  # type: ignore[method-assign]
    started = time.perf_counter()
    for i in range(0, len(sources), batch):
        processor.process(sources[i : i + batch], NOW)
    return len(sources) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    for name, labelled in (("10 features", False), ("labelled classifier", True)):
        model, sources = monitor(labelled), messages(args.events, labelled)
        # Runs of the two alternate, and each pair gives a ratio: the machine's speed
        # drifts between runs more than the difference measured.
        pairs = [
            (run(sources, model, args.batch, True), run(sources, model, args.batch, False))
            for _ in range(args.repeat)
        ]
        overhead = statistics.median(without / checked - 1 for checked, without in pairs)
        results[name] = {
            "all or nothing": round(max(p[0] for p in pairs)),
            "without checkpoint": round(max(p[1] for p in pairs)),
            "overhead": overhead,
        }
    info = {
        "events": args.events,
        "batch": args.batch,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(
        f"all-or-nothing processing: {args.events} events in batches of {args.batch}; best of "
        f"{args.repeat} runs each, and the median cost over the alternating pairs "
        f"(Python {info['python']}, {info['machine']})"
    )
    for name, figures in results.items():
        print(
            f"  {name:<20} {figures['all or nothing']:>8,} messages/s with the checkpoint, "
            f"{figures['without checkpoint']:>8,} without: cost {figures['overhead']:+.1%}"
        )


if __name__ == "__main__":
    main()
