"""Alertmanager notifications as retraining triggers, through the same outbox.

A firing alert labelled ``<trigger label>="true"`` and naming a monitored model in its
``<model label>`` becomes a retraining request, once per fingerprint and start time
(Alertmanager resends notifications, and an HA pair sends each one twice). The model's
``cooldown`` applies, in wall-clock time since its last request. Resolved alerts and
alerts without the labels are recorded and trigger nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from driftline.monitoring import Monitor
from driftline.schemas.alertmanager import Alert, Notification
from driftline.schemas.retraining import AlertInfo, ReferenceInfo, RetrainingData, RetrainingEvent
from driftline.store import Store


@dataclass(frozen=True, slots=True)
class AlertOutcome:
    fingerprint: str
    status: str
    model_id: str | None
    #: fired | suppressed | duplicate | resolved | ignored
    outcome: str
    trigger_id: str | None


def alert_trigger(alert: Alert, monitor: Monitor, now: datetime) -> RetrainingEvent:
    """The retraining event of a firing alert (its severity label, or ``warning``)."""
    trigger_id = alert.trigger_id()
    return RetrainingEvent(
        timestamp=now,
        data=RetrainingData(
            trigger_id=trigger_id,
            episode_id=trigger_id,
            episode_started_at=alert.starts_at,
            source="alertmanager",
            severity=alert.labels.get("severity", "warning"),
            model_id=monitor.model_id,
            model_version=None,
            reference=ReferenceInfo(
                version=monitor.reference_version, fingerprint=monitor.fingerprint
            ),
            window_start=None,
            window_end=None,
            n=None,
            consecutive_drifted_windows=0,
            drifted_features=[],
            alert=AlertInfo(
                fingerprint=alert.fingerprint,
                starts_at=alert.starts_at,
                labels=alert.labels,
                annotations=alert.annotations,
                generator_url=alert.generator_url,
            ),
        ),
    )


def receive(
    notification: Notification,
    monitors: Mapping[str, Monitor],
    store: Store,
    trigger_label: str,
    model_label: str,
    now: datetime,
) -> list[AlertOutcome]:
    """Record each alert of a notification, turning the labelled firing ones into triggers."""
    outcomes = []
    for alert in notification.alerts:
        model_id = alert.labels.get(model_label)
        monitor = monitors.get(model_id) if model_id is not None else None
        wanted = alert.labels.get(trigger_label, "").lower() == "true"
        trigger = None
        if alert.status == "firing" and wanted and monitor is not None:
            trigger = alert_trigger(alert, monitor, now)
        outcome = store.record_alert(
            fingerprint=alert.fingerprint,
            starts_at=alert.starts_at,
            status=alert.status,
            model_id=model_id,
            labels=alert.labels,
            trigger=trigger,
            cooldown_s=0.0 if monitor is None else monitor.spec.policy.cooldown,
            targets=() if monitor is None else monitor.spec.targets,
            now=now,
            tenant=None if monitor is None else monitor.spec.tenant,
        )
        fired = trigger is not None and outcome in ("fired", "suppressed")
        outcomes.append(
            AlertOutcome(
                alert.fingerprint,
                alert.status,
                model_id,
                outcome,
                trigger.data.trigger_id if trigger is not None and fired else None,
            )
        )
    return outcomes
