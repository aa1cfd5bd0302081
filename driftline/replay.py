"""``driftline replay``: the worker's processing over a file of events, for backtesting.

No broker or database: events (predictions and labels) are read in file order and go
through the same ``StreamProcessor`` as the worker, in batches (the results do not depend on how
events are batched). Retraining events are stamped with their window's end, so a
replay prints the same thing every time.

The worker judges ``window.max_future`` against each message's Kafka timestamp; a
file has none, so each line gets one: its ``kafka_ts`` (the Kafka timestamp, epoch
milliseconds as Kafka keeps it, or an RFC 3339 string) when the line carries one; else
the time a producer that sends events as they happen would have sent it at, estimated
from the file: the second newest of the newest event times of its model's lines around
it (``SEND_TIME_LINES`` before, itself, as many after; fewer at the ends of the file).
As late as that model's clock goes there, but for one stray event: a far-future event
is refused as the worker refuses it, while the last lines of a file, the first after a
quiet night, those before a backfill of old events, and a model whose producer runs
ahead of another's are not. (Several far-future events of a model within that many of
its lines are taken for its clock: give such lines a ``kafka_ts``.)
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from driftline.exceptions import ReferenceDataError
from driftline.monitoring import Monitor
from driftline.schemas.events import parse_timestamp
from driftline.schemas.reports import DriftReport, PerformanceReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.stream.batch import BatchResult, StreamProcessor
from driftline.stream.deadletter import DeadLetter, SourceMessage

BATCH = 1000
#: What a replay yields: window reports (drift, performance), the triggers they fired,
#: and dead letters (the rows the worker would send to the dead-letter topic).
Output = DriftReport | PerformanceReport | RetrainingEvent | DeadLetter
#: Columns of a Parquet events file that are not features.
EVENT_COLUMNS = (
    "model_id",
    "model_version",
    "event_id",
    "ts",
    "prediction",
    "segment",
    "label",
)
#: The Kafka timestamp a line or Parquet row may carry (epoch ms, or RFC 3339).
KAFKA_TS = "kafka_ts"
#: Lines of its model on each side of a line without ``kafka_ts`` whose event times
#: estimate when it was sent, looked for within the next ``LOOKAHEAD_LINES`` lines.
SEND_TIME_LINES = 10
LOOKAHEAD_LINES = 1000


def read_events(path: Path) -> Iterator[SourceMessage]:
    """Messages from a JSON-lines file (one PredictionEvent, LabelEvent or EventBatch per
    line) or Parquet, each with the Kafka timestamp the worker would have seen (the
    module's rule).

    In Parquet, each row is one event: the columns ``model_id``, ``event_id``, ``ts``
    (and optionally ``model_version``, ``prediction``, ``segment``, ``label``,
    ``kafka_ts``), with the features either in a struct column ``features`` or as all
    the other columns.
    """
    name = path.name.lower()
    lines = _parquet_events(path) if name.endswith((".parquet", ".pq")) else _json_lines(path)
    return stamped(lines)


def _json_lines(path: Path) -> Iterator[Line]:
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    value = line.rstrip(b"\r\n")
                    message = SourceMessage(None, value, str(path), 0, number)
                    body = _json(value)
                    yield message, *_times(body), _model(body)
    except FileNotFoundError:
        raise ReferenceDataError(f"events file {path} not found") from None


def _json(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def _times(body: Any) -> tuple[float | None, float | None]:
    """A line's ``kafka_ts`` (epoch seconds) and the newest event time of its rows (None
    where a value is missing or unreadable: the decoder says why, not this)."""
    if not isinstance(body, dict):
        return None, None
    rows = body.get("events")
    stamps = [r.get("ts") for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    newest = None
    for value in [body.get("ts"), *stamps]:
        moment = _seconds(value)
        if moment is not None and (newest is None or moment > newest):
            newest = moment
    return _kafka_seconds(body.get(KAFKA_TS)), newest


def _model(body: Any) -> str | None:
    model = body.get("model_id") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def _kafka_seconds(value: Any) -> float | None:
    """``kafka_ts``: epoch milliseconds (Kafka's unit), an RFC 3339 string or a datetime."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000.0
    return _seconds(value) if isinstance(value, str) else None


#: A stamped line: its message, its ``kafka_ts``, its newest event time and its model.
Line = tuple[SourceMessage, float | None, float | None, str | None]


def stamped(lines: Iterable[Line]) -> Iterator[SourceMessage]:
    """Each message with its Kafka timestamp: its own ``kafka_ts``, or the second newest
    of the newest event times of its model's ``SEND_TIME_LINES`` lines on each side
    (within the next ``LOOKAHEAD_LINES`` lines of the file) and its own. By model: one
    model's producer may lag another's (a batch uploader behind a live server).

    >>> def line(n, newest, model="m"):
    ...     return SourceMessage(None, b"{}", "f", 0, n), None, newest, model
    >>> times = [100.0, 101.0, 10_000.0, 102.0, 103.0]  # a far-future line in the middle
    >>> [m.timestamp for m in stamped(line(n, t) for n, t in enumerate(times))]
    [103.0, 103.0, 103.0, 103.0, 103.0]
    >>> mixed = [line(0, 700.0, "live"), line(1, 100.0, "late"), line(2, 101.0, "late")]
    >>> [m.timestamp for m in stamped(mixed)]  # each by its own model's lines
    [700.0, 100.0, 100.0]
    """
    ahead: deque[Line] = deque()
    before: dict[str | None, deque[float]] = {}
    later: dict[str | None, deque[float | None]] = {}

    def emit() -> SourceMessage:
        message, kafka_ts, newest, model = ahead.popleft()
        coming = later[model]
        coming.popleft()  # its own
        past = before.setdefault(model, deque(maxlen=SEND_TIME_LINES))
        if kafka_ts is None:
            around = [*past, *([] if newest is None else [newest])]
            around += [t for t in islice(coming, SEND_TIME_LINES) if t is not None]
            kafka_ts = _second_newest(around)
        if newest is not None:
            past.append(newest)
        return SourceMessage(
            message.key, message.value, message.topic, message.partition, message.offset, kafka_ts
        )

    for item in lines:
        ahead.append(item)
        later.setdefault(item[3], deque()).append(item[2])
        if len(ahead) > LOOKAHEAD_LINES:
            yield emit()
    while ahead:
        yield emit()


def _second_newest(values: list[float]) -> float | None:
    """The clock the times around a line show, but for one stray far-future time."""
    if not values:
        return None
    newest = heapq.nlargest(2, values)
    return newest[-1]


def _parquet_events(path: Path) -> Iterator[Line]:
    try:
        table = pq.read_table(path)
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        raise ReferenceDataError(f"cannot read events file {path}: {exc}") from None
    features = [c for c in table.column_names if c not in (*EVENT_COLUMNS, KAFKA_TS)]
    for number, row in enumerate(table.to_pylist(), start=1):
        event = {key: row.get(key) for key in EVENT_COLUMNS if row.get(key) is not None}
        if isinstance(event.get("ts"), datetime):
            moment: datetime = event["ts"]
            event["ts"] = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        event["features"] = (
            row["features"] if "features" in row else {name: row[name] for name in features}
        )
        message = SourceMessage(None, orjson.dumps(event, default=str), str(path), 0, number)
        newest = _seconds(event.get("ts"))
        yield message, _kafka_seconds(row.get(KAFKA_TS)), newest, _model(event)


class Replay:
    """Replays messages through a ``StreamProcessor`` and collects what came out."""

    def __init__(self, monitors: dict[str, Monitor]) -> None:
        self.processor = StreamProcessor(monitors)
        self.dead_lettered: dict[str, int] = {}
        #: The first dead letter of each reason (what the summary shows).
        self.first_dead: dict[str, DeadLetter] = {}
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
            self.first_dead.setdefault(letter.reason, letter)
            yield letter
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
    """``{"type": "window", ...report}``, ``{"type": "performance", ...report}``,
    ``{"type": "trigger", ...trigger data}`` or ``{"type": "dead_letter", "reason",
    "message", "line", "batch_index", "event"}`` (the event as the dead-letter topic
    would get it)."""
    if isinstance(item, DeadLetter):
        return orjson.dumps(
            {
                "type": "dead_letter",
                "reason": item.reason,
                "message": item.message,
                "line": item.source.offset,
                "batch_index": item.batch_index,
                "event": _json(item.value) if item.value else None,
            }
        )
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
