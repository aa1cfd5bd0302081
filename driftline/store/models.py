"""Tables of the store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")


def as_utc(moment: datetime) -> datetime:
    """A stored time as UTC (SQLite returns naive datetimes; everything stored is UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONType,
        datetime: DateTime(timezone=True),
    }


class MonitorRow(Base):
    """A monitor: from the monitors file (``source = file``) or the API (``api``).

    Workers poll this table and apply a row whose ``version`` changed: created,
    updated, paused, resumed or deleted monitors take effect without a restart.
    """

    __tablename__ = "monitors"

    model_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    source: Mapped[str] = mapped_column(String(16))
    paused: Mapped[bool]
    version: Mapped[int]
    spec: Mapped[dict[str, Any]]
    #: The active reference profile version (None: none uploaded yet).
    reference_version: Mapped[int | None]
    updated_at: Mapped[datetime]
    #: When this monitor was made: one deleted and made again is another monitor.
    created_at: Mapped[datetime]


class DeletedMonitorRow(Base):
    """A monitor deleted (through the API or the CLI, or removed from the monitors file),
    until a monitor of that model is made again: a trigger of it recorded meanwhile (a
    worker runs a monitor until it next looks at the registry) is not delivered."""

    __tablename__ = "deleted_monitors"

    model_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    deleted_at: Mapped[datetime]


class ReferenceProfileRow(Base):
    """A reference profile, versioned per model; equal content keeps one version."""

    __tablename__ = "reference_profiles"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        UniqueConstraint("model_id", "fingerprint"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(256))
    version: Mapped[int]
    fingerprint: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    n_rows: Mapped[int]
    profile: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class WindowReportRow(Base):
    """One closed window's drift report."""

    __tablename__ = "window_reports"
    __table_args__ = (UniqueConstraint("model_id", "segment", "window_end"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(256))
    #: "" for the model's whole traffic, else the segment's name.
    segment: Mapped[str] = mapped_column(String(256), default="")
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    n: Mapped[int]
    drifted: Mapped[bool]
    report: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class PerformanceReportRow(Base):
    """One closed performance window (labelled predictions)."""

    __tablename__ = "performance_reports"
    __table_args__ = (UniqueConstraint("model_id", "window_end"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(256))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    labelled: Mapped[int]
    degraded: Mapped[bool]
    report: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class ModelStateRow(Base):
    """The latest snapshot of a model's windows and policy, and the partition it came from."""

    __tablename__ = "model_states"

    model_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    topic: Mapped[str] = mapped_column(String(256))
    partition: Mapped[int]
    state: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class ConsumerOffsetRow(Base):
    """The last offset of each partition whose events are counted in the snapshots, and
    the log it belongs to (``<cluster id>/<topic id>``; None: recorded before logs were
    named, or the broker names neither). -1: none of that log counted yet."""

    __tablename__ = "consumer_offsets"

    topic: Mapped[str] = mapped_column(String(256), primary_key=True)
    partition: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    offset: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]
    log_id: Mapped[str | None] = mapped_column(String(256))


class TriggerRow(Base):
    """A retraining request (fired, once per episode) or one the cooldown suppressed."""

    __tablename__ = "triggers"

    trigger_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(256), index=True)
    episode_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # fired | suppressed
    source: Mapped[str] = mapped_column(String(16))  # drift | performance | alertmanager
    severity: Mapped[str] = mapped_column(String(64))
    #: The window that fired; for alert triggers, when the alert started.
    window_end: Mapped[datetime]
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class DeliveryRowModel(Base):
    """The outbox: one delivery of a trigger to one target, with its attempts so far.

    ``target`` is the target as it was when the trigger fired, without its secrets (a
    webhook names where its secret is: ``secret_env``, or its monitor in the monitors
    file), so pausing or editing the monitor changes nothing of it. A relay sends only
    a delivery whose lease it holds (``lease_owner`` until ``lease_expires_at``).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("trigger_id", "target_url"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trigger_id: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(256), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | dead | cancelled
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_latency_s: Mapped[float | None] = mapped_column(Float)
    #: What the target answered with: a Kubeflow run id, a Kafka partition and offset.
    external_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    #: The target spec, without secrets (None: recorded before deliveries carried it).
    target: Mapped[dict[str, Any] | None]
    #: The tenant of the monitor when the trigger fired.
    tenant: Mapped[str | None] = mapped_column(String(128), index=True)
    #: When the monitor that fired it was made (None: recorded before this was kept).
    monitor_made_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    #: Why it was cancelled (its monitor deleted).
    reason: Mapped[str | None] = mapped_column(Text)


class DeliveryAttemptRow(Base):
    """One attempt of one delivery: when, the outcome, the status, latency and error."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(Integer, index=True)
    attempt: Mapped[int]
    attempted_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))  # delivered | retry | dead
    http_status: Mapped[int | None]
    latency_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class AlertNotificationRow(Base):
    """An Alertmanager alert received, once per fingerprint, start and status."""

    __tablename__ = "alert_notifications"
    __table_args__ = (UniqueConstraint("fingerprint", "starts_at", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(128))
    starts_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))  # firing | resolved
    model_id: Mapped[str | None] = mapped_column(String(256))
    #: fired | suppressed | resolved | ignored
    outcome: Mapped[str] = mapped_column(String(16))
    trigger_id: Mapped[str | None] = mapped_column(String(64))
    labels: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]


class DisabledEndpointRow(Base):
    """A webhook endpoint that answered 410 Gone: nothing more is sent to it."""

    __tablename__ = "disabled_endpoints"

    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    disabled_at: Mapped[datetime]


class ApiKeyRow(Base):
    """An API key: one tenant, one scope; only a hash of its secret is stored."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    scope: Mapped[str] = mapped_column(String(16))  # read | write | admin
    name: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
