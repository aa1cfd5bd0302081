"""Runs a stream (``stream.py``) through a real worker, broker, database and webhook
receiver, with faults injected, and accounts for every row: the ledger.

The invariant: rows produced = counted in window reports + dead-lettered (by reason)
+ late + duplicates dropped + skipped (a model nobody monitors), each equal to what the
stream's ground truth says, and exactly one retraining request per drift episode.

Counted rows are read from the store (every closed window's ``n``) and the worker's API
(the window still open); dead letters from the dead-letter topic, deduplicated by their
source (a batch cut short by a crash may dead-letter its rows again); retraining
requests from the receiver. Skipped rows leave no durable trace: they are what is left,
and must equal the stream's unmonitored rows exactly, so nothing else can be missing.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from driftline.embedded.process import WorkerProcess
from driftline.embedded.receiver import WebhookReceiver
from driftline.embedded.traffic import TrafficModel
from driftline.monitoring import Monitor, build_monitor
from driftline.replay import Replay
from driftline.schemas.monitors import load_monitors
from driftline.schemas.reports import DriftReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.stream.deadletter import DeadLetter, SourceMessage
from driftline.stream.processing import MonitorState
from driftline.stream.topics import Topics
from tests.integration.test_recovery import Store, crash_test_settings, wait_for
from tests.reliability.stream import LATENESS_S, MODEL, PANE_S, Stream
from tests.unit.helpers import SECRET, assert_same_reports

#: Every scenario's ledger, for the report printed at the end of the run (conftest).
LEDGERS: list[Ledger] = []


@dataclass
class Ledger:
    """Where every produced row went, as measured, and what the ground truth says."""

    scenario: str
    seed: int
    database: str
    produced: int
    counted: int
    dead: Counter[str]  # by reason, late excluded
    late: int
    duplicates: int
    skipped: int  # what is left: produced less everything measured
    expected: Counter[str]
    triggers_expected: int
    triggers_sent: int  # distinct retraining requests received
    requests: int  # webhook requests received (retries of one request included)
    dead_letters_resent: int  # dead letters sent again after a crash (same source)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        expected = self.expected
        expected_dead = Counter(
            {k.removeprefix("dead:"): v for k, v in expected.items() if k.startswith("dead:")}
        )
        late = expected_dead.pop("late", 0)
        assert self.duplicates == expected["duplicate"], self
        measured = self.counted + sum(self.dead.values()) + self.late + self.duplicates
        assert self.produced == measured + self.skipped
        assert self.counted == expected["counted"], self
        assert self.dead == expected_dead, self
        assert self.late == late, self
        assert self.skipped == expected["skipped"], self
        assert self.triggers_sent == self.triggers_expected, self


def configure(directory: Path, webhook_url: str, deduplicate: bool = False) -> Path:
    """A monitor of 1-minute tumbling windows (each row in exactly one window report),
    20 s of allowed lateness, 2 drifted windows to open an episode and 2 clean to close;
    dropping duplicate event ids with ``deduplicate``."""
    pq.write_table(
        pa.table(TrafficModel().sample(np.random.default_rng(1), 5000)),
        directory / "reference.parquet",
    )
    path = directory / "monitors.yaml"
    spec = {
        "model_id": MODEL,
        "reference": {"path": "reference.parquet"},
        "window": {
            "duration": f"{PANE_S:g}s",
            "panes": 1,
            "allowed_lateness": f"{LATENESS_S:g}s",
            "min_events": 100,
            "deduplicate": deduplicate,
        },
        "policy": {"consecutive_windows": 2, "clean_windows_to_close": 2},
        "targets": [{"url": webhook_url, "secret": SECRET, "timeout_s": 2, "max_attempts": 1000}],
    }
    path.write_text(yaml.safe_dump({"models": [spec]}))
    return path


@dataclass
class Expected:
    """What an uninterrupted run gives (``driftline replay`` of the same messages)."""

    reports: list[DriftReport]
    triggers: set[str]
    dead: Counter[str]
    skipped: int
    #: Each dead letter: (source offset, batch index or "", reason).
    letters: set[tuple[int, str, str]]
    monitor: Monitor


def replay(stream: Stream, monitors: Path) -> Expected:
    (spec,) = load_monitors(monitors).models
    monitor = build_monitor(spec)
    run = Replay({MODEL: monitor})
    now = time.time()
    sources = (
        SourceMessage(m.key, m.value, "replay", 0, i, now) for i, m in enumerate(stream.messages)
    )
    outputs = list(run.run(sources))
    letters = {
        (d.source.offset, "" if d.batch_index is None else str(d.batch_index), d.reason)
        for d in outputs
        if isinstance(d, DeadLetter)
    }
    return Expected(
        [r for r in outputs if isinstance(r, DriftReport)],
        {o.data.trigger_id for o in outputs if isinstance(o, RetrainingEvent)},
        Counter(run.dead_lettered),
        run.skipped,
        letters,
        monitor,
    )


def worker_settings(
    bootstrap: str, prefix: str, monitors: Path, database_url: str, directory: Path
) -> dict[str, str]:
    """The crash tests' worker (small batches), with its relay on (it delivers)."""
    return crash_test_settings(
        bootstrap,
        prefix,
        monitors,
        database_url,
        directory,
        BATCH_SIZE="20",
        RELAY_INTERVAL_S="0.5",
    )


def producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "log.connection.close": False,
        }
    )


def produce(target: Producer, topic: str, messages: list[Any]) -> None:
    for message in messages:
        target.produce(topic, key=message.key, value=message.value)
        target.poll(0)
    assert target.flush(30) == 0


@contextmanager
def webhook_receiver() -> Iterator[tuple[WebhookReceiver, str]]:
    """A real aiohttp receiver verifying signatures, on its own loop in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    receiver = WebhookReceiver(SECRET)
    url = asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(10)
    try:
        yield receiver, url
    finally:
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def dead_letters(
    bootstrap: str, topic: str, expected: set[tuple[int, str, str]]
) -> tuple[set[tuple[int, str, str]], int]:
    """Each dead letter's (source offset, batch index or "", reason), once; and how many
    were sent again (the same source row).

    Read from the start until every expected letter is there (or 60 s passed), then
    until nothing more comes for 2 s (any unexpected ones). Not up to the high
    watermark: the embedded broker (tansu 0.6) can report one that lags the messages
    it serves. Every dead letter is acknowledged before its batch is stored, and the
    caller waited for the store, so all are there.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ledger-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        seen: dict[tuple[int, str], str] = {}
        resent = 0
        wanted = {(offset, index) for offset, index, _ in expected}
        deadline = time.monotonic() + 60
        quiet_until = time.monotonic() + 2.0
        while time.monotonic() < (deadline if not wanted <= seen.keys() else quiet_until):
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            quiet_until = time.monotonic() + 2.0
            headers = dict(message.headers() or [])
            source = (
                int(headers["driftline-source-offset"]),
                headers.get("driftline-batch-index", b"").decode(),
            )
            if source in seen:
                resent += 1
            seen[source] = headers["driftline-reason"].decode()
        return {(offset, index, reason) for (offset, index), reason in seen.items()}, resent
    finally:
        consumer.close()


def open_window_rows(database_url: str, monitor: Monitor) -> int:
    """Rows in the window still open (the closing event's), from the model's stored
    snapshot, read with driftline's own state. Not from the API: a worker handed the
    partition again after its last message has not loaded the state yet (it does at
    the next message). Read with a plain engine: ``driftline.store.Store.connect``
    migrates, and alembic's context is not safe across the scenario's threads."""
    store = Store(database_url)
    try:
        (snapshot,) = store.column(f"SELECT state FROM model_states WHERE model_id = '{MODEL}'")
    finally:
        store.engine.dispose()
    if isinstance(snapshot, str | bytes):
        snapshot = orjson.loads(snapshot)
    state = MonitorState(replace(monitor, reference_version=snapshot["reference_version"]))
    assert state.restore(snapshot)
    current = state.current_report()
    return 0 if current is None else current.n


@dataclass
class Run:
    """One scenario's run: the stream, the store, the worker's settings and the receiver.

    ``drive`` produces the stream and injects the scenario's faults, leaving a worker
    running; then ``settle`` waits for everything to be stored and delivered and
    ``ledger`` accounts for every row.
    """

    scenario: str
    seed: int
    database_url: str
    bootstrap: str
    topics: Topics
    stream: Stream
    monitors: Path
    settings: dict[str, str]
    receiver: WebhookReceiver
    log: Path
    started: float = field(default_factory=time.monotonic)
    #: What the scenario cuts and restores, when it is set up before the run (a proxy).
    fault: Any = None
    workers: list[WorkerProcess] = field(default_factory=list)
    #: Run at the end, whatever happened (faults' proxies and locks).
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def start_worker(self) -> WorkerProcess:
        """A worker on the run's settings, stopped by ``stop_workers`` whatever happens."""
        worker = WorkerProcess(self.settings, self.log)
        self.workers.append(worker)
        return worker.start()

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.returncode is None:
                worker.kill()

    @property
    def store(self) -> Store:
        return Store(self.database_url)

    def settle(self, worker: WorkerProcess, expected: Expected, within_s: float = 120) -> None:
        store = self.store
        last = len(self.stream.messages) - 1
        try:
            wait_for(lambda: store.offset() >= last, worker, within_s)
            wait_for(
                lambda: (
                    len({_trigger_id(r) for r in self.receiver.verified}) >= len(expected.triggers)
                ),
                worker,
                within_s,
            )
        finally:
            store.engine.dispose()

    def ledger(self, worker: WorkerProcess, expected: Expected) -> Ledger:
        store = self.store
        try:
            stored = store.reports()
        finally:
            store.engine.dispose()
        assert_same_reports(stored, expected.reports)
        counted = sum(r.n for r in stored) + open_window_rows(self.database_url, expected.monitor)
        letters, resent = dead_letters(self.bootstrap, self.topics.dlq, expected.letters)
        assert letters == expected.letters, (
            f"dead letters missing: {sorted(expected.letters - letters)}; "
            f"not expected: {sorted(letters - expected.letters)}"
        )
        dead = Counter(reason for *_, reason in letters)
        late = dead.pop("late", 0)
        duplicates = metric_total(worker, "driftline_events_duplicate_total")
        sent = {_trigger_id(r) for r in self.receiver.verified}
        assert sent == expected.triggers
        assert len(self.receiver.received) == len(self.receiver.verified)  # all signed
        produced = self.stream.produced
        ledger = Ledger(
            self.scenario,
            self.seed,
            self.database_url.split(":", 1)[0].split("+", 1)[0],
            produced,
            counted,
            dead,
            late,
            int(duplicates),
            produced - counted - sum(dead.values()) - late - int(duplicates),
            self.stream.expected(),
            len(expected.triggers),
            len(sent),
            len(self.receiver.received),
            resent,
            time.monotonic() - self.started,
        )
        LEDGERS.append(ledger)
        return ledger


def metric_total(worker: WorkerProcess, name: str) -> float:
    """A counter summed over its labels, from the worker's /metrics (counted since it
    started: the scenarios that read one run a single worker)."""
    url = f"{worker.api}/metrics?name[]={name}"
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(x.split()[-1]) for x in lines if x.startswith(name))


def _trigger_id(received: Any) -> str:
    return str(received.body["data"]["trigger_id"])
