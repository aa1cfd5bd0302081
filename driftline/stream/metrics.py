"""Prometheus metrics on a registry passed in; drift gauges read the current state."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from driftline.schemas.reports import DriftReport


class DriftCollector(Collector):
    """Gauges of the last closed window of each model, read at scrape time."""

    def __init__(
        self,
        last_reports: Callable[[], Mapping[str, DriftReport | None]],
        watermarks: Callable[[], Mapping[str, float]],
        assigned_partitions: Callable[[], int] | None = None,
    ) -> None:
        self._last_reports = last_reports
        self._watermarks = watermarks
        self._assigned_partitions = assigned_partitions

    def collect(self) -> Iterable[GaugeMetricFamily]:
        psi = GaugeMetricFamily(
            "driftline_feature_psi",
            "PSI of the feature in the last closed window",
            labels=["model_id", "feature"],
        )
        js = GaugeMetricFamily(
            "driftline_feature_js",
            "Jensen-Shannon divergence (bits) of the feature in the last window",
            labels=["model_id", "feature"],
        )
        threshold = GaugeMetricFamily(
            "driftline_feature_threshold",
            "Threshold the feature's drift metric is compared with",
            labels=["model_id", "feature"],
        )
        drifted = GaugeMetricFamily(
            "driftline_window_drifted", "1 when the last closed window drifted", labels=["model_id"]
        )
        events = GaugeMetricFamily(
            "driftline_window_events", "Events in the last closed window", labels=["model_id"]
        )
        end = GaugeMetricFamily(
            "driftline_window_end_seconds",
            "Event time (epoch seconds) at which the last window ended",
            labels=["model_id"],
        )
        for model_id, report in self._last_reports().items():
            if report is None:
                continue
            for feature in report.features:
                psi.add_metric([model_id, feature.name], feature.psi)
                js.add_metric([model_id, feature.name], feature.js)
                threshold.add_metric([model_id, feature.name], feature.threshold)
            drifted.add_metric([model_id], float(report.drifted))
            events.add_metric([model_id], float(report.n))
            end.add_metric([model_id], report.window_end.timestamp())
        watermark = GaugeMetricFamily(
            "driftline_watermark_seconds",
            "Event-time watermark of the model (epoch seconds)",
            labels=["model_id"],
        )
        for model_id, value in self._watermarks().items():
            watermark.add_metric([model_id], value)
        yield from (psi, js, threshold, drifted, events, end, watermark)
        if self._assigned_partitions is not None:
            assigned = GaugeMetricFamily(
                "driftline_assigned_partitions", "Partitions this worker consumes now"
            )
            assigned.add_metric([], float(self._assigned_partitions()))
            yield assigned


class Metrics:
    """The worker's counters and histograms (names in base units, ``_total`` on counters)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_processed = Counter(
            "driftline_events_processed",
            "Events counted into windows",
            ["model_id"],
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
        self.events_skipped = Counter(
            "driftline_events_skipped",
            "Valid events of models no monitor watches",
            registry=registry,
        )
        self.windows_closed = Counter(
            "driftline_windows_closed",
            "Windows closed and reported",
            ["model_id", "drifted"],
            registry=registry,
        )
        self.triggers = Counter(
            "driftline_triggers",
            "Retraining events fired (one per drift episode)",
            ["model_id"],
            registry=registry,
        )
        self.deliveries = Counter(
            "driftline_deliveries",
            "Delivery attempts by target type and outcome",
            ["target_type", "outcome"],
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
