"""The store's operations, each one transaction. Synchronous: the worker calls them in a thread."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, delete, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from driftline.detectors.profile import ReferenceProfile
from driftline.exceptions import ConfigError, StoreError
from driftline.schemas.monitors import MonitorSpec, WebhookTarget
from driftline.schemas.reports import DriftReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.store.migrate import upgrade
from driftline.store.models import (
    ConsumerOffsetRow,
    DeliveryRowModel,
    DisabledEndpointRow,
    ModelStateRow,
    MonitorRow,
    ReferenceProfileRow,
    TriggerRow,
    WindowReportRow,
)


def _utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A model's state as of a batch, and the partition its events come from."""

    topic: str
    partition: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A due delivery, detached from its session."""

    id: int
    trigger_id: str
    model_id: str
    target_type: str
    target_url: str
    attempts: int
    payload: str


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL and a busy timeout."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"DRIFTLINE_DATABASE_URL {url!r} is not a database URL: {exc}") from None
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    connect_args = {"connect_timeout": 5} if parsed.get_backend_name() == "postgresql" else {}
    try:
        engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except ImportError as exc:
        hint = (
            "pip install 'driftline[postgres]'"
            if parsed.get_backend_name() == "postgresql"
            else f"install the database driver for {parsed.drivername}"
        )
        raise ConfigError(
            f"DRIFTLINE_DATABASE_URL needs a driver that is not installed ({exc.name}): {hint}"
        ) from None
    if parsed.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


class Store:
    """Monitors, reference profiles, window reports, triggers and their deliveries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def connect(cls, url: str) -> Store:
        store = cls(create_store_engine(url))
        store.create_schema()
        return store

    def create_schema(self) -> None:
        """Apply the schema migrations (safe when several workers start at once)."""
        try:
            upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate the schema of {self.engine.url!r}: {exc}") from exc

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(select(1))
            return True
        except SQLAlchemyError:
            return False

    def close(self) -> None:
        self.engine.dispose()

    # -- monitors and references -------------------------------------------------------

    def save_profile(
        self, model_id: str, profile: ReferenceProfile, source: str, now: datetime
    ) -> int:
        """Store a profile and return its version; an identical profile keeps its version."""
        fingerprint = profile.fingerprint()
        with self._sessions.begin() as session:
            existing = session.scalar(
                select(ReferenceProfileRow.version).where(
                    ReferenceProfileRow.model_id == model_id,
                    ReferenceProfileRow.fingerprint == fingerprint,
                )
            )
            if existing is not None:
                return existing
            latest = (
                session.scalar(
                    select(func.max(ReferenceProfileRow.version)).where(
                        ReferenceProfileRow.model_id == model_id
                    )
                )
                or 0
            )
            session.add(
                ReferenceProfileRow(
                    model_id=model_id,
                    version=latest + 1,
                    fingerprint=fingerprint,
                    source=source,
                    n_rows=profile.n_rows,
                    profile=profile.to_state(),
                    created_at=now,
                )
            )
            return latest + 1

    def load_profile(
        self, model_id: str, version: int | Literal["latest"]
    ) -> tuple[int, ReferenceProfile] | None:
        query = select(ReferenceProfileRow).where(ReferenceProfileRow.model_id == model_id)
        if version == "latest":
            query = query.order_by(ReferenceProfileRow.version.desc()).limit(1)
        else:
            query = query.where(ReferenceProfileRow.version == version)
        with self._sessions() as session:
            row = session.scalar(query)
            if row is None:
                return None
            return row.version, ReferenceProfile.from_state(row.profile)

    def save_monitor(self, spec: MonitorSpec, reference_version: int | None, now: datetime) -> None:
        with self._sessions.begin() as session:
            session.merge(
                MonitorRow(
                    model_id=spec.model_id,
                    spec=spec.model_dump(mode="json"),
                    reference_version=reference_version,
                    updated_at=now,
                )
            )

    # -- the stream's writes -----------------------------------------------------------

    def record_results(
        self,
        reports: Sequence[DriftReport],
        triggers: Sequence[RetrainingEvent],
        targets: Mapping[str, Sequence[WebhookTarget]],
        now: datetime,
        snapshots: Mapping[str, Snapshot] | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        """Window reports, triggers, their outbox rows, model snapshots and consumed offsets,
        in one transaction: after a crash, either all of a batch's effects are stored or none.

        A window reported again (reprocessing) replaces its report; a trigger already
        recorded is not recorded or delivered again.
        """
        with self._sessions.begin() as session:
            for report in reports:
                session.execute(
                    delete(WindowReportRow).where(
                        WindowReportRow.model_id == report.model_id,
                        WindowReportRow.segment == (report.segment or ""),
                        WindowReportRow.window_end == report.window_end,
                    )
                )
                session.add(
                    WindowReportRow(
                        model_id=report.model_id,
                        segment=report.segment or "",
                        window_start=report.window_start,
                        window_end=report.window_end,
                        n=report.n,
                        drifted=report.drifted,
                        report=report.model_dump(mode="json"),
                        created_at=now,
                    )
                )
            for trigger in triggers:
                self._add_trigger(session, trigger, targets.get(trigger.data.model_id, ()), now)
            for model_id, snapshot in (snapshots or {}).items():
                session.merge(
                    ModelStateRow(
                        model_id=model_id,
                        topic=snapshot.topic,
                        partition=snapshot.partition,
                        state=snapshot.state,
                        updated_at=now,
                    )
                )
            for (topic, partition), offset in (offsets or {}).items():
                session.merge(
                    ConsumerOffsetRow(
                        topic=topic, partition=partition, offset=offset, updated_at=now
                    )
                )

    def _add_trigger(
        self,
        session: Session,
        trigger: RetrainingEvent,
        targets: Sequence[WebhookTarget],
        now: datetime,
    ) -> None:
        data = trigger.data
        if session.get(TriggerRow, data.trigger_id) is not None:
            return
        session.add(
            TriggerRow(
                trigger_id=data.trigger_id,
                model_id=data.model_id,
                window_end=data.window_end,
                payload=trigger.model_dump_json(),
                created_at=now,
            )
        )
        for target in targets:
            session.add(
                DeliveryRowModel(
                    trigger_id=data.trigger_id,
                    model_id=data.model_id,
                    target_type=target.type,
                    target_url=str(target.url),
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )

    def load_partition(
        self, topic: str, partition: int
    ) -> tuple[int | None, dict[str, dict[str, Any]]]:
        """The last stored offset of a partition and the snapshots of the models it carries."""
        with self._sessions() as session:
            offset = session.scalar(
                select(ConsumerOffsetRow.offset).where(
                    ConsumerOffsetRow.topic == topic, ConsumerOffsetRow.partition == partition
                )
            )
            rows = session.scalars(
                select(ModelStateRow).where(
                    ModelStateRow.topic == topic, ModelStateRow.partition == partition
                )
            )
            return offset, {row.model_id: row.state for row in rows}

    # -- the relay's reads and writes --------------------------------------------------

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[DeliveryRow]:
        query = (
            select(DeliveryRowModel, TriggerRow.payload)
            .join(TriggerRow, TriggerRow.trigger_id == DeliveryRowModel.trigger_id)
            .where(DeliveryRowModel.status == "pending", DeliveryRowModel.next_attempt_at <= now)
            .order_by(DeliveryRowModel.next_attempt_at)
            .limit(limit)
        )
        with self._sessions() as session:
            return [
                DeliveryRow(
                    row.id,
                    row.trigger_id,
                    row.model_id,
                    row.target_type,
                    row.target_url,
                    row.attempts,
                    payload,
                )
                for row, payload in session.execute(query)
            ]

    def record_attempt(
        self,
        delivery_id: int,
        *,
        status: str,
        http_status: int | None,
        error: str | None,
        latency_s: float | None,
        next_attempt_at: datetime,
        now: datetime,
    ) -> None:
        with self._sessions.begin() as session:
            row = session.get_one(DeliveryRowModel, delivery_id)
            row.attempts += 1
            row.status = status
            row.last_status = http_status
            row.last_error = error
            row.last_latency_s = latency_s
            row.next_attempt_at = next_attempt_at
            if status == "delivered":
                row.delivered_at = now

    def prune(self, reports_before: datetime, deliveries_before: datetime) -> tuple[int, int]:
        """Delete old window reports and finished deliveries; returns how many of each.

        Pending deliveries, triggers and reference profiles are never pruned.
        """
        with self._sessions.begin() as session:
            reports = session.execute(
                delete(WindowReportRow).where(WindowReportRow.created_at < reports_before)
            )
            deliveries = session.execute(
                delete(DeliveryRowModel).where(
                    DeliveryRowModel.status.in_(("delivered", "dead")),
                    DeliveryRowModel.created_at < deliveries_before,
                )
            )
            return int(reports.rowcount or 0), int(deliveries.rowcount or 0)  # type: ignore[attr-defined]

    def disable_endpoint(self, url: str, reason: str, now: datetime) -> None:
        """Stop sending to ``url`` (it answered 410 Gone); kept until removed from the table."""
        with self._sessions.begin() as session:
            if session.get(DisabledEndpointRow, url) is None:
                session.add(DisabledEndpointRow(url=url, reason=reason, disabled_at=now))

    def disabled_endpoints(self) -> dict[str, str]:
        """Disabled endpoint URLs and why."""
        with self._sessions() as session:
            return {row.url: row.reason for row in session.scalars(select(DisabledEndpointRow))}

    def replay_delivery(self, delivery_id: int, now: datetime) -> dict[str, Any] | None:
        """Make a dead delivery pending again (same id, same webhook-id); None if unknown.

        Raises ``ValueError`` unless the delivery is dead.
        """
        with self._sessions.begin() as session:
            row = session.get(DeliveryRowModel, delivery_id)
            if row is None:
                return None
            if row.status != "dead":
                raise ValueError(f"delivery {delivery_id} is {row.status}; only dead ones replay")
            row.status, row.attempts, row.next_attempt_at = "pending", 0, now
        return next(d for d in self.deliveries(row.trigger_id) if d["id"] == delivery_id)

    # -- queries -----------------------------------------------------------------------

    def reports(
        self, model_id: str | None = None, limit: int = 20, segment: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest window reports, newest first: the whole model's, or one segment's."""
        query = (
            select(WindowReportRow.report)
            .where(WindowReportRow.segment == (segment or ""))
            .order_by(WindowReportRow.window_end.desc(), WindowReportRow.id.desc())
        )
        if model_id is not None:
            query = query.where(WindowReportRow.model_id == model_id)
        with self._sessions() as session:
            return list(session.scalars(query.limit(limit)))

    def deliveries(self, trigger_id: str | None = None) -> list[dict[str, Any]]:
        query = select(DeliveryRowModel).order_by(DeliveryRowModel.id)
        if trigger_id is not None:
            query = query.where(DeliveryRowModel.trigger_id == trigger_id)
        with self._sessions() as session:
            return [
                {
                    "id": r.id,
                    "trigger_id": r.trigger_id,
                    "model_id": r.model_id,
                    "target_type": r.target_type,
                    "target_url": r.target_url,
                    "status": r.status,
                    "attempts": r.attempts,
                    "last_status": r.last_status,
                    "last_error": r.last_error,
                    "created_at": _utc(r.created_at).isoformat(),
                    "delivered_at": _utc(r.delivered_at).isoformat() if r.delivered_at else None,
                }
                for r in session.scalars(query)
            ]

    def triggers(self, model_id: str | None = None) -> list[dict[str, Any]]:
        query = select(TriggerRow).order_by(TriggerRow.created_at)
        if model_id is not None:
            query = query.where(TriggerRow.model_id == model_id)
        with self._sessions() as session:
            return [
                {
                    "trigger_id": r.trigger_id,
                    "model_id": r.model_id,
                    "window_end": _utc(r.window_end).isoformat(),
                    "payload": r.payload,
                }
                for r in session.scalars(query)
            ]
