"""The Faust app: topics, the (thin) agent, the outbox relay, and the web views."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import faust
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from faust.app.base import BootStrategy
from mode import Service
from prometheus_client import CollectorRegistry

from driftline.kafka_clients import faust_credentials, librdkafka_config
from driftline.monitoring import Monitor
from driftline.registry import (
    RecordKey,
    record_key,
    registry_changes,
    runnable,
    target_labels,
)
from driftline.schemas.monitors import MonitorSpec, Target
from driftline.settings import Settings
from driftline.store import DeliveryRow, Store
from driftline.stream.consumer import StreamConsumer
from driftline.stream.deadletter import DeadLetter
from driftline.stream.kafka_logs import LogInspector
from driftline.stream.metrics import DriftCollector, Metrics, OutcomeCollector
from driftline.stream.service import DriftService
from driftline.stream.topics import Topics
from driftline.stream.web import register_views
from driftline.triggers.delivery import Sender
from driftline.triggers.kafka import KafkaSender
from driftline.triggers.kubeflow import KubeflowSender
from driftline.triggers.relay import OutboxRelay
from driftline.triggers.webhook import WebhookSender

log = logging.getLogger(__name__)
#: How often readiness asks the broker for metadata.
BROKER_CHECK_S = 10.0
#: How often old window reports and finished deliveries are pruned.
PRUNE_INTERVAL_S = 3600.0


class RelayService(Service):
    """Runs the outbox relay every ``interval`` seconds, and at once when a trigger is
    stored, with its own HTTP session."""

    def __init__(
        self,
        service: DriftService,
        settings: Settings,
        bootstrap: str,
        file_specs: Mapping[str, MonitorSpec] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._service = service
        self._file_specs = dict(file_specs or {})
        self._settings = settings
        self._bootstrap = bootstrap
        self._interval = settings.relay_interval_s
        self._session: aiohttp.ClientSession | None = None
        self._kafka: KafkaSender | None = None

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession()
        # Lazy: no producer until a Kafka target (of the file or the API) needs one.
        self._kafka = KafkaSender(
            self._bootstrap, partitions=self._settings.topic_partitions, settings=self._settings
        )

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._kafka is not None:
            await asyncio.to_thread(self._kafka.close)

    @Service.task
    async def _deliver(self) -> None:
        assert self._session is not None
        metrics = self._service.metrics

        def count(delivery: DeliveryRow, target: Target | None, outcome: str) -> None:
            label = delivery.target_url if target is None else target.label
            metrics.deliveries.labels(delivery.target_type, label, outcome).inc()

        senders: dict[str, Sender] = {
            "webhook": WebhookSender(self._session),
            "kubeflow": KubeflowSender(self._session),
        }
        assert self._kafka is not None
        senders["kafka"] = self._kafka

        def targets() -> dict[str, Sequence[Target]]:
            """The targets (and secrets) this worker knows: the monitors file's, paused
            ones included, and those of the monitors running (they change at run time).
            A delivery is sent to the target it was recorded with; these only sign it."""
            known = {model_id: m.spec.targets for model_id, m in self._service.monitors.items()}
            return {**known, **{m: spec.targets for m, spec in self._file_specs.items()}}

        relay = OutboxRelay(self._service.store, senders, targets, count)
        woken = self._service.outbox_changed
        while not self.should_stop:
            woken.clear()
            try:
                self._service.relay_pass_started = time.monotonic()
                await relay.run_once()
                self._service.relay_last_pass = time.monotonic()
            except Exception:
                log.exception("outbox relay pass failed; retrying")
            # A new trigger wakes the relay at once; retries wait for the next pass.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), self._interval)

    @Service.timer(PRUNE_INTERVAL_S)
    async def _prune(self) -> None:
        """Delete window reports and finished deliveries past their retention."""
        now = datetime.now(UTC)
        day = timedelta(days=1)
        try:
            reports, deliveries = await asyncio.to_thread(
                self._service.store.prune,
                now - self._settings.report_retention_days * day,
                now - self._settings.delivery_retention_days * day,
            )
        except Exception:
            log.exception("pruning old rows failed; will retry")
            return
        if reports or deliveries:
            log.info("pruned %d window reports and %d deliveries", reports, deliveries)


class _Boot(BootStrategy):
    # The worker reads Kafka with StreamConsumer (driftline/stream/consumer.py); Faust
    # runs the web server, the timers, the relay and the dead-letter producer.
    enable_kafka_consumer = False


class _App(faust.App):
    BootStrategy = _Boot


def create_app(
    settings: Settings,
    bootstrap: str,
    monitors: dict[str, Monitor],
    store: Store,
    registry: CollectorRegistry | None = None,
    file_specs: Mapping[str, MonitorSpec] | None = None,
    known: Mapping[str, RecordKey] | None = None,
) -> tuple[faust.App, DriftService]:
    """The worker's Faust app and the service behind it, wired to ``bootstrap``.

    ``known``: the version of each stored monitor ``monitors`` were built from (by
    default, the versions stored now): the registry's changes since are applied.
    """
    topics = Topics(settings.topic_prefix)
    app = _App(
        settings.consumer_group,
        broker=[f"kafka://{host}" for host in bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        broker_client_id=settings.kafka_client_id,
        store="memory://",
        autodiscover=False,
        datadir=str(settings.data_dir),
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        topic_allow_declare=False,
        producer_acks=-1,
        web_application_options={"client_max_size": int(settings.api_max_upload_mb * 2**20)},
    )
    dlq = app.topic(topics.dlq, key_serializer="raw", value_serializer="raw")

    async def dead_letter(letters: Sequence[DeadLetter]) -> None:
        delay = 0.5
        while True:
            try:
                pending = [
                    await dlq.send(key=d.key, value=d.value, headers=d.headers()) for d in letters
                ]
                await asyncio.gather(*pending)
                return
            except Exception as exc:  # the batch must not be acked before its dead letters
                log.error("dead-lettering failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    registry = registry or CollectorRegistry()
    metrics = Metrics(registry)
    metrics.initialize({model_id: m.spec for model_id, m in monitors.items()})
    metrics.initialize_topics([topics.predictions, topics.labels])
    service = DriftService(
        monitors,
        store,
        metrics,
        dead_letter,
        settings.snapshot_every_events,
        settings.snapshot_every_s,
        home_topics={topics.labels: topics.predictions},
        logs=LogInspector(bootstrap, settings=settings),
    )

    # Predictions and labels (co-partitioned: partition N of each comes to one worker),
    # read in batches straight from aiokafka: see driftline/stream/consumer.py.
    stream = StreamConsumer(service, settings, bootstrap, [topics.predictions, topics.labels])

    def assigned_partitions() -> int:
        return len(stream.assignment())

    def consumer_lag() -> dict[tuple[str, int], int]:
        lag = {}
        consumer = stream.consumer
        for tp in stream.assignment():
            assert consumer is not None
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            stored = service.stored_offset(tp.topic, tp.partition)
            lag[(tp.topic, tp.partition)] = max(
                0, highwater - (-1 if stored is None else stored) - 1
            )
        return lag

    registry.register(
        DriftCollector(
            service.last_reports,
            service.watermarks,
            assigned_partitions,
            lambda: service.last_closed,
            consumer_lag,
        )
    )
    registry.register(OutcomeCollector(service.outcome_gauges))

    async def store_when_due() -> None:
        await service.flush()

    if settings.snapshot_every_s:  # a quiet stream still gets stored (and acked)
        app.timer(interval=min(1.0, settings.snapshot_every_s))(store_when_due)

    app.service(RelayService(service, settings, bootstrap, file_specs))  # type: ignore[arg-type]
    app.service(stream)  # type: ignore[arg-type]

    records = store.monitor_records()
    versions = dict(known) if known is not None else {r.model_id: record_key(r) for r in records}
    service.tenants = {r.model_id: r.tenant for r in records}

    async def refresh_monitors() -> None:
        """Apply monitors created, changed, paused or deleted since the last look."""
        try:
            records = await asyncio.to_thread(store.monitor_records)
        except Exception as exc:  # the store is down: the stream's retries report it
            log.warning("cannot read the monitors registry: %s", exc)
            return
        current = {r.model_id: r for r in records}
        changes: dict[str, Monitor | None] = {
            model_id: None for model_id in set(service.monitors) - set(current)
        }
        changed, deleted = registry_changes(versions, records)
        for record in changed:
            changes[record.model_id] = await asyncio.to_thread(
                runnable, record, store, file_specs or {}
            )
        if changes:
            await service.reconcile(changes)
        if deleted:  # its series leave /metrics (tenants' churn must not grow them)
            for model_id in deleted:
                service.metrics.forget_model(model_id)
            in_use = target_labels((r.spec for r in records), settings.topic_prefix)
            service.metrics.forget_targets(in_use)
        versions.clear()
        versions.update({r.model_id: record_key(r) for r in records})
        service.tenants = {r.model_id: r.tenant for r in records}

    app.timer(interval=settings.monitors_refresh_s)(refresh_monitors)

    admin = AdminClient(librdkafka_config(bootstrap, settings))

    async def check_broker() -> None:
        """Readiness: can the broker answer a metadata request?"""
        try:
            await asyncio.to_thread(admin.list_topics, timeout=5)
        except KafkaException as exc:
            if service.broker_healthy:
                log.error("the broker does not answer: %s", exc)
            service.broker_healthy = False
        else:
            service.broker_healthy = True
        finally:
            await asyncio.to_thread(admin.poll, 0)  # librdkafka's log lines, to logging

    app.timer(interval=BROKER_CHECK_S)(check_broker)

    register_views(app, service, settings)
    return app, service
