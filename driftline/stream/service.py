"""The worker's core: batches of Kafka messages in, windows, reports, dead letters and triggers out.

Independent of Faust: the agent hands it messages and a dead-letter sender.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from driftline.monitoring import Monitor
from driftline.schemas.events import EventRow, decode_message
from driftline.schemas.reports import DriftReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.store import Store
from driftline.stream.deadletter import DeadLetter, SourceMessage, one_row, whole_message
from driftline.stream.metrics import Metrics
from driftline.stream.processing import MonitorState

log = logging.getLogger(__name__)

DeadLetterSender = Callable[[Sequence[DeadLetter]], Awaitable[None]]
#: Retry of a failed store write: first wait, and the cap of the doubling wait.
STORE_RETRY_S = (0.5, 30.0)


@dataclass
class _ModelRows:
    rows: list[EventRow] = field(default_factory=list)
    origins: list[tuple[SourceMessage, int | None]] = field(default_factory=list)
    model_version: str | None = None


class DriftService:
    """Holds each monitored model's state and processes batches of messages into it."""

    def __init__(
        self,
        monitors: Mapping[str, Monitor],
        store: Store,
        metrics: Metrics,
        dead_letter: DeadLetterSender,
    ) -> None:
        self.monitors = dict(monitors)
        self.states = {model_id: MonitorState(m) for model_id, m in monitors.items()}
        self.store = store
        self.metrics = metrics
        self._dead_letter = dead_letter
        self.store_healthy = True

    def last_reports(self) -> dict[str, DriftReport | None]:
        return {model_id: state.last_report for model_id, state in self.states.items()}

    def watermarks(self) -> dict[str, float]:
        return {
            model_id: s.ring.watermark
            for model_id, s in self.states.items()
            if s.ring.watermark != float("-inf")
        }

    async def handle(self, messages: Sequence[SourceMessage]) -> None:
        """Process one batch; returns only once its results are durable (then it may be acked)."""
        started = time.perf_counter()
        dead: list[DeadLetter] = []
        groups = self._group(messages, dead)
        now = datetime.now(UTC)
        reports: list[DriftReport] = []
        triggers: list[RetrainingEvent] = []
        for model_id, group in groups.items():
            accepted = self._process(model_id, group, now, dead, reports, triggers)
            self.metrics.events_processed.labels(model_id).inc(accepted)
        if dead:
            await self._dead_letter(dead)
            for letter in dead:
                self.metrics.events_dead_lettered.labels(letter.reason).inc()
        if reports or triggers:
            await self._write(reports, triggers, now)
        for report in reports:
            self.metrics.windows_closed.labels(report.model_id, str(report.drifted).lower()).inc()
        for trigger in triggers:
            self.metrics.triggers.labels(trigger.data.model_id).inc()
            log.warning(
                "drift episode opened for %s: trigger %s (%s)",
                trigger.data.model_id,
                trigger.data.trigger_id,
                ", ".join(f.name for f in trigger.data.drifted_features),
            )
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _group(
        self, messages: Sequence[SourceMessage], dead: list[DeadLetter]
    ) -> dict[str, _ModelRows]:
        groups: dict[str, _ModelRows] = {}
        for source in messages:
            decoded = decode_message(source.value)
            for error in decoded.errors:
                if error.index is None:
                    dead.append(whole_message(source, error.reason, error.message))
                else:
                    dead.append(
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
            if not decoded.rows or decoded.model_id is None:
                continue
            if decoded.model_id not in self.states:
                self.metrics.events_skipped.inc(len(decoded.rows))
                continue
            group = groups.setdefault(decoded.model_id, _ModelRows())
            group.rows.extend(decoded.rows)
            group.origins.extend((source, index) for index in decoded.row_indices)
            group.model_version = decoded.model_version or group.model_version
        return groups

    def _process(
        self,
        model_id: str,
        group: _ModelRows,
        now: datetime,
        dead: list[DeadLetter],
        reports: list[DriftReport],
        triggers: list[RetrainingEvent],
    ) -> int:
        try:
            result = self.states[model_id].process(group.rows, group.model_version, now=now)
        except Exception as exc:  # a bug must not lose events: dead-letter them all
            log.exception("processing %d events of %s failed", len(group.rows), model_id)
            for row, (source, index) in zip(group.rows, group.origins, strict=True):
                dead.append(
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
            return 0
        for rejection in result.rejections:
            source, index = group.origins[rejection.position]
            dead.append(
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
        reports.extend(result.reports)
        triggers.extend(result.triggers)
        return result.accepted

    async def _write(
        self, reports: list[DriftReport], triggers: list[RetrainingEvent], now: datetime
    ) -> None:
        """Write until it succeeds: the batch must not be acked before its results are stored."""
        targets = {model_id: m.spec.targets for model_id, m in self.monitors.items()}
        delay, cap = STORE_RETRY_S
        while True:
            try:
                await asyncio.to_thread(self.store.record_results, reports, triggers, targets, now)
                self.store_healthy = True
                return
            except SQLAlchemyError as exc:
                self.store_healthy = False
                self.metrics.store_errors.inc()
                log.error("store write failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
