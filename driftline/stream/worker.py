"""Running the worker: prepare the monitors, the broker and the topics, then start Faust."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

import faust

from driftline.embedded.broker import EmbeddedBroker
from driftline.exceptions import DriftlineError, ReferenceDataError
from driftline.logs import install_logging, logging_config
from driftline.monitoring import Monitor, build_monitor, calibrate
from driftline.registry import RecordKey, record_key, runnable
from driftline.schemas.monitors import MonitorSpec, load_monitors
from driftline.settings import Settings
from driftline.store import Store
from driftline.stream.app import create_app
from driftline.stream.topics import Topics, ensure_topics

log = logging.getLogger(__name__)


def prepare_monitor(spec: MonitorSpec, store: Store) -> Monitor:
    """Build (or load) the monitor's reference profile and store its version."""
    now = datetime.now(UTC)
    if spec.reference.path is not None:
        latest = store.load_profile(spec.model_id, "latest")
        monitor = build_monitor(spec, stored=None if latest is None else latest[1])
        version = store.save_profile(spec.model_id, monitor.profile, str(spec.reference.path), now)
    else:
        assert spec.reference.stored is not None
        loaded = store.load_profile(spec.model_id, spec.reference.stored)
        if loaded is None:
            raise ReferenceDataError(
                f"model {spec.model_id}: no stored reference profile {spec.reference.stored!r}; "
                "start once with reference.path to store one"
            )
        version, profile = loaded
        profile = calibrate(profile, spec.thresholds)
        features = tuple(spec.features or ())
        if [f.name for f in features] != [f.name for f in profile.features]:
            raise ReferenceDataError(
                f"model {spec.model_id}: list the features of the stored profile "
                f"({[f.name for f in profile.features]}) under 'features'"
            )
        monitor = Monitor(spec, features, profile)
    resolved = spec.model_copy(update={"features": list(monitor.features)})
    store.save_monitor(resolved, version, now)
    return Monitor(resolved, monitor.features, monitor.profile, version)


def prepare_monitors(
    settings: Settings, store: Store
) -> tuple[dict[str, Monitor], dict[str, RecordKey], dict[str, MonitorSpec]]:
    """Seed the registry with the monitors file; then every runnable monitor in it, the
    version of each stored monitor they were built from, and the file's specs.

    The file's monitors are built from their reference files (and stored); monitors
    created through the API come from the store.
    """
    config = load_monitors(settings.monitors_path, settings.topic_prefix)
    file_monitors = {spec.model_id: prepare_monitor(spec, store) for spec in config.models}
    store.forget_file_monitors(set(file_monitors))
    file_specs = {model_id: monitor.spec for model_id, monitor in file_monitors.items()}
    return *load_registry(store, file_specs), file_specs


def load_registry(
    store: Store, file_specs: Mapping[str, MonitorSpec]
) -> tuple[dict[str, Monitor], dict[str, RecordKey]]:
    """The monitors to run (every stored one not paused and with a reference profile),
    and the version of each stored monitor, as read then (a change after is applied
    by the worker's next look at the registry)."""
    monitors, seen = {}, {}
    for record in store.monitor_records():
        seen[record.model_id] = record_key(record)
        monitor = runnable(record, store, file_specs)
        if monitor is not None:
            monitors[record.model_id] = monitor
    return monitors, seen


@contextlib.contextmanager
def kafka_bootstrap(settings: Settings) -> Iterator[str]:
    """The configured Kafka, or an embedded broker for the duration of the block."""
    if settings.kafka_bootstrap:
        yield settings.kafka_bootstrap
        return
    broker = EmbeddedBroker(port=settings.embedded_broker_port)
    bootstrap = broker.start()
    log.warning(
        "no DRIFTLINE_KAFKA_BOOTSTRAP: started the embedded in-memory broker on %s "
        "(produce to it there, e.g. driftline traffic --bootstrap %s; it keeps nothing: "
        "its topics go when the worker stops)",
        bootstrap,
        bootstrap,
    )
    try:
        yield bootstrap
    finally:
        broker.stop()


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Have glibc's malloc keep ``arenas`` arenas, not 8 per core (True if it took).

    The store thread's large, short-lived JSON documents otherwise spread over arenas
    of their own that are rarely returned: with 2, a 100-model worker's RSS is about
    40 MB lower (``bench/memory.py``). The same as ``MALLOC_ARENA_MAX=2``; elsewhere
    than glibc, nothing changes.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


_M_ARENA_MAX = -8  # glibc's malloc.h


def run_worker(settings: Settings) -> None:
    """Run until stopped (SIGINT/SIGTERM); a startup error is logged and exits 2."""
    limit_malloc_arenas()  # before any thread starts
    # From the first line on, not only once Faust starts.
    install_logging(settings.log_format, settings.log_level)
    try:
        _run(settings)
    except DriftlineError as exc:
        log.critical("driftline worker cannot start: %s", exc)
        sys.exit(2)


def _run(settings: Settings) -> None:
    store = Store.connect(settings.database_url)
    monitors, seen, file_specs = prepare_monitors(settings, store)
    with kafka_bootstrap(settings) as bootstrap:
        topics = Topics(settings.topic_prefix)
        retraining = {
            t.topic for m in monitors.values() for t in m.spec.targets if t.type == "kafka"
        }
        names = [*topics.all(), *sorted(n for n in retraining if n is not None)]
        ensure_topics(
            bootstrap,
            names,
            settings.topic_partitions,
            copartitioned=[topics.predictions, topics.labels],
            settings=settings,
            timeout_s=max(10.0, settings.session_timeout_s),  # unreachable: it stops soon
        )
        app, _ = create_app(settings, bootstrap, monitors, store, file_specs=file_specs, known=seen)
        # What is loaded by now (modules, reference profiles) lives as long as the process:
        # out of the collector's sight, so that its full passes stay short (py-spy).
        gc.collect()
        gc.freeze()
        worker = faust.Worker(
            app,
            loglevel=settings.log_level,
            logging_config=logging_config(settings.log_format, settings.log_level),
            quiet=True,
        )
        try:
            worker.execute_from_commandline()
        finally:
            store.close()
