"""The worker's core: batches of Kafka messages in, windows, reports, dead letters and triggers out.

Independent of Faust: the agent hands it messages and a dead-letter sender.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from driftline.monitoring import Monitor
from driftline.schemas.reports import DriftReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.store import Store
from driftline.stream.batch import StreamProcessor
from driftline.stream.deadletter import DeadLetter, SourceMessage
from driftline.stream.metrics import Metrics

log = logging.getLogger(__name__)

DeadLetterSender = Callable[[Sequence[DeadLetter]], Awaitable[None]]
#: Retry of a failed store write: first wait, and the cap of the doubling wait.
STORE_RETRY_S = (0.5, 30.0)


class DriftService:
    """The stream processor, with its I/O: dead letters, the store, metrics."""

    def __init__(
        self,
        monitors: Mapping[str, Monitor],
        store: Store,
        metrics: Metrics,
        dead_letter: DeadLetterSender,
    ) -> None:
        self.processor = StreamProcessor(monitors)
        self.monitors = self.processor.monitors
        self.states = self.processor.states
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
        now = datetime.now(UTC)
        result = self.processor.process(messages, now)
        for model_id, accepted in result.accepted.items():
            self.metrics.events_processed.labels(model_id).inc(accepted)
        self.metrics.events_skipped.inc(result.skipped)
        if result.dead:
            await self._dead_letter(result.dead)
            for letter in result.dead:
                self.metrics.events_dead_lettered.labels(letter.reason).inc()
        if result.reports or result.triggers:
            await self._write(result.reports, result.triggers, now)
        for report in result.reports:
            self.metrics.windows_closed.labels(report.model_id, str(report.drifted).lower()).inc()
        for trigger in result.triggers:
            self.metrics.triggers.labels(trigger.data.model_id).inc()
            log.warning(
                "drift episode opened for %s: trigger %s (%s)",
                trigger.data.model_id,
                trigger.data.trigger_id,
                ", ".join(f.name for f in trigger.data.drifted_features),
            )
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

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
