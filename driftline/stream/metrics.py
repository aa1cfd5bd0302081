"""Prometheus metrics on a registry passed in; drift gauges read the current state."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from driftline.schemas.monitors import MonitorSpec
from driftline.schemas.reports import DriftReport, PerformanceReport


class _Described(Collector):
    """A collector that names what it collects, so that a scrape asking for some names
    only (``/metrics?name[]=...``) does not run it for others."""

    def describe(self) -> Iterable[Metric]:
        for family in self.collect():
            family.samples = []
            yield family


class DriftCollector(_Described):
    """Gauges of the current state, read at scrape time: the last closed window of each
    model, watermarks, when windows last closed, partitions and consumer lag."""

    def __init__(
        self,
        last_reports: Callable[[], Mapping[str, DriftReport | None]],
        watermarks: Callable[[], Mapping[str, float]],
        assigned_partitions: Callable[[], int] | None = None,
        last_closed: Callable[[], Mapping[str, float]] | None = None,
        consumer_lag: Callable[[], Mapping[tuple[str, int], int]] | None = None,
    ) -> None:
        self._last_reports = last_reports
        self._watermarks = watermarks
        self._assigned_partitions = assigned_partitions
        self._last_closed = last_closed
        self._consumer_lag = consumer_lag

    def collect(self) -> Iterable[GaugeMetricFamily]:
        psi = GaugeMetricFamily(
            "driftline_feature_psi",
            "PSI of the feature in the last closed window",
            labels=["model", "feature"],
        )
        js = GaugeMetricFamily(
            "driftline_feature_js",
            "Jensen-Shannon divergence (bits) of the feature in the last window",
            labels=["model", "feature"],
        )
        threshold = GaugeMetricFamily(
            "driftline_feature_threshold",
            "Threshold the feature's drift metric is compared with",
            labels=["model", "feature"],
        )
        feature_drifted = GaugeMetricFamily(
            "driftline_feature_drifted",
            "1 when the feature drifted in the last closed window",
            labels=["model", "feature"],
        )
        drifted = GaugeMetricFamily(
            "driftline_window_drifted", "1 when the last closed window drifted", labels=["model"]
        )
        events = GaugeMetricFamily(
            "driftline_window_events", "Events in the last closed window", labels=["model"]
        )
        end = GaugeMetricFamily(
            "driftline_window_end_seconds",
            "Event time (epoch seconds) at which the last window ended",
            labels=["model"],
        )
        for model_id, report in self._last_reports().items():
            if report is None:
                continue
            for feature in report.features:
                psi.add_metric([model_id, feature.name], feature.psi)
                js.add_metric([model_id, feature.name], feature.js)
                threshold.add_metric([model_id, feature.name], feature.threshold)
                feature_drifted.add_metric([model_id, feature.name], float(feature.drifted))
            drifted.add_metric([model_id], float(report.drifted))
            events.add_metric([model_id], float(report.n))
            end.add_metric([model_id], report.window_end.timestamp())
        watermark = GaugeMetricFamily(
            "driftline_watermark_seconds",
            "Event-time watermark of the model (epoch seconds)",
            labels=["model"],
        )
        for model_id, value in self._watermarks().items():
            watermark.add_metric([model_id], value)
        yield from (psi, js, threshold, feature_drifted, drifted, events, end, watermark)
        if self._last_closed is not None:
            closed = GaugeMetricFamily(
                "driftline_last_window_close_timestamp_seconds",
                "Wall-clock time a window of the model last closed (worker start if none yet)",
                labels=["model"],
            )
            for model_id, value in self._last_closed().items():
                closed.add_metric([model_id], value)
            yield closed
        if self._assigned_partitions is not None:
            assigned = GaugeMetricFamily(
                "driftline_assigned_partitions", "Partitions this worker consumes now"
            )
            assigned.add_metric([], float(self._assigned_partitions()))
            yield assigned
        if self._consumer_lag is not None:
            lag = GaugeMetricFamily(
                "driftline_consumer_lag",
                "Messages of the partition not yet counted and stored (high watermark - position)",
                labels=["topic", "partition"],
            )
            for (topic, partition), value in sorted(self._consumer_lag().items()):
                lag.add_metric([topic, str(partition)], float(value))
            yield lag


@dataclass(frozen=True)
class OutcomeGauges:
    """What the collector reads of one labelled model at scrape time."""

    last: PerformanceReport | None
    pending: int
    detections: int


class OutcomeCollector(_Described):
    """Gauges of each labelled model: its last closed performance window, the joins
    waiting, and concept-drift detections so far (a counter kept in its snapshot)."""

    def __init__(self, outcomes: Callable[[], Mapping[str, OutcomeGauges]]) -> None:
        self._outcomes = outcomes

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        performance = GaugeMetricFamily(
            "driftline_model_performance",
            "Metric of the last closed performance window (labelled predictions)",
            labels=["model", "metric"],
        )
        reference = GaugeMetricFamily(
            "driftline_model_performance_reference",
            "The same metric on the reference data",
            labels=["model", "metric"],
        )
        coverage = GaugeMetricFamily(
            "driftline_label_coverage",
            "Share of the last performance window's predictions whose label came",
            labels=["model"],
        )
        degraded = GaugeMetricFamily(
            "driftline_performance_degraded",
            "1 when the last closed performance window was degraded",
            labels=["model"],
        )
        pending = GaugeMetricFamily(
            "driftline_label_join_pending",
            "Predictions and early labels waiting to be joined",
            labels=["model"],
        )
        detections = CounterMetricFamily(
            "driftline_concept_drift_detections",
            "Concept drift detected on the per-prediction loss",
            labels=["model"],
        )
        for model_id, state in self._outcomes().items():
            pending.add_metric([model_id], float(state.pending))
            detections.add_metric([model_id], float(state.detections))
            report = state.last
            if report is None:
                continue
            for name, value in report.metrics.items():
                if value is not None:
                    performance.add_metric([model_id, name], value)
            for name, value in (report.reference_metrics or {}).items():
                if value is not None:
                    reference.add_metric([model_id, name], value)
            if report.coverage is not None:
                coverage.add_metric([model_id], report.coverage)
            degraded.add_metric([model_id], float(report.drifted))
        yield from (performance, reference, coverage, degraded, pending, detections)


class Metrics:
    """The worker's counters and histograms (names in base units, ``_total`` on counters)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_processed = Counter(
            "driftline_events_processed",
            "Events counted into windows",
            ["model"],
            registry=registry,
        )
        self.events_dead_lettered = Counter(
            "driftline_events_dead_lettered",
            "Events sent to the dead-letter topic, by reason",
            ["reason"],
            registry=registry,
        )
        self.events_already_counted = Counter(
            "driftline_events_already_counted",
            "Events redelivered after a restart that the stored state already counts",
            registry=registry,
        )
        self.events_late = Counter(
            "driftline_events_late",
            "Events behind the allowed lateness (dead-lettered with reason late)",
            ["model"],
            registry=registry,
        )
        self.events_duplicate = Counter(
            "driftline_events_duplicate",
            "Events dropped as duplicates of counted ones (window.deduplicate)",
            ["model"],
            registry=registry,
        )
        self.events_skipped = Counter(
            "driftline_events_skipped",
            "Valid events of models no monitor watches",
            registry=registry,
        )
        self.windows_closed = Counter(
            "driftline_windows_closed",
            "Windows closed and reported",
            ["model", "drifted"],
            registry=registry,
        )
        self.labels = Counter(
            "driftline_labels",
            "Labels by outcome: joined, or refused (label_duplicate, label_expired, ...)",
            ["model", "outcome"],
            registry=registry,
        )
        self.performance_windows = Counter(
            "driftline_performance_windows_closed",
            "Performance windows closed and reported",
            ["model", "degraded"],
            registry=registry,
        )
        self.triggers = Counter(
            "driftline_triggers",
            "Retraining requests by source (drift, alertmanager) and status (fired, suppressed)",
            ["model", "source", "status"],
            registry=registry,
        )
        self.deliveries = Counter(
            "driftline_deliveries",
            "Delivery attempts by target type, target and outcome (delivered, retry, dead)",
            ["target_type", "target", "outcome"],
            registry=registry,
        )
        self.alerts = Counter(
            "driftline_alertmanager_alerts",
            "Alerts received from Alertmanager, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.offset_resets = Counter(
            "driftline_offset_resets",
            "Stored offsets found to belong to another log (a fresh broker, a re-created "
            "topic, another cluster) and reset: the partition is read from its start",
            ["topic"],
            registry=registry,
        )
        self.store_errors = Counter(
            "driftline_store_errors", "Failed writes to the store (retried)", registry=registry
        )
        self.batch_seconds = Histogram(
            "driftline_batch_processing_seconds",
            "Time to process one batch of messages",
            registry=registry,
        )

    def forget_model(self, model_id: str) -> None:
        """Remove every series of a deleted monitor: label cardinality must not grow with
        the monitors tenants create and delete."""
        for counter, names in (
            (self.events_processed, ("model",)),
            (self.events_late, ("model",)),
            (self.events_duplicate, ("model",)),
            (self.windows_closed, ("model", "drifted")),
            (self.labels, ("model", "outcome")),
            (self.performance_windows, ("model", "degraded")),
            (self.triggers, ("model", "source", "status")),
        ):
            _remove_where(counter, names, lambda labels: labels["model"] == model_id)

    def forget_targets(self, keep: Collection[tuple[str, str]]) -> None:
        """Remove the delivery series of targets (type, label) no monitor has any more."""
        _remove_where(
            self.deliveries,
            ("target_type", "target", "outcome"),
            lambda labels: (labels["target_type"], labels["target"]) not in keep,
        )

    def initialize_topics(self, topics: Iterable[str]) -> None:
        """The consumed topics' series at zero (as ``initialize`` does for models)."""
        for topic in topics:
            self.offset_resets.labels(topic)

    def initialize(self, monitors: Mapping[str, MonitorSpec]) -> None:
        """Create every known label set at zero, so that ``rate()`` and ``increase()`` see
        the first event of a series (a series born at 1 has no increase to Prometheus)."""
        for reason in DEAD_LETTER_REASONS:
            self.events_dead_lettered.labels(reason)
        for outcome in ALERT_OUTCOMES:
            self.alerts.labels(outcome)
        for model_id, spec in monitors.items():
            self.events_processed.labels(model_id)
            self.events_late.labels(model_id)
            self.events_duplicate.labels(model_id)
            for drifted in ("true", "false"):
                self.windows_closed.labels(model_id, drifted)
            if spec.labels is not None:
                for outcome in LABEL_OUTCOMES:
                    self.labels.labels(model_id, outcome)
                for degraded in ("true", "false"):
                    self.performance_windows.labels(model_id, degraded)
            for source in ("drift", "performance", "alertmanager"):
                for status in ("fired", "suppressed"):
                    self.triggers.labels(model_id, source, status)
            for target in spec.targets:
                for outcome in ("delivered", "retry", "dead"):
                    self.deliveries.labels(target.type, target.label, outcome)


def _remove_where(
    counter: Counter, names: tuple[str, ...], doomed: Callable[[dict[str, str]], bool]
) -> None:
    """Remove the series of ``counter`` (labelled ``names``, in order) whose labels
    ``doomed`` picks, found in what it exports."""
    chosen = {
        tuple(sample.labels[name] for name in names)
        for family in counter.collect()
        for sample in family.samples
        if all(name in sample.labels for name in names) and doomed(sample.labels)
    }
    for values in chosen:
        counter.remove(*values)


#: Why events are dead-lettered (the ``driftline-reason`` header).
DEAD_LETTER_REASONS = (
    "decode",
    "schema",
    "feature_type",
    "late",
    "future",
    "processing_error",
    "label_schema",
    "label_type",
    "label_duplicate",
    "label_expired",
    "label_unknown",
    "labels_not_configured",
)
#: What became of a label (``driftline_labels_total``).
LABEL_OUTCOMES = (
    "joined",
    "late",
    "label_type",
    "label_duplicate",
    "label_expired",
    "label_unknown",
)
ALERT_OUTCOMES = ("fired", "suppressed", "duplicate", "resolved", "ignored")
