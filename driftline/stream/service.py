"""The worker's core: batches of Kafka messages in, windows, reports, dead letters and triggers out.

Independent of Faust: the agent hands it messages and a dead-letter sender.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from driftline.exceptions import PartitionTaken
from driftline.monitoring import Monitor
from driftline.schemas.reports import DriftReport, PerformanceReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.store import Snapshot, Store
from driftline.stream.batch import BatchResult, StreamProcessor
from driftline.stream.deadletter import DeadLetter, SourceMessage
from driftline.stream.kafka_logs import (
    LogInspector,
    another_log,
    better_named,
    needs_log_end,
)
from driftline.stream.metrics import Metrics, OutcomeGauges

log = logging.getLogger(__name__)
T = TypeVar("T")

DeadLetterSender = Callable[[Sequence[DeadLetter]], Awaitable[None]]
#: Retry of a failed store write: first wait, and the cap of the doubling wait.
STORE_RETRY_S = (0.5, 30.0)


Acknowledge = Callable[[], Awaitable[None]]


@dataclass
class _Pending:
    """Effects processed but not yet stored, and the acks that wait for them."""

    reports: list[DriftReport] = field(default_factory=list)
    performance: list[PerformanceReport] = field(default_factory=list)
    triggers: list[RetrainingEvent] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    partitions: dict[str, tuple[str, int]] = field(default_factory=dict)
    acks: list[Acknowledge] = field(default_factory=list)
    events: int = 0
    since: float = field(default_factory=time.monotonic)

    def add(
        self, result: BatchResult, fresh: Sequence[SourceMessage], on_durable: Acknowledge | None
    ) -> None:
        self.reports.extend(result.reports)
        self.performance.extend(result.performance)
        self.triggers.extend(result.triggers)
        self.partitions.update(result.partitions)
        for message in fresh:
            key = (message.topic, message.partition)
            self.offsets[key] = max(self.offsets.get(key, -1), message.offset)
        self.events += len(fresh)
        self.acks.append(on_durable or _nothing)


async def _nothing() -> None:
    return None


def _or_none(offset: int | None) -> int:
    return -1 if offset is None else offset


#: The worker's exit code when another worker took its partitions (EX_TEMPFAIL): it
#: was out of its group; restarted, it joins again and resumes from the store.
EXIT_PARTITION_TAKEN = 75


def _taken(exc: PartitionTaken) -> NoReturn:
    """Stop at once: what this worker counted since it lost the partition is another's
    to count (its in-memory state is behind the store's), and nothing of it is stored."""
    log.critical("%s; stopping (a restart resumes from the store)", exc)
    os._exit(EXIT_PARTITION_TAKEN)


class DriftService:
    """The stream processor, with its I/O: dead letters, the store, metrics."""

    def __init__(
        self,
        monitors: Mapping[str, Monitor],
        store: Store,
        metrics: Metrics,
        dead_letter: DeadLetterSender,
        snapshot_every_events: int = 0,
        snapshot_every_s: float = 0.0,
        home_topics: Mapping[str, str] | None = None,
        logs: LogInspector | None = None,
    ) -> None:
        #: ``home_topics``: topics co-partitioned with another (labels -> predictions);
        #: a model's snapshot is kept under its home partition, whichever topic it came on.
        self.processor = StreamProcessor(monitors, home_topics)
        self.monitors = self.processor.monitors
        self.states = self.processor.states
        self.store = store
        self.metrics = metrics
        self._dead_letter = dead_letter
        self.store_healthy = True
        #: The tenant of every monitor in the registry (running or not): API access.
        self.tenants: dict[str, str] = {m: s.spec.tenant for m, s in self.monitors.items()}
        #: Set by the worker's broker check and relay loop (readiness).
        self.broker_healthy = True
        self.relay_last_pass: float | None = None
        self.relay_pass_started: float | None = None
        self._lock = asyncio.Lock()
        #: Set when triggers (outbox rows) are stored: the relay sends them at once.
        self.outbox_changed = asyncio.Event()
        self._pending = _Pending()
        self._cadence = (snapshot_every_events, snapshot_every_s)
        self._loaded: set[tuple[str, int]] = set()
        self._offsets: dict[tuple[str, int], int] = {}
        #: What tells one log from another (None: no broker to ask, in tests); the log
        #: each partition's offsets belong to, as far as known; and the newest offset
        #: handled of each partition since it was assigned (a message at or below it
        #: means the log went back: replaced, or cut).
        self._logs = logs
        self._log_of: dict[tuple[str, int], str | None] = {}
        self._handled: dict[tuple[str, int], int] = {}
        self._partition_of: dict[str, tuple[str, int]] = {}
        #: Wall-clock time each model's last window was stored; worker start until then.
        started = time.time()
        self.last_closed: dict[str, float] = dict.fromkeys(self.monitors, started)

    def last_reports(self) -> dict[str, DriftReport | None]:
        return {model_id: state.last_report for model_id, state in self.states.items()}

    def outcome_gauges(self) -> dict[str, OutcomeGauges]:
        """Each labelled model's last performance window, waiting joins and detections."""
        return {
            model_id: OutcomeGauges(
                o.last_report,
                o.join.pending,
                0 if o.detector is None else o.detector.detections,
            )
            for model_id, state in self.states.items()
            if (o := state.outcomes) is not None
        }

    def watermarks(self) -> dict[str, float]:
        return {
            model_id: s.ring.watermark
            for model_id, s in self.states.items()
            if s.ring.watermark != float("-inf")
        }

    async def handle(
        self,
        messages: Sequence[SourceMessage],
        on_durable: Acknowledge | None = None,
        owned: Callable[[str, int], bool] | None = None,
    ) -> None:
        """Process one batch; ``on_durable`` runs once its effects are stored (ack it then).

        Effects are the dead letters (acked by the broker), then in one transaction the
        window reports, triggers, outbox rows, the touched models' snapshots and the
        partitions' last offsets: with every batch, or when the snapshot cadence says.
        Events at or below a partition's stored offset were counted before a restart and
        are skipped, so nothing is counted twice.

        ``owned`` (when given) says, once the lock is held, whether a partition's events
        in this batch are still this worker's to count: those of partitions given away
        or read again since the batch was fetched are left alone. A batch with none left
        is not acknowledged.
        """
        started = time.perf_counter()
        async with self._lock:
            if owned is not None:
                messages = [m for m in messages if owned(m.topic, m.partition)]
                if not messages:
                    return
            await self._load_partitions({(m.topic, m.partition) for m in messages})
            fresh = self._fresh(messages)
            rewound = self._rewound(messages)
            # Events "already counted": of this log, or of one that replaced it? Asked
            # afresh when the log went back (else the ids of the last few seconds do).
            stale = self._stale(messages) if len(fresh) < len(messages) else set()
            if stale and await self._check_logs(stale, fresh=bool(stale & rewound)):
                fresh = self._fresh(messages)
            self.metrics.events_already_counted.inc(len(messages) - len(fresh))
            result = self.processor.process(fresh, datetime.now(UTC))
            for model_id, accepted in result.accepted.items():
                self.metrics.events_processed.labels(model_id).inc(accepted)
            for model_id, late in result.late.items():
                self.metrics.events_late.labels(model_id).inc(late)
            for model_id, duplicates in result.duplicates.items():
                self.metrics.events_duplicate.labels(model_id).inc(duplicates)
            for model_id, outcomes in result.labels.items():
                for outcome, count in outcomes.items():
                    self.metrics.labels.labels(model_id, outcome).inc(count)
            self.metrics.events_skipped.inc(result.skipped)
            if result.dead:
                await self._dead_letter(result.dead)
                for letter in result.dead:
                    self.metrics.events_dead_lettered.labels(letter.reason).inc()
            self._pending.add(result, fresh, on_durable)
            # A retraining trigger is stored at once, whatever the cadence: its delivery
            # (the outbox relay) waits for the store.
            if result.triggers or self._commit_due():
                await self._commit()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _counted(self, key: tuple[str, int]) -> int | None:
        """The last offset of a partition counted: stored, or counted and not stored
        yet (None: nothing of it)."""
        stored, pending = self._offsets.get(key), self._pending.offsets.get(key)
        if stored is None or pending is None:
            return pending if stored is None else stored
        return max(stored, pending)

    def _fresh(self, messages: Sequence[SourceMessage]) -> list[SourceMessage]:
        """The messages not counted yet: after their partition's last counted offset
        (stored or not: a consumer is sent back to the start of its log when its
        position is out of range)."""
        counted = {key: self._counted(key) for key in {(m.topic, m.partition) for m in messages}}
        return [m for m in messages if m.offset > _or_none(counted[(m.topic, m.partition)])]

    def _stale(self, messages: Sequence[SourceMessage]) -> set[tuple[str, int]]:
        """Partitions with messages at or below what is counted: of this log, or of one
        that replaced it?"""
        counted = {key: self._counted(key) for key in {(m.topic, m.partition) for m in messages}}
        return {
            (m.topic, m.partition)
            for m in messages
            if m.offset <= _or_none(counted[(m.topic, m.partition)])
        }

    def _rewound(self, messages: Sequence[SourceMessage]) -> set[tuple[str, int]]:
        """Partitions whose messages went back below one handled since assignment (a
        consumer only moves forward, unless its log was replaced or cut)."""
        handled = self._handled
        rewound = set()
        for m in messages:
            key = (m.topic, m.partition)
            if m.offset <= handled.get(key, -1):
                rewound.add(key)
            handled[key] = m.offset
        return rewound

    async def assign(self, partitions: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """Partitions just assigned: their stored offsets checked against the logs they
        are read from now; returns those reset (to be read from their start).

        A stored offset of another log (a fresh embedded broker, a topic re-created,
        another cluster) would skip every new event as already counted: it is reset
        with an error, and the models' state is kept.
        """
        async with self._lock:
            for key in partitions:
                self._handled.pop(key, None)
            stored = await self._retry(self.store.stored_offsets, partitions)
            for key, (offset, log_id) in stored.items():
                self._offsets[key], self._log_of[key] = offset, log_id
            return await self._check_logs(partitions, fresh=True)

    async def _check_logs(
        self, partitions: set[tuple[str, int]], fresh: bool = False
    ) -> set[tuple[str, int]]:
        """Reset the offsets (in memory and stored) of these partitions that belong to
        another log than the one read now (``fresh``: asked of the broker now, not
        taken from its answer of the last few seconds); returns them.
        """
        if self._logs is None or not partitions:
            return set()
        logs = self._logs
        topics = {topic for topic, _ in partitions}
        current = await asyncio.to_thread(logs.identities, topics, fresh)
        counted = {key: self._counted(key) for key in partitions}
        known = {
            key: (offset, self._log_of.get(key))
            for key, offset in counted.items()
            if offset is not None
        }
        for key in partitions - known.keys():  # nothing counted yet: it will be this log's
            self._log_of[key] = current.get(key[0])
        unsure = [
            key
            for key, (offset, log_id) in known.items()
            if needs_log_end(offset, log_id, current.get(key[0]))
        ]
        ends = await asyncio.to_thread(logs.log_ends, unsure) if unsure else {}
        resets = {}
        for key, (offset, log_id) in sorted(known.items()):
            name = current.get(key[0])
            why = another_log(offset, log_id, name, ends.get(key))
            if why is not None:
                resets[key] = why
            if why is not None or better_named(log_id, name):  # the log its offsets are of
                self._log_of[key] = name
        if resets:
            now = datetime.now(UTC)
            logs_now = {k: self._log_of[k] for k in resets}
            before = {k: self._offsets.get(k) for k in resets}
            try:
                await self._retry(self.store.reset_offsets, logs_now, now, before)
            except PartitionTaken as exc:
                _taken(exc)
            for (topic, partition), why in resets.items():
                self._offsets[(topic, partition)] = -1
                # Offsets counted but not stored yet are the old log's: the new log's
                # own are counted from here (the old events' effects stay pending).
                self._pending.offsets.pop((topic, partition), None)
                self.metrics.offset_resets.labels(topic).inc()
                log.error(
                    "topic %s[%d]: the stored offsets belong to another log (%s), so they "
                    "are reset and the partition is read from its start; the models' state "
                    "is kept. Expected at every start of the embedded broker (it keeps "
                    "nothing); otherwise a topic was re-created or the worker points at "
                    "another cluster with this database",
                    topic,
                    partition,
                    why,
                )
        return set(resets)

    async def flush(self, force: bool = False) -> None:
        """Store pending effects if the cadence is due (or ``force``): the idle-time timer."""
        async with self._lock:
            if self._pending.acks and (force or self._commit_due()):
                await self._commit()

    def _commit_due(self) -> bool:
        every_events, every_s = self._cadence
        if not every_events and not every_s:
            return True
        pending = self._pending
        return bool(
            (every_events and pending.events >= every_events)
            or (every_s and time.monotonic() - pending.since >= every_s)
        )

    async def _commit(self) -> None:
        pending, self._pending = self._pending, _Pending()
        if pending.offsets:
            snapshots = {
                model_id: Snapshot(*partition, self.states[model_id].to_state())
                for model_id, partition in pending.partitions.items()
            }
            try:
                await self._write(pending, datetime.now(UTC), snapshots, self._log_of)
            except PartitionTaken as exc:
                _taken(exc)
            self._offsets.update(pending.offsets)
            self._partition_of.update(pending.partitions)
            if pending.triggers:
                self.outbox_changed.set()
        for acknowledge in pending.acks:
            await acknowledge()
        closed_at = time.time()
        for report in pending.reports:
            self.metrics.windows_closed.labels(report.model_id, str(report.drifted).lower()).inc()
            if report.segment is None:
                self.last_closed[report.model_id] = closed_at
        for performance in pending.performance:
            degraded = str(performance.drifted).lower()
            self.metrics.performance_windows.labels(performance.model_id, degraded).inc()
        for trigger in pending.triggers:
            data = trigger.data
            self.metrics.triggers.labels(data.model_id, data.source, data.status).inc()
            log.warning(
                "drift episode %s of %s: retraining request %s %s, severity %s (%s)",
                data.episode_id,
                data.model_id,
                data.trigger_id,
                data.status,
                data.severity,
                ", ".join(f.name for f in data.drifted_features),
            )

    async def _load_partitions(self, partitions: set[tuple[str, int]]) -> None:
        """Restore the snapshots of partitions seen for the first time (since assignment).

        A labels partition brings its home (predictions) partition first: the snapshots
        of its models are kept there, and must be restored before their labels count.
        """
        homes = self.processor.home_topics
        wanted = {(homes[t], p) for t, p in partitions if t in homes} | partitions
        for topic, partition in sorted(wanted - self._loaded, key=lambda tp: tp[0] in homes):
            offset, snapshots = await self._retry(self.store.load_partition, topic, partition)
            for model_id, state in snapshots.items():
                if model_id not in self.states:
                    continue
                if self.processor.reset(model_id).restore(state):
                    self._partition_of[model_id] = (topic, partition)
                else:
                    log.warning(
                        "snapshot of %s is for another reference version; its windows start afresh",
                        model_id,
                    )
            if offset is not None and (topic, partition) not in self._offsets:
                self._offsets[(topic, partition)] = offset  # unless assign() read it
            self._loaded.add((topic, partition))
            log.info(
                "partition %s[%d]: restored %d model(s), resuming after offset %s",
                topic,
                partition,
                len(snapshots),
                offset,
            )

    async def reconcile(self, monitors: Mapping[str, Monitor | None]) -> None:
        """Apply registry changes: a Monitor runs (new, or afresh); None stops it.

        Taken between batches: a batch never sees a model half-changed. What a stopped
        model counted is stored first (its reports and triggers are not lost).
        """
        async with self._lock:
            if self._pending.acks:
                await self._commit()
            for model_id, monitor in monitors.items():
                if monitor is None:
                    self.processor.remove(model_id)
                    self.last_closed.pop(model_id, None)
                    self._partition_of.pop(model_id, None)
                    log.info("monitor %s stopped", model_id)
                else:
                    self.processor.put(monitor)
                    self._partition_of.pop(model_id, None)
                    self.last_closed[model_id] = time.time()
                    self.metrics.initialize({model_id: monitor.spec})
                    log.info(
                        "monitor %s running (reference version %s)",
                        model_id,
                        monitor.reference_version,
                    )

    def consumed_models(self) -> set[str]:
        """Models whose events this worker has counted since its partitions were assigned."""
        return set(self._partition_of)

    def stored_offset(self, topic: str, partition: int) -> int | None:
        """The last offset of a partition whose events are stored (None: none yet)."""
        return self._offsets.get((topic, partition))

    def revoke(self, partitions: set[tuple[str, int]]) -> None:
        """Forget partitions handed to another worker: it restores them from the store."""
        self._loaded -= partitions
        for key in partitions:
            self._offsets.pop(key, None)
            self._log_of.pop(key, None)
            self._handled.pop(key, None)
        for model_id, partition in list(self._partition_of.items()):
            if partition in partitions:
                self.processor.reset(model_id)
                del self._partition_of[model_id]

    async def _write(
        self,
        pending: _Pending,
        now: datetime,
        snapshots: dict[str, Snapshot],
        logs: Mapping[tuple[str, int], str | None],
    ) -> None:
        """Write until it succeeds: the batch must not be acked before its effects are stored."""
        targets = {model_id: m.spec.targets for model_id, m in self.monitors.items()}
        tenants = {model_id: m.spec.tenant for model_id, m in self.monitors.items()}
        made = {model_id: m.made_at for model_id, m in self.monitors.items() if m.made_at}
        await self._retry(
            self.store.record_results,
            pending.reports,
            pending.triggers,
            targets,
            now,
            snapshots,
            pending.offsets,
            pending.performance,
            tenants,
            {key: logs[key] for key in pending.offsets if key in logs},
            made,
            {key: self._offsets.get(key) for key in pending.offsets},
            {  # the partitions snapshots are kept under, not read in this batch
                key: self._offsets.get(key)
                for key in set(pending.partitions.values()) - set(pending.offsets)
            },
        )

    async def _retry(self, call: Callable[..., T], *args: Any) -> T:
        """Run a store call in a thread until it succeeds, backing off up to a cap."""
        delay, cap = STORE_RETRY_S
        while True:
            try:
                value = await asyncio.to_thread(call, *args)
            except SQLAlchemyError as exc:
                self.store_healthy = False
                self.metrics.store_errors.inc()
                log.error("store call failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
            else:
                self.store_healthy = True
                return value
