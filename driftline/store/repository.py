"""The store's operations, each one transaction. Synchronous: the worker calls them in a thread."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import Engine, create_engine, delete, event, func, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from driftline.detectors.profile import ReferenceProfile
from driftline.exceptions import ConfigError, StoreError
from driftline.schemas.monitors import MonitorSpec, Target
from driftline.schemas.reports import DriftReport, PerformanceReport
from driftline.schemas.retraining import RetrainingEvent
from driftline.store.migrate import upgrade
from driftline.store.models import (
    AlertNotificationRow,
    ApiKeyRow,
    ConsumerOffsetRow,
    DeliveryAttemptRow,
    DeliveryRowModel,
    ModelStateRow,
    MonitorRow,
    PerformanceReportRow,
    ReferenceProfileRow,
    TriggerRow,
    WindowReportRow,
    as_utc,
)
from driftline.store.offsets import write_offsets
from driftline.store.outbox import (
    FINISHED,
    DeliveryRow,
    Outbox,
    add_trigger,
    cancel_pending,
    deleted_reason,
    mark_deleted,
    undelete,
)

__all__ = ["DeliveryRow", "MonitorConflict", "MonitorRecord", "Snapshot", "Store"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A model's state as of a batch, and the partition its events come from."""

    topic: str
    partition: int
    state: dict[str, Any]


class MonitorConflict(ValueError):
    """The monitor cannot change that way (exists, unknown reference, managed by the file)."""


@dataclass(frozen=True, slots=True)
class MonitorRecord:
    """A stored monitor: its spec, where it came from, and what workers should run."""

    model_id: str
    tenant: str
    source: str
    paused: bool
    version: int
    spec: dict[str, Any]
    reference_version: int | None
    updated_at: datetime
    #: When this monitor was made (one deleted and made again is another monitor).
    created_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "tenant": self.tenant,
            "source": self.source,
            "paused": self.paused,
            "version": self.version,
            "reference_version": self.reference_version,
            "updated_at": self.updated_at.isoformat(),
            "created_at": None if self.created_at is None else self.created_at.isoformat(),
            # Stored specs never hold secrets: model_dump masks SecretStr fields.
            "spec": self.spec,
        }


def _record(row: MonitorRow) -> MonitorRecord:
    return MonitorRecord(
        row.model_id,
        row.tenant,
        row.source,
        row.paused,
        row.version,
        row.spec,
        row.reference_version,
        as_utc(row.updated_at),
        as_utc(row.created_at),
    )


def _editable(row: MonitorRow) -> None:
    if row.source == "file":
        raise MonitorConflict(
            f"model_id: {row.model_id!r} is defined in the monitors file; change it there"
        )


def _upsert(
    session: Session,
    row: type[ModelStateRow | ConsumerOffsetRow],
    keys: list[str],
    values: list[dict[str, Any]],
    keep_if_null: Sequence[str] = (),
) -> None:
    """Insert ``values``, replacing rows with the same ``keys``, in one statement (no
    read of the rows replaced: a snapshot is large, and ``merge`` loaded each one).

    The values go as parameters (executemany), not into the statement: SQLAlchemy's
    statement cache would keep a statement's values alive, a worker's every snapshot.
    """
    if not values:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(row)
    replaced: dict[str, Any] = {c: statement.excluded[c] for c in values[0] if c not in keys}
    for column in keep_if_null:  # a value not known this time keeps the stored one
        replaced[column] = func.coalesce(statement.excluded[column], getattr(row, column))
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=replaced), values)


def _json_dumps(value: Any) -> str:
    """JSON columns through orjson: the worker writes every closed window's report and
    every model's snapshot, and the standard library's encoder was a seventh of a busy
    many-model worker's time (py-spy). A NaN becomes null, as PostgreSQL requires;
    driftline's documents hold None for a missing number."""
    return orjson.dumps(value, option=_JSON_OPTIONS).decode()


def _json_loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN, as the standard library wrote it into SQLite
        return json.loads(text)


_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


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
        engine = create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args=connect_args,
            json_serializer=_json_dumps,
            json_deserializer=_json_loads,
        )
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


def check_existing_database(url: str) -> None:
    """Raise a ``ConfigError`` naming ``url`` unless a driftline database is there."""
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    hint = (
        "start `driftline worker` there once, run `driftline db upgrade`, or set "
        "DRIFTLINE_DATABASE_URL to the worker's database"
    )
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or not Path(database).is_file():
            where = f" ({Path(database).resolve()})" if database not in ("", ":memory:") else ""
            raise ConfigError(f"no driftline database at {shown}{where}: {hint}")
    engine = create_store_engine(url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
    except SQLAlchemyError as exc:
        raise ConfigError(f"cannot open the database {shown}: {exc}; {hint}") from None
    finally:
        engine.dispose()
    if "alembic_version" not in tables:
        raise ConfigError(f"{shown} has no driftline schema: {hint}")


class Store(Outbox):
    """Monitors, reference profiles, window reports, triggers and their deliveries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def connect(cls, url: str) -> Store:
        """The store at ``url``, created (or migrated) if needed: the worker's way in."""
        store = cls(create_store_engine(url))
        store.create_schema()
        return store

    @classmethod
    def open_existing(cls, url: str) -> Store:
        """The driftline store at ``url`` (migrated if older); a ``ConfigError`` naming the
        URL when there is none: a command that reads the store must not create an empty
        one (a SQLite URL would make a new file wherever it runs)."""
        check_existing_database(url)
        return cls.connect(url)

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
        """Seed a monitor of the monitors file: the file wins over earlier rows of it.

        Its version moves on only when the spec or reference changed (so workers reload
        it only then); a pause set through the API stays.
        """
        body = spec.model_dump(mode="json")
        with self._sessions.begin() as session:
            row = session.get(MonitorRow, spec.model_id)
            if row is None:
                undelete(session, spec.model_id)
                session.add(
                    MonitorRow(
                        model_id=spec.model_id,
                        tenant=spec.tenant,
                        source="file",
                        paused=False,
                        version=1,
                        spec=body,
                        reference_version=reference_version,
                        updated_at=now,
                        created_at=now,
                    )
                )
            elif (row.spec, row.reference_version, row.source) != (body, reference_version, "file"):
                row.spec, row.reference_version, row.source = body, reference_version, "file"
                row.tenant, row.version, row.updated_at = spec.tenant, row.version + 1, now

    def forget_file_monitors(self, keep: set[str], now: datetime | None = None) -> None:
        """Delete monitors of the file that the file no longer has; their pending
        deliveries are cancelled."""
        with self._sessions.begin() as session:
            gone = list(
                session.scalars(
                    select(MonitorRow).where(
                        MonitorRow.source == "file", MonitorRow.model_id.not_in(list(keep))
                    )
                )
            )
            for row in gone:
                mark_deleted(session, row.model_id, row.tenant, now or datetime.now(UTC))
                session.delete(row)
            cancel_pending(
                session,
                [row.model_id for row in gone],
                "its monitor was removed from the monitors file",
            )

    def monitor_records(self, tenant: str | None = None) -> list[MonitorRecord]:
        query = select(MonitorRow).order_by(MonitorRow.model_id)
        if tenant is not None:
            query = query.where(MonitorRow.tenant == tenant)
        with self._sessions() as session:
            return [_record(row) for row in session.scalars(query)]

    def monitor_record(self, model_id: str) -> MonitorRecord | None:
        with self._sessions() as session:
            row = session.get(MonitorRow, model_id)
            return None if row is None else _record(row)

    def create_monitor(self, spec: MonitorSpec, now: datetime) -> MonitorRecord:
        """A new API monitor; its reference is the stored version it names (if any)."""
        with self._sessions.begin() as session:
            if session.get(MonitorRow, spec.model_id) is not None:
                raise MonitorConflict(f"model_id: {spec.model_id!r} already has a monitor")
            undelete(session, spec.model_id)
            version = self._reference_of(session, spec)
            row = MonitorRow(
                model_id=spec.model_id,
                tenant=spec.tenant,
                source="api",
                paused=False,
                version=1,
                spec=spec.model_dump(mode="json"),
                reference_version=version,
                updated_at=now,
                created_at=now,
            )
            session.add(row)
            session.flush()
            return _record(row)

    def update_monitor(self, spec: MonitorSpec, now: datetime) -> MonitorRecord | None:
        """A new version of an API monitor; None if there is none."""
        with self._sessions.begin() as session:
            row = session.get(MonitorRow, spec.model_id)
            if row is None:
                return None
            _editable(row)
            row.spec = spec.model_dump(mode="json")
            row.reference_version = self._reference_of(session, spec, row.reference_version)
            row.version, row.updated_at = row.version + 1, now
            return _record(row)

    def set_paused(self, model_id: str, paused: bool, now: datetime) -> MonitorRecord | None:
        with self._sessions.begin() as session:
            row = session.get(MonitorRow, model_id)
            if row is None:
                return None
            if row.paused != paused:
                row.paused, row.version, row.updated_at = paused, row.version + 1, now
            return _record(row)

    def delete_monitor(self, model_id: str, now: datetime | None = None) -> bool:
        """Delete an API monitor (its reports, triggers and profiles stay); its pending
        deliveries are cancelled (status ``cancelled``, with the reason)."""
        moment = now or datetime.now(UTC)
        with self._sessions.begin() as session:
            row = session.get(MonitorRow, model_id)
            if row is None:
                return False
            _editable(row)
            mark_deleted(session, model_id, row.tenant, moment)
            session.delete(row)
            cancel_pending(session, [model_id], deleted_reason(moment))
            return True

    def activate_reference(
        self, model_id: str, version: int, now: datetime
    ) -> MonitorRecord | None:
        """Make a stored profile version the monitor's reference; None if either is unknown."""
        with self._sessions.begin() as session:
            row = session.get(MonitorRow, model_id)
            exists = session.scalar(
                select(ReferenceProfileRow.version).where(
                    ReferenceProfileRow.model_id == model_id,
                    ReferenceProfileRow.version == version,
                )
            )
            if row is None or exists is None:
                return None
            if row.reference_version != version:
                row.reference_version, row.version, row.updated_at = version, row.version + 1, now
            return _record(row)

    def reference_versions(self, model_id: str) -> list[dict[str, Any]]:
        with self._sessions() as session:
            active = session.scalar(
                select(MonitorRow.reference_version).where(MonitorRow.model_id == model_id)
            )
            rows = session.scalars(
                select(ReferenceProfileRow)
                .where(ReferenceProfileRow.model_id == model_id)
                .order_by(ReferenceProfileRow.version)
            )
            return [
                {
                    "version": r.version,
                    "fingerprint": r.fingerprint,
                    "source": r.source,
                    "n_rows": r.n_rows,
                    "features": [f["name"] for f in r.profile["features"]],
                    "created_at": as_utc(r.created_at).isoformat(),
                    "active": r.version == active,
                }
                for r in rows
            ]

    @staticmethod
    def _reference_of(
        session: Session, spec: MonitorSpec, current: int | None = None
    ) -> int | None:
        stored = spec.reference.stored
        query = select(func.max(ReferenceProfileRow.version)).where(
            ReferenceProfileRow.model_id == spec.model_id
        )
        if isinstance(stored, int):
            query = query.where(ReferenceProfileRow.version == stored)
            found = session.scalar(query)
            if found is None:
                raise MonitorConflict(
                    f"reference.stored: {spec.model_id!r} has no reference version {stored}"
                )
            return int(found)
        latest = session.scalar(query)
        return current if current is not None else latest

    # -- the stream's writes -----------------------------------------------------------

    def record_results(
        self,
        reports: Sequence[DriftReport],
        triggers: Sequence[RetrainingEvent],
        targets: Mapping[str, Sequence[Target]],
        now: datetime,
        snapshots: Mapping[str, Snapshot] | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
        performance: Sequence[PerformanceReport] = (),
        tenants: Mapping[str, str] | None = None,
        logs: Mapping[tuple[str, int], str | None] | None = None,
        made: Mapping[str, datetime] | None = None,
        expected: Mapping[tuple[str, int], int | None] | None = None,
        held: Mapping[tuple[str, int], int | None] | None = None,
    ) -> None:
        """Window reports (drift and performance), triggers, their outbox rows, model
        snapshots and consumed offsets, in one transaction: after a crash, either all of a
        batch's effects are stored or none. ``targets`` and ``tenants`` (by model) are
        what a trigger's deliveries are recorded with, and ``made`` (by model) when
        the monitor that fired it was made (one deleted and made again since is another,
        and the trigger is not delivered); ``logs`` (by partition) names
        the log the offsets belong to (None, or none given, keeps the one stored);
        ``expected`` (by partition) the stored offsets this worker last read or wrote:
        where another worker has stored others since, nothing is stored and
        ``PartitionTaken`` is raised (see ``driftline.store.offsets``); ``held``, those
        of partitions not written that must not have changed (where snapshots go).

        A window reported again (reprocessing) replaces its report; a trigger already
        recorded is not recorded or delivered again; a suppressed one is recorded and
        not delivered.
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
            for window in performance:
                session.execute(
                    delete(PerformanceReportRow).where(
                        PerformanceReportRow.model_id == window.model_id,
                        PerformanceReportRow.window_end == window.window_end,
                    )
                )
                session.add(
                    PerformanceReportRow(
                        model_id=window.model_id,
                        window_start=window.window_start,
                        window_end=window.window_end,
                        labelled=window.labelled,
                        degraded=window.drifted,
                        report=window.model_dump(mode="json"),
                        created_at=now,
                    )
                )
            for trigger in triggers:
                model_id = trigger.data.model_id
                tenant = (tenants or {}).get(model_id)
                made_at = (made or {}).get(model_id)
                add_trigger(session, trigger, targets.get(model_id, ()), tenant, now, made_at)
            _upsert(
                session,
                ModelStateRow,
                ["model_id"],
                [
                    {
                        "model_id": model_id,
                        "topic": snapshot.topic,
                        "partition": snapshot.partition,
                        "state": snapshot.state,
                        "updated_at": now,
                    }
                    for model_id, snapshot in (snapshots or {}).items()
                ],
            )
            if expected is not None:
                write_offsets(session, offsets or {}, expected, logs or {}, now, held=held)
                return
            _upsert(
                session,
                ConsumerOffsetRow,
                ["topic", "partition"],
                [
                    {
                        "topic": topic,
                        "partition": partition,
                        "offset": offset,
                        "updated_at": now,
                        "log_id": (logs or {}).get((topic, partition)),
                    }
                    for (topic, partition), offset in (offsets or {}).items()
                ],
                keep_if_null=("log_id",),
            )

    def stored_offsets(
        self, partitions: Collection[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[int, str | None]]:
        """The stored offset of each of these partitions that has one, and its log."""
        topics = sorted({topic for topic, _ in partitions})
        with self._sessions() as session:
            rows = session.execute(
                select(
                    ConsumerOffsetRow.topic,
                    ConsumerOffsetRow.partition,
                    ConsumerOffsetRow.offset,
                    ConsumerOffsetRow.log_id,
                ).where(ConsumerOffsetRow.topic.in_(topics))
            )
            return {
                (topic, partition): (offset, log_id)
                for topic, partition, offset, log_id in rows
                if (topic, partition) in partitions
            }

    def reset_offsets(
        self,
        partitions: Mapping[tuple[str, int], str | None],
        now: datetime,
        expected: Mapping[tuple[str, int], int | None] | None = None,
        held: Mapping[tuple[str, int], int | None] | None = None,
    ) -> None:
        """Nothing of these partitions' logs is counted yet: offset -1, under the log
        given (the models' snapshots stay: their windows go on with the new log);
        ``expected`` as for ``record_results``."""
        with self._sessions.begin() as session:
            if expected is not None:
                resets = dict.fromkeys(partitions, -1)
                write_offsets(session, resets, expected, partitions, now, keep_log=False)
                return
            _upsert(
                session,
                ConsumerOffsetRow,
                ["topic", "partition"],
                [
                    {"topic": t, "partition": p, "offset": -1, "updated_at": now, "log_id": log}
                    for (t, p), log in partitions.items()
                ],
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

    # -- the outbox (the relay's reads and writes are in store/outbox.py) ---------------

    def prune(self, reports_before: datetime, deliveries_before: datetime) -> tuple[int, int]:
        """Delete old window reports and finished deliveries; returns how many of each.

        Pending deliveries, triggers and reference profiles are never pruned.
        """
        finished = select(DeliveryRowModel.id).where(
            DeliveryRowModel.status.in_(FINISHED),
            DeliveryRowModel.created_at < deliveries_before,
        )
        with self._sessions.begin() as session:
            reports = session.execute(
                delete(WindowReportRow).where(WindowReportRow.created_at < reports_before)
            )
            performance = session.execute(
                delete(PerformanceReportRow).where(PerformanceReportRow.created_at < reports_before)
            )
            session.execute(
                delete(DeliveryAttemptRow).where(DeliveryAttemptRow.delivery_id.in_(finished))
            )
            deliveries = session.execute(
                delete(DeliveryRowModel).where(DeliveryRowModel.id.in_(finished))
            )
            pruned = int(reports.rowcount or 0) + int(performance.rowcount or 0)  # type: ignore[attr-defined]
            return pruned, int(deliveries.rowcount or 0)  # type: ignore[attr-defined]

    # -- queries -----------------------------------------------------------------------

    def reports(
        self,
        model_id: str | None = None,
        limit: int = 20,
        segment: str | None = None,
        *,
        models: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The newest window reports, newest first: the whole model's, or one segment's."""
        query = (
            select(WindowReportRow.report)
            .where(WindowReportRow.segment == (segment or ""))
            .order_by(WindowReportRow.window_end.desc(), WindowReportRow.id.desc())
        )
        if model_id is not None:
            query = query.where(WindowReportRow.model_id == model_id)
        if models is not None:
            query = query.where(WindowReportRow.model_id.in_(list(models)))
        with self._sessions() as session:
            return list(session.scalars(query.limit(limit)))

    def performance_reports(
        self, model_id: str, limit: int = 20, degraded: bool | None = None
    ) -> list[dict[str, Any]]:
        """The newest performance windows of a model, newest first."""
        query = (
            select(PerformanceReportRow.report)
            .where(PerformanceReportRow.model_id == model_id)
            .order_by(PerformanceReportRow.window_end.desc(), PerformanceReportRow.id.desc())
        )
        if degraded is not None:
            query = query.where(PerformanceReportRow.degraded == degraded)
        with self._sessions() as session:
            return list(session.scalars(query.limit(limit)))

    def triggers(
        self,
        model_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        *,
        models: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Triggers, newest first: fired and suppressed, with their retraining events."""
        query = select(TriggerRow).order_by(TriggerRow.created_at.desc()).limit(limit)
        if model_id is not None:
            query = query.where(TriggerRow.model_id == model_id)
        if status is not None:
            query = query.where(TriggerRow.status == status)
        if models is not None:
            query = query.where(TriggerRow.model_id.in_(list(models)))
        with self._sessions() as session:
            return [
                {
                    "trigger_id": r.trigger_id,
                    "model_id": r.model_id,
                    "episode_id": r.episode_id,
                    "status": r.status,
                    "source": r.source,
                    "severity": r.severity,
                    "window_end": as_utc(r.window_end).isoformat(),
                    "created_at": as_utc(r.created_at).isoformat(),
                    "event": orjson.loads(r.payload),
                }
                for r in session.scalars(query)
            ]

    # -- API keys ----------------------------------------------------------------------

    def create_api_key(self, tenant: str, scope: str, name: str, now: datetime) -> tuple[str, str]:
        """A new key for ``tenant``: (the key, shown once; its id). Only a hash is stored."""
        from driftline.auth import new_key

        key, key_id, hashed = new_key()
        with self._sessions.begin() as session:
            session.add(
                ApiKeyRow(
                    key_id=key_id,
                    secret_hash=hashed,
                    tenant=tenant,
                    scope=scope,
                    name=name,
                    created_at=now,
                )
            )
        return key, key_id

    def api_key(self, key_id: str) -> tuple[str, str, str] | None:
        """(secret hash, tenant, scope) of an active key, None if unknown or revoked."""
        with self._sessions() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                return None
            return row.secret_hash, row.tenant, row.scope

    def api_keys(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Keys (never their secrets), oldest first."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.key_id)
        if tenant is not None:
            query = query.where(ApiKeyRow.tenant == tenant)
        with self._sessions() as session:
            return [
                {
                    "key_id": r.key_id,
                    "tenant": r.tenant,
                    "scope": r.scope,
                    "name": r.name,
                    "created_at": as_utc(r.created_at).isoformat(),
                    "revoked_at": as_utc(r.revoked_at).isoformat() if r.revoked_at else None,
                }
                for r in session.scalars(query)
            ]

    def revoke_api_key(self, key_id: str, now: datetime) -> bool:
        with self._sessions.begin() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = now
            return True

    # -- Alertmanager ------------------------------------------------------------------

    def record_alert(
        self,
        *,
        fingerprint: str,
        starts_at: datetime,
        status: str,
        model_id: str | None,
        labels: dict[str, str],
        trigger: RetrainingEvent | None,
        cooldown_s: float,
        targets: Sequence[Target],
        now: datetime,
        tenant: str | None = None,
    ) -> str:
        """Record one alert of a notification; returns its outcome.

        ``duplicate`` if this fingerprint, start and status were recorded before (the
        same notification again, or from another Alertmanager of an HA pair). A firing
        alert's ``trigger`` is recorded as fired, or as suppressed when the model's last
        request fired less than ``cooldown_s`` ago; without a trigger the alert is only
        recorded (``resolved`` or ``ignored``).
        """
        try:
            with self._sessions.begin() as session:
                seen = session.scalar(
                    select(AlertNotificationRow.id).where(
                        AlertNotificationRow.fingerprint == fingerprint,
                        AlertNotificationRow.starts_at == starts_at,
                        AlertNotificationRow.status == status,
                    )
                )
                if seen is not None:
                    return "duplicate"
                outcome = "resolved" if status == "resolved" else "ignored"
                if trigger is not None:
                    last = session.scalar(
                        select(func.max(TriggerRow.created_at)).where(
                            TriggerRow.model_id == trigger.data.model_id,
                            TriggerRow.status == "fired",
                        )
                    )
                    if last is not None and (now - as_utc(last)).total_seconds() < cooldown_s:
                        trigger = trigger.model_copy(
                            update={
                                "data": trigger.data.model_copy(update={"status": "suppressed"})
                            }
                        )
                    add_trigger(session, trigger, targets, tenant, now)
                    outcome = trigger.data.status
                session.add(
                    AlertNotificationRow(
                        fingerprint=fingerprint,
                        starts_at=starts_at,
                        status=status,
                        model_id=model_id,
                        outcome=outcome,
                        trigger_id=None if trigger is None else trigger.data.trigger_id,
                        labels=labels,
                        received_at=now,
                    )
                )
                return outcome
        except IntegrityError:  # the same alert recorded concurrently
            return "duplicate"
