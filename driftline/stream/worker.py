"""Running the worker: prepare the monitors, the broker and the topics, then start Faust."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import faust

from driftline.embedded.broker import EmbeddedBroker
from driftline.exceptions import ReferenceDataError
from driftline.monitoring import Monitor, build_monitor, calibrate
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
        monitor = build_monitor(spec)
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
    store.save_monitor(spec, version, now)
    return Monitor(monitor.spec, monitor.features, monitor.profile, version)


def prepare_monitors(settings: Settings, store: Store) -> dict[str, Monitor]:
    config = load_monitors(settings.monitors_path)
    return {spec.model_id: prepare_monitor(spec, store) for spec in config.models}


@contextlib.contextmanager
def kafka_bootstrap(settings: Settings) -> Iterator[str]:
    """The configured Kafka, or an embedded broker for the duration of the block."""
    if settings.kafka_bootstrap:
        yield settings.kafka_bootstrap
        return
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    log.warning(
        "no DRIFTLINE_KAFKA_BOOTSTRAP: started the embedded in-memory broker on %s", bootstrap
    )
    try:
        yield bootstrap
    finally:
        broker.stop()


def run_worker(settings: Settings) -> None:
    """Run until stopped (SIGINT/SIGTERM)."""
    store = Store.connect(settings.database_url)
    monitors = prepare_monitors(settings, store)
    with kafka_bootstrap(settings) as bootstrap:
        topics = Topics(settings.topic_prefix)
        ensure_topics(bootstrap, topics.all(), settings.topic_partitions)
        app, _ = create_app(settings, bootstrap, monitors, store)
        worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
        try:
            worker.execute_from_commandline()
        finally:
            store.close()
