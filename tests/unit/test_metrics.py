"""The worker's metrics: a deleted monitor's series leave the registry."""

from prometheus_client import CollectorRegistry, generate_latest

from driftline.schemas.monitors import MonitorSpec
from driftline.stream.metrics import Metrics


def _spec(model_id: str, host: str) -> MonitorSpec:
    return MonitorSpec.model_validate(
        {
            "model_id": model_id,
            "reference": {"stored": "latest"},
            "window": {"duration": "1m"},
            "labels": {"task": "regression"},
            "targets": [{"type": "kafka", "topic": f"{host}.retraining"}],
        }
    )


def test_a_deleted_monitor_and_its_targets_leave_the_metrics() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.initialize({"a": _spec("a", "ta"), "b": _spec("b", "tb")})
    metrics.events_processed.labels("b").inc(5)
    metrics.deliveries.labels("kafka", "tb.retraining", "delivered").inc()
    before = generate_latest(registry).decode()
    assert 'model="b"' in before
    assert 'target="tb.retraining"' in before
    metrics.forget_model("b")
    metrics.forget_targets({("kafka", "ta.retraining")})
    after = generate_latest(registry).decode()
    assert 'model="b"' not in after
    assert 'target="tb.retraining"' not in after
    assert 'model="a"' in after
    assert 'target="ta.retraining"' in after
    metrics.events_processed.labels("b").inc()  # a monitor of that id again starts at 0
    assert 'driftline_events_processed_total{model="b"} 1.0' in generate_latest(registry).decode()
