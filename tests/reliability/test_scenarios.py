"""Nothing lost: bad input, disorder and crashes against a real broker, database and
webhook receiver, three seeds each, on SQLite and PostgreSQL. Every produced row is
accounted for (``harness.Ledger``) and each drift episode sends one retraining request.
"""

from __future__ import annotations

import random
import sqlite3
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from driftline.embedded.broker import EmbeddedBroker, free_port
from driftline.embedded.process import WorkerProcess
from driftline.stream.topics import Topics, ensure_topics
from tests.conftest import new_postgres_database
from tests.integration.tcp_proxy import TcpProxy
from tests.reliability.harness import (
    Expected,
    Ledger,
    Run,
    configure,
    metric_total,
    produce,
    producer,
    replay,
    wait_for,
    webhook_receiver,
    worker_settings,
)
from tests.reliability.stream import Stream, build

pytestmark = pytest.mark.integration

SEEDS = [1, 2, 3]


def uninterrupted(run: Run) -> WorkerProcess:
    """The worker runs throughout; the stream is produced while it runs."""
    worker = run.start_worker()
    produce(producer(run.bootstrap), run.topics.predictions, run.stream.messages)
    return worker


def sigkill(run: Run) -> WorkerProcess:
    """SIGKILL the worker three times at points drawn from the seed, mid-stream; a new
    worker takes over each time."""
    rng = random.Random(run.seed)
    messages = run.stream.messages
    # Three cuts at least 10 messages apart, the first after a fifth of the stream.
    spaced = sorted(rng.sample(range(len(messages) // 5, len(messages) - 40), 3))
    cuts = [cut + 10 * i for i, cut in enumerate(spaced)]
    chunks = [messages[a:b] for a, b in zip([0, *cuts], [*cuts, len(messages)], strict=True)]
    target = producer(run.bootstrap)
    store = run.store
    produced = 0
    try:
        for index, chunk in enumerate(chunks):
            worker = run.start_worker()
            produce(target, run.topics.predictions, chunk)
            produced += len(chunk)
            if index == len(chunks) - 1:
                return worker
            # Partway into what is there, without warning.
            stored = produced - rng.randint(2, min(30, len(chunk) - 1))
            wait_for(lambda s=stored: store.offset() >= s, worker, 60)  # type: ignore[misc]
            worker.kill()
    finally:
        store.engine.dispose()
    raise AssertionError("unreachable")


OUTAGE_S = 30


class SqliteLock:
    """A SQLite database made unwritable: another connection holds an exclusive lock (a
    backup or a stuck process would), so every write fails with "database is locked"."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None

    def cut(self) -> None:
        self._connection = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._connection.execute("BEGIN EXCLUSIVE")

    def restore(self) -> None:
        if self._connection is not None:
            self._connection.execute("COMMIT")
            self._connection.close()
            self._connection = None

    def stop(self) -> None:
        self.restore()


def database_outage(run: Run) -> WorkerProcess:
    """The database is unreachable for 30 s mid-stream: PostgreSQL through a TCP proxy
    that drops every connection and refuses new ones; SQLite locked by another process.
    Events keep coming meanwhile."""
    url = make_url(run.database_url)
    fault: TcpProxy | SqliteLock
    if url.get_backend_name() == "sqlite":
        fault = SqliteLock(str(url.database))
    else:
        fault = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
        proxied = url.set(host="127.0.0.1", port=fault.port)
        run.settings["DATABASE_URL"] = proxied.render_as_string(hide_password=False)
    run.cleanups.append(fault.stop)

    def failing(worker: WorkerProcess) -> None:
        # Its store calls fail and are retried; it says it is not ready.
        wait_for(lambda: readiness(worker) == 503, worker, OUTAGE_S - 5)
        errors = "driftline_store_errors_total"
        wait_for(lambda: metric_total(worker, errors) > 0, worker, OUTAGE_S - 5)

    return outage(run, fault, failing)


def broker_outage(run: Run) -> WorkerProcess:
    """The broker is unreachable for 30 s mid-stream: the worker (and the producer) reach
    it through a TCP proxy that drops every connection and refuses new ones. Events are
    produced meanwhile; the producer holds them until the broker is back."""
    assert isinstance(run.fault, TcpProxy)

    def failing(worker: WorkerProcess) -> None:
        wait_for(lambda: readiness(worker) == 503, worker, OUTAGE_S - 5)

    return outage(run, run.fault, failing)


def outage(
    run: Run, fault: TcpProxy | SqliteLock, failing: Callable[[WorkerProcess], None]
) -> WorkerProcess:
    """Half the stream, then ``fault`` cut for ``OUTAGE_S`` while the rest is produced
    (``failing`` checks the worker notices), then restored."""
    messages = run.stream.messages
    half = len(messages) // 2
    worker = run.start_worker()
    target = producer(run.bootstrap)
    produce(target, run.topics.predictions, messages[:half])
    store = run.store
    try:
        wait_for(lambda: store.offset() >= half - 10, worker, 60)
        fault.cut()
        cut_at = time.monotonic()
        for message in messages[half:]:  # held by the producer while the broker is away
            target.produce(run.topics.predictions, key=message.key, value=message.value)
            target.poll(0)
        failing(worker)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        assert store.offset() < len(messages) - 1  # nothing after the cut was stored
        fault.restore()
        assert target.flush(60) == 0
    finally:
        store.engine.dispose()
    return worker


def rebalance(run: Run) -> WorkerProcess:
    """A second worker joins the group while windows are open, then leaves (SIGTERM):
    the partition may move to it and back, its windows with it."""
    messages = run.stream.messages
    thirds = [len(messages) // 3, 2 * len(messages) // 3]
    first = run.start_worker()
    target = producer(run.bootstrap)
    produce(target, run.topics.predictions, messages[: thirds[0]])
    store = run.store
    try:
        wait_for(lambda: store.offset() >= thirds[0] - 10, first, 60)
        second = run.start_worker()  # the group rebalances
        produce(target, run.topics.predictions, messages[thirds[0] : thirds[1]])
        wait_for(lambda: store.offset() >= thirds[1] - 10, first, 60)
        assert second.stop() == 0, second.log_tail()  # it leaves: rebalance again
        produce(target, run.topics.predictions, messages[thirds[1] :])
    finally:
        store.engine.dispose()
    return first


def readiness(worker: WorkerProcess) -> int:
    try:
        with urllib.request.urlopen(f"{worker.api}/readyz", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


#: Scenarios whose monitor drops duplicate event ids (``window.deduplicate``).
DEDUPLICATING = {"duplicates"}

SCENARIOS: dict[str, tuple[Callable[[int], Stream], Callable[[Run], WorkerProcess]]] = {
    "poison pills": (lambda seed: build(seed, poison=True, disorder=False), uninterrupted),
    "out of order and late": (lambda seed: build(seed, poison=False, disorder=True), uninterrupted),
    "SIGKILL x3": (lambda seed: build(seed, poison=True, disorder=True), sigkill),
    "database down 30 s": (lambda seed: build(seed, poison=True, disorder=True), database_outage),
    "broker down 30 s": (lambda seed: build(seed, poison=True, disorder=True), broker_outage),
    "rebalance": (lambda seed: build(seed, poison=True, disorder=True), rebalance),
    "duplicates": (
        lambda seed: build(seed, poison=True, disorder=True, duplicates=True),
        uninterrupted,
    ),
}


def check_ground_truth(stream: Stream, expected: Expected) -> None:
    """The stream's ground truth (from the schema and the watermark rule) agrees with an
    uninterrupted run of driftline's own processing: else the suite checks nothing."""
    truth = stream.expected()
    dead = Counter({k.removeprefix("dead:"): v for k, v in truth.items() if k.startswith("dead:")})
    assert expected.dead == dead
    assert expected.skipped == truth["skipped"]
    assert sum(r.n for r in expected.reports) == truth["counted"] - 1  # the closer is open
    assert len(expected.triggers) == 2  # two drift episodes


@pytest.fixture
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh database for each seed on each backend: SQLite files, and new PostgreSQL
    databases when a server is there (with CI=true it must be)."""
    urls = {f"sqlite-{seed}": f"sqlite:///{tmp_path / f'store-{seed}.db'}" for seed in SEEDS}
    try:
        server = request.getfixturevalue("postgres_server_url")
    except pytest.skip.Exception:
        server = None  # no PostgreSQL here: SQLite only (CI fails instead of skipping)
    with ExitStack() as stack:
        if server is not None:
            for seed in SEEDS:
                urls[f"postgresql-{seed}"] = stack.enter_context(new_postgres_database(server))
        yield urls


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_row_is_accounted_for(
    scenario: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    databases: dict[str, str],
) -> None:
    """Three seeds on SQLite and three on PostgreSQL, all at once (each with its own
    topics, database, worker and receiver): the scenarios mostly wait (restarts,
    outages), so that costs little more than one run."""
    with ThreadPoolExecutor(len(databases)) as pool:
        runs = [
            pool.submit(
                one_seed,
                scenario,
                int(name.rsplit("-", 1)[1]),
                kafka_bootstrap,
                f"{topic_prefix}{name.replace('-', '')}",
                tmp_path / name,
                url,
            )
            for name, url in databases.items()
        ]
        ledgers = [run.result() for run in runs]
    for ledger in ledgers:
        ledger.check()


def one_seed(
    scenario: str,
    seed: int,
    bootstrap: str,
    prefix: str,
    directory: Path,
    database_url: str,
) -> Ledger:
    make_stream, drive = SCENARIOS[scenario]
    stream = make_stream(seed)
    directory.mkdir()
    with ExitStack() as stack:
        fault = None
        if drive is broker_outage:  # a broker of its own, reached through a proxy
            port = free_port()
            fault = stack.enter_context(TcpProxy("127.0.0.1", port))
            broker = EmbeddedBroker(
                port=port, log_path=directory / "broker.log", advertised_port=fault.port
            )
            broker.start()
            stack.callback(broker.stop)
            bootstrap = f"127.0.0.1:{fault.port}"
        receiver, url = stack.enter_context(webhook_receiver())
        monitors = configure(directory, url, deduplicate=scenario in DEDUPLICATING)
        expected = replay(stream, monitors)
        check_ground_truth(stream, expected)
        topics = Topics(prefix)
        ensure_topics(bootstrap, topics.all(), 1)
        settings = worker_settings(bootstrap, prefix, monitors, database_url, directory)
        run = Run(
            scenario,
            seed,
            database_url,
            bootstrap,
            topics,
            stream,
            monitors,
            settings,
            receiver,
            directory / "worker.log",
            fault=fault,
        )
        try:
            worker = drive(run)
            run.settle(worker, expected)
            ledger = run.ledger(worker, expected)
            assert worker.stop() == 0, worker.log_tail()
            return ledger
        finally:
            run.stop_workers()
            for cleanup in run.cleanups:
                cleanup()
