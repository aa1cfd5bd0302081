"""Alertmanager notifications as triggers: deduplicated, cooled down, through the outbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from driftline.monitoring import Monitor
from driftline.schemas.alertmanager import Notification
from driftline.store import Store
from driftline.triggers.alerts import receive
from tests.unit.helpers import SECRET, make_monitor
from tests.unit.test_store import NOW


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store.connect(database_url)
    yield store
    store.close()


def monitor(cooldown: str = "0s") -> Monitor:
    base = make_monitor(targets=[{"url": "http://127.0.0.1:9/hook", "secret": SECRET}])
    spec = base.spec.model_copy(
        update={"policy": base.spec.policy.model_copy(update={"cooldown": float(cooldown[:-1])})}
    )
    return Monitor(spec, base.features, base.profile, 1)


def notification(*alerts: dict[str, Any]) -> Notification:
    """A version-4 body as Alertmanager sends it (camelCase keys)."""
    return Notification.model_validate(
        {
            "version": "4",
            "groupKey": '{}:{alertname="FeatureDrift"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "driftline",
            "groupLabels": {"alertname": "FeatureDrift"},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": list(alerts),
        }
    )


def alert(
    fingerprint: str = "a1b2c3",
    status: str = "firing",
    retrain: str | None = "true",
    model: str = "m",
    starts: str = "2024-03-01T11:00:00.000Z",
) -> dict[str, Any]:
    labels = {"alertname": "FeatureDrift", "model": model, "severity": "critical"}
    if retrain is not None:
        labels["driftline_retrain"] = retrain
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": "PSI of amount above threshold"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


def outcomes(
    store: Store, body: Notification, monitors: dict[str, Monitor], at: Any = NOW
) -> list[str]:
    return [o.outcome for o in receive(body, monitors, store, "driftline_retrain", "model", at)]


def test_two_identical_notifications_make_one_trigger(store: Store) -> None:
    monitors = {"m": monitor()}
    body = notification(alert())
    assert outcomes(store, body, monitors) == ["fired"]
    assert outcomes(store, body, monitors) == ["duplicate"]
    (trigger,) = store.triggers()
    assert (trigger["source"], trigger["status"], trigger["severity"]) == (
        "alertmanager",
        "fired",
        "critical",
    )
    data = trigger["event"]["data"]
    assert data["alert"]["fingerprint"] == "a1b2c3"
    assert data["alert"]["labels"]["model"] == "m"
    assert data["reference"]["version"] == 1
    (delivery,) = store.deliveries()
    assert (delivery["trigger_id"], delivery["status"]) == (trigger["trigger_id"], "pending")


def test_a_notification_sent_twice_at_once_makes_one_trigger(store: Store) -> None:
    """An Alertmanager HA pair sends each notification from both instances."""
    monitors = {"m": monitor()}
    body = notification(alert())
    results: list[str] = []
    barrier = threading.Barrier(4)

    def post() -> None:
        barrier.wait()
        results.extend(outcomes(store, body, monitors))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == ["duplicate"] * 3 + ["fired"]
    assert len(store.triggers()) == 1
    assert len(store.deliveries()) == 1


def test_resolved_unlabelled_and_unknown_alerts_trigger_nothing(store: Store) -> None:
    monitors = {"m": monitor()}
    body = notification(
        alert("r1", status="resolved"),
        alert("n1", retrain=None),
        alert("f1", retrain="false"),
        alert("u1", model="not-monitored"),
    )
    assert outcomes(store, body, monitors) == ["resolved", "ignored", "ignored", "ignored"]
    assert store.triggers() == []
    # A new start time is a new alert (it fired again after resolving).
    again = notification(alert("r1", starts="2024-03-01T12:00:00Z"))
    assert outcomes(store, again, monitors) == ["fired"]


def test_the_cooldown_suppresses_alerts_after_a_request(store: Store) -> None:
    monitors = {"m": monitor(cooldown="3600s")}
    assert outcomes(store, notification(alert("x1")), monitors) == ["fired"]
    later = NOW + timedelta(minutes=30)
    assert outcomes(store, notification(alert("x2")), monitors, later) == ["suppressed"]
    much_later = NOW + timedelta(hours=2)
    assert outcomes(store, notification(alert("x3")), monitors, much_later) == ["fired"]
    statuses = sorted(t["status"] for t in store.triggers())
    assert statuses == ["fired", "fired", "suppressed"]
    assert len(store.deliveries()) == 2  # suppressed triggers are recorded, not sent


def test_a_body_that_is_not_version_4_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="version"):
        Notification.model_validate({"version": "3", "alerts": []})
