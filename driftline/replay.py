"""``driftline replay``: the worker's processing over a file of events, for backtesting.

No broker or database: events (predictions and labels) are read in file order and go
through the same ``StreamProcessor`` as the worker, in batches (the results do not depend on how
events are batched). Retraining events are stamped with their window's end, so a
replay prints the same thing every time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from driftline.exceptions import ReferenceDataError
from driftline.monitoring import Monitor
from driftline.schemas.reports import DriftReport, PerformanceReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.stream.batch import BatchResult, StreamProcessor
from driftline.stream.deadletter import SourceMessage

BATCH = 1000
#: What a replay yields: window reports (drift, performance) and the triggers they fired.
Output = DriftReport | PerformanceReport | RetrainingEvent
#: Columns of a Parquet events file that are not features.
EVENT_COLUMNS = ("model_id", "model_version", "event_id", "ts", "prediction", "segment", "label")


def read_events(path: Path) -> Iterator[SourceMessage]:
    """Messages from a JSON-lines file (one PredictionEvent, LabelEvent or EventBatch per
    line) or Parquet.

    In Parquet, each row is one event: the columns ``model_id``, ``event_id``, ``ts``
    (and optionally ``model_version``, ``prediction``, ``segment``, ``label``), with the
    features either in a struct column ``features`` or as all the other columns.
    """
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        yield from _parquet_events(path)
        return
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield SourceMessage(None, line.rstrip(b"\r\n"), str(path), 0, number)
    except FileNotFoundError:
        raise ReferenceDataError(f"events file {path} not found") from None


def _parquet_events(path: Path) -> Iterator[SourceMessage]:
    try:
        table = pq.read_table(path)
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        raise ReferenceDataError(f"cannot read events file {path}: {exc}") from None
    features = [c for c in table.column_names if c not in EVENT_COLUMNS]
    for number, row in enumerate(table.to_pylist(), start=1):
        event = {key: row.get(key) for key in EVENT_COLUMNS if row.get(key) is not None}
        if isinstance(event.get("ts"), datetime):
            moment: datetime = event["ts"]
            event["ts"] = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        event["features"] = (
            row["features"] if "features" in row else {name: row[name] for name in features}
        )
        yield SourceMessage(None, orjson.dumps(event, default=str), str(path), 0, number)


class Replay:
    """Replays messages through a ``StreamProcessor`` and collects what came out."""

    def __init__(self, monitors: dict[str, Monitor]) -> None:
        self.processor = StreamProcessor(monitors)
        self.dead_lettered: dict[str, int] = {}
        self.skipped = 0

    def run(self, messages: Iterator[SourceMessage], flush: bool = False) -> Iterator[Output]:
        batch: list[SourceMessage] = []
        for message in messages:
            batch.append(message)
            if len(batch) >= BATCH:
                yield from self._outputs(self.processor.process(batch, _EPOCH))
                batch = []
        if batch:
            yield from self._outputs(self.processor.process(batch, _EPOCH))
        if flush:
            yield from self._outputs(self.processor.flush(_EPOCH))

    def _outputs(self, result: BatchResult) -> Iterator[Output]:
        for letter in result.dead:
            self.dead_lettered[letter.reason] = self.dead_lettered.get(letter.reason, 0) + 1
        self.skipped += result.skipped
        triggers: dict[tuple[str, datetime | None, str], RetrainingEvent] = {
            (t.data.model_id, t.data.window_end, t.data.source): t for t in result.triggers
        }
        reports: list[tuple[DriftReport | PerformanceReport, str]] = [
            (r, "drift") for r in result.reports
        ]
        reports += [(r, "performance") for r in result.performance]
        for report, source in reports:
            yield report
            trigger = triggers.get((report.model_id, report.window_end, source))
            if trigger is not None:
                yield trigger.model_copy(update={"timestamp": trigger.data.window_end})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_json_line(item: Output) -> bytes:
    """``{"type": "window", ...report}``, ``{"type": "performance", ...report}`` or
    ``{"type": "trigger", ...trigger data}``."""
    if isinstance(item, DriftReport):
        body: dict[str, Any] = {"type": "window", **item.model_dump(mode="json")}
    elif isinstance(item, PerformanceReport):
        body = {"type": "performance", **item.model_dump(mode="json")}
    else:
        dumped = item.model_dump(mode="json")
        body = {
            "type": "trigger",
            "event_type": item.type,
            "timestamp": dumped["timestamp"],
            **dumped["data"],
        }
    return orjson.dumps(body)
