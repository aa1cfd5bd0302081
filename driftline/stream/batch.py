"""Pure batch processing: Kafka messages in; dead letters, window reports and triggers out.

The worker and ``driftline replay`` both run this; only the I/O around it differs.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import compress
from operator import attrgetter

from driftline.monitoring import Monitor
from driftline.schemas.events import DecodedMessage, LabelRow, PredictionRow, decode_message
from driftline.schemas.reports import DriftReport, PerformanceReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.stream.deadletter import (
    DeadLetter,
    SourceMessage,
    label_letter,
    one_row,
    whole_message,
)
from driftline.stream.processing import LabelItem, MonitorState

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """Everything one batch produced, in the order it happened."""

    dead: list[DeadLetter] = field(default_factory=list)
    reports: list[DriftReport] = field(default_factory=list)
    triggers: list[RetrainingEvent] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)
    #: Events of each model dead-lettered as late (behind the allowed lateness).
    late: dict[str, int] = field(default_factory=dict)
    #: Events of each model dropped as duplicates (``window.deduplicate``).
    duplicates: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    #: The (topic, partition) each model's events in this batch came from (the last one),
    #: named by the predictions topic: a model's labels share its partition number.
    partitions: dict[str, tuple[str, int]] = field(default_factory=dict)
    performance: list[PerformanceReport] = field(default_factory=list)
    #: Labels of each model by outcome (joined, duplicate, expired, ...).
    labels: dict[str, dict[str, int]] = field(default_factory=dict)


class _Origins:
    """Where each row of a group came from (its message, and its index in the message's
    batch), kept per message: a lookup costs a bisection, a row nothing."""

    __slots__ = ("_indices", "_sources", "_starts", "size")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._sources: list[SourceMessage] = []
        self._indices: list[Sequence[int | None]] = []
        self.size = 0

    def extend(self, source: SourceMessage, indices: Sequence[int | None]) -> None:
        """The next ``len(indices)`` rows came from ``source``, at these indices."""
        if indices:
            self._starts.append(self.size)
            self._sources.append(source)
            self._indices.append(indices)
            self.size += len(indices)

    def __getitem__(self, position: int) -> tuple[SourceMessage, int | None]:
        if not 0 <= position < self.size:
            raise IndexError(position)
        at = bisect_right(self._starts, position) - 1
        return self._sources[at], self._indices[at][position - self._starts[at]]

    def __iter__(self) -> Iterator[tuple[SourceMessage, int | None]]:
        for source, indices in zip(self._sources, self._indices, strict=True):
            for index in indices:
                yield source, index


@dataclass
class _ModelRows:
    rows: list[PredictionRow] = field(default_factory=list)
    origins: _Origins = field(default_factory=_Origins)
    labels: list[LabelItem] = field(default_factory=list)
    order: list[bool] = field(default_factory=list)
    model_version: str | None = None
    #: Every row's features are floats or None (decoded so): no type to check.
    numeric: bool = True
    #: Every row is its model's ``TypedRow``.
    typed: bool = True

    def add_label(self, row: LabelRow, source: SourceMessage, index: int | None) -> None:
        """A label; its origin is plain data, kept with it while it waits (snapshots)."""
        self.labels.append((row, [source.topic, source.partition, source.offset, index]))
        self.order.append(False)


_TS = attrgetter("ts")


def _refuse_future(
    decoded: DecodedMessage,
    source: SourceMessage,
    limit: float,
    max_future: float,
    result: BatchResult,
) -> DecodedMessage:
    """``decoded`` without its rows timed after ``limit`` (its message's Kafka timestamp
    plus ``window.max_future``), which are dead-lettered: one such event would move the
    model's watermark past every real one, making them all late."""
    keep = [row.ts <= limit for row in decoded.rows]
    sent = datetime.fromtimestamp(source.timestamp or 0.0, UTC).isoformat()
    for row, index, kept in zip(decoded.rows, decoded.row_indices, keep, strict=True):
        if not kept:
            moment = datetime.fromtimestamp(row.ts, UTC).isoformat()
            message = (
                f"event time {moment} is more than window.max_future ({max_future:g} s) "
                f"ahead of its Kafka message's timestamp {sent}"
            )
            result.dead.append(
                one_row(
                    source,
                    "future",
                    message,
                    index,
                    decoded.model_id,
                    decoded.model_version,
                    row,
                )
            )
    verdicts = iter(keep)
    # Labels stay; a prediction stays if kept (the verdicts are the rows', in order).
    order = [is_row for is_row in decoded.order if not is_row or next(verdicts)]
    return replace(
        decoded,
        rows=list(compress(decoded.rows, keep)),
        row_indices=list(compress(decoded.row_indices, keep)),
        order=order,
    )


class StreamProcessor:
    """Each monitored model's state, and the processing of batches of messages into it."""

    def __init__(
        self, monitors: Mapping[str, Monitor], home_topics: Mapping[str, str] | None = None
    ) -> None:
        self.monitors = dict(monitors)
        self.states = {model_id: MonitorState(m) for model_id, m in monitors.items()}
        #: Topics whose partition N belongs with another's (labels -> predictions).
        self.home_topics = dict(home_topics or {})

    def process(self, messages: Sequence[SourceMessage], now: datetime) -> BatchResult:
        """Decode, validate and count ``messages``; close the windows their event time passed."""
        result = BatchResult()
        for model_id, group in self._group(messages, result).items():
            result.accepted[model_id] = self._process(model_id, group, now, result)
        return result

    def put(self, monitor: Monitor) -> None:
        """Run ``monitor`` (new, or a new version: its windows start afresh)."""
        self.monitors[monitor.model_id] = monitor
        self.states[monitor.model_id] = MonitorState(monitor)

    def remove(self, model_id: str) -> None:
        """Stop monitoring a model: its events are skipped from now on."""
        self.monitors.pop(model_id, None)
        self.states.pop(model_id, None)

    def reset(self, model_id: str) -> MonitorState:
        """Forget a model's state (its partition moved away); returns the fresh state."""
        state = self.states[model_id] = MonitorState(self.monitors[model_id])
        return state

    def flush(self, now: datetime) -> BatchResult:
        """Close every open window (end of a replayed file); the worker never does this."""
        result = BatchResult()
        for state in self.states.values():
            outcome = state.flush(now=now)
            result.reports.extend(outcome.reports)
            result.triggers.extend(outcome.triggers)
            result.performance.extend(outcome.performance)
        return result

    def _group(
        self, messages: Sequence[SourceMessage], result: BatchResult
    ) -> dict[str, _ModelRows]:
        groups: dict[str, _ModelRows] = {}
        for source in messages:
            state = self.states.get(source.key.decode(errors="replace")) if source.key else None
            decoded = decode_message(source.value, None if state is None else state.typed)
            for error in decoded.errors:
                if error.index is None:
                    result.dead.append(whole_message(source, error.reason, error.message))
                else:
                    result.dead.append(
                        one_row(
                            source,
                            error.reason,
                            error.message,
                            error.index,
                            decoded.model_id,
                            decoded.model_version,
                            error.raw,
                        )
                    )
            model_id = decoded.model_id
            if not decoded.order or model_id is None:
                continue
            if model_id not in self.states:
                result.skipped += len(decoded.order)
                continue
            max_future = self.monitors[model_id].spec.window.max_future
            if source.timestamp is not None and max_future is not None and decoded.rows:
                limit = source.timestamp + max_future
                if max(map(_TS, decoded.rows)) > limit:
                    decoded = _refuse_future(decoded, source, limit, max_future, result)
                    if not decoded.order:
                        continue
            home = self.home_topics.get(source.topic, source.topic)
            result.partitions[model_id] = (home, source.partition)
            group = groups.setdefault(model_id, _ModelRows())
            group.model_version = decoded.model_version or group.model_version
            group.numeric = group.numeric and decoded.numeric
            group.typed = group.typed and decoded.typed
            if decoded.plain:  # predictions only, nothing to join: in one step
                group.rows += decoded.rows
                group.origins.extend(source, decoded.row_indices)
                group.order += decoded.order
                continue
            rows = iter(zip(decoded.rows, decoded.row_indices, strict=True))
            labels = iter(zip(decoded.labels, decoded.label_indices, strict=True))
            for is_row in decoded.order:
                if not is_row:
                    label_row, label_index = next(labels)
                    group.add_label(label_row, source, label_index)
                    continue
                row, index = next(rows)
                group.rows.append(row)
                group.origins.extend(source, (index,))
                group.order.append(True)
                if row.label is not None:  # known with the prediction: joins at once
                    label = LabelRow(event_id=row.event_id, ts=row.ts, label=row.label)
                    group.add_label(label, source, index)
        return groups

    def _process(self, model_id: str, group: _ModelRows, now: datetime, result: BatchResult) -> int:
        try:
            outcome = self.states[model_id].process(
                group.rows,
                group.model_version,
                now=now,
                labels=group.labels,
                order=group.order,
                numeric=group.numeric,
                typed=group.typed,
            )
        except Exception as exc:  # a bug must not lose events: dead-letter them all (the
            # state is as before the call, so none of them was counted)
            log.exception("processing %d events of %s failed", len(group.order), model_id)
            for row, (source, index) in zip(group.rows, group.origins, strict=True):
                result.dead.append(
                    one_row(
                        source,
                        "processing_error",
                        repr(exc),
                        index,
                        model_id,
                        group.model_version,
                        row,
                    )
                )
            result.dead.extend(
                label_letter(model_id, row, origin, "processing_error", repr(exc))
                for row, origin in group.labels
            )
            return 0
        result.dead.extend(
            label_letter(model_id, r.row, r.origin, r.reason, r.message)
            for r in outcome.label_rejections
        )
        if outcome.labels:
            counts = result.labels.setdefault(model_id, {})
            for name, count in outcome.labels.items():
                counts[name] = counts.get(name, 0) + count
        result.performance.extend(outcome.performance)
        if outcome.duplicates:
            result.duplicates[model_id] = result.duplicates.get(model_id, 0) + outcome.duplicates
        for rejection in outcome.rejections:
            if rejection.reason == "late":
                result.late[model_id] = result.late.get(model_id, 0) + 1
            source, index = group.origins[rejection.position]
            result.dead.append(
                one_row(
                    source,
                    rejection.reason,
                    rejection.message,
                    index,
                    model_id,
                    group.model_version,
                    group.rows[rejection.position],
                )
            )
        result.reports.extend(outcome.reports)
        result.triggers.extend(outcome.triggers)
        return outcome.accepted
