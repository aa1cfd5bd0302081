"""The outbox: deliveries of retraining triggers to their targets, and their attempts.

A delivery carries its target as it was when the trigger fired (``stored_target``:
never a secret, only which secret to use), so pausing or editing the monitor later
changes nothing of it; deleting the monitor cancels it. Any number of workers run a
relay: each attempt of a delivery has one sender, the relay holding its lease
(``claim_due``: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a compare-and-set update
everywhere). A lease outlives the attempt (the relay bounds each one), and a lease
whose relay died expires and is taken over.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from driftline.schemas.monitors import Target
from driftline.schemas.retraining import RetrainingEvent
from driftline.store.models import (
    DeletedMonitorRow,
    DeliveryAttemptRow,
    DeliveryRowModel,
    DisabledEndpointRow,
    MonitorRow,
    TriggerRow,
    as_utc,
)

#: Statuses of deliveries that are over (pruned after their retention).
FINISHED = ("delivered", "dead", "cancelled")


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A delivery to attempt, detached from its session."""

    id: int
    trigger_id: str
    model_id: str
    target_type: str
    target_url: str
    attempts: int
    payload: str
    #: The target when the trigger fired, without secrets (None: recorded before
    #: deliveries carried it).
    target: dict[str, Any] | None = None
    tenant: str | None = None


def stored_target(target: Target) -> dict[str, Any]:
    """What a delivery keeps of its target: every field but an inline secret (a webhook
    with ``secret_env`` names its variable; one with an inline secret is signed with the
    secret its monitor has in the monitors file when it is sent).

    >>> from driftline.schemas.monitors import WebhookTarget
    >>> secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    >>> kept = stored_target(WebhookTarget(url="https://example.com/x", secret=secret))
    >>> "secret" in kept, kept["url"], kept["timeout_s"]
    (False, 'https://example.com/x', 10.0)
    """
    return target.model_dump(mode="json", exclude={"secret"})


def add_trigger(
    session: Session,
    trigger: RetrainingEvent,
    targets: Sequence[Target],
    tenant: str | None,
    now: datetime,
    made_at: datetime | None = None,
) -> bool:
    """Record a trigger and, if it fired, its deliveries; False if already recorded.
    ``tenant`` and ``made_at``: of the monitor that fired it."""
    data = trigger.data
    if session.get(TriggerRow, data.trigger_id) is not None:
        return False
    session.add(
        TriggerRow(
            trigger_id=data.trigger_id,
            model_id=data.model_id,
            episode_id=data.episode_id,
            status=data.status,
            source=data.source,
            severity=data.severity,
            window_end=data.window_end or data.episode_started_at,
            payload=trigger.model_dump_json(),
            created_at=now,
        )
    )
    if data.status != "fired":
        return True
    # Fired by a worker that did not know yet that its monitor was deleted (or deleted
    # and made again): recorded, and not delivered.
    reason = gone_reason(
        session.get(DeletedMonitorRow, data.model_id),
        session.get(MonitorRow, data.model_id),
        tenant,
        made_at,
    )
    for target in targets:
        session.add(
            DeliveryRowModel(
                trigger_id=data.trigger_id,
                model_id=data.model_id,
                target_type=target.type,
                target_url=target.key,
                status="pending" if reason is None else "cancelled",
                reason=reason,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                target=stored_target(target),
                tenant=tenant,
                monitor_made_at=made_at,
            )
        )
    return True


def mark_deleted(session: Session, model_id: str, tenant: str, now: datetime) -> None:
    """Remember that the monitor of ``model_id`` was deleted (its triggers recorded from
    now on are not delivered)."""
    row = session.get(DeletedMonitorRow, model_id)
    if row is None:
        session.add(DeletedMonitorRow(model_id=model_id, tenant=tenant, deleted_at=now))
    else:
        row.tenant, row.deleted_at = tenant, now


def undelete(session: Session, model_id: str) -> None:
    """A monitor of ``model_id`` is made again: its triggers are delivered again."""
    session.execute(delete(DeletedMonitorRow).where(DeletedMonitorRow.model_id == model_id))


def deleted_reason(deleted_at: datetime) -> str:
    return f"its monitor was deleted at {as_utc(deleted_at).isoformat(timespec='seconds')}"


def gone_reason(
    deleted: DeletedMonitorRow | None,
    current: MonitorRow | None,
    tenant: str | None,
    made_at: datetime | None,
) -> str | None:
    """Why a trigger of the monitor of ``tenant`` made at ``made_at`` (None: not known)
    is not to be delivered now: that monitor was deleted, or deleted and made again
    (``deleted`` and ``current``: the model's tombstone and monitor now). None: it is."""
    if deleted is not None:
        return deleted_reason(deleted.deleted_at)
    if current is None:
        return None
    if tenant is not None and current.tenant != tenant:
        return "its monitor was deleted (the model id now belongs to another tenant's monitor)"
    if made_at is not None and as_utc(current.created_at) != as_utc(made_at):
        return "its monitor was deleted and made again (it belongs to the old one)"
    return None


def _monitors_now(
    session: Session, model_ids: Collection[str]
) -> tuple[dict[str, DeletedMonitorRow], dict[str, MonitorRow]]:
    """The tombstones and monitors of these models now."""
    ids = list(model_ids)
    if not ids:
        return {}, {}
    deleted = session.scalars(select(DeletedMonitorRow).where(DeletedMonitorRow.model_id.in_(ids)))
    current = session.scalars(select(MonitorRow).where(MonitorRow.model_id.in_(ids)))
    return {r.model_id: r for r in deleted}, {r.model_id: r for r in current}


def cancel_pending(session: Session, model_ids: Collection[str], reason: str) -> None:
    """Cancel the pending deliveries of these models (their monitors are gone)."""
    if not model_ids:
        return
    session.execute(
        update(DeliveryRowModel)
        .where(DeliveryRowModel.model_id.in_(list(model_ids)), DeliveryRowModel.status == "pending")
        .values(status="cancelled", reason=reason, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def _lease_free(now: datetime) -> ColumnElement[bool]:
    expires = DeliveryRowModel.lease_expires_at
    return or_(expires.is_(None), expires <= now)


def _row(row: DeliveryRowModel, payload: str) -> DeliveryRow:
    return DeliveryRow(
        row.id,
        row.trigger_id,
        row.model_id,
        row.target_type,
        row.target_url,
        row.attempts,
        payload,
        row.target,
        row.tenant,
    )


class Outbox:
    """The store's outbox operations (a part of ``Store``)."""

    _sessions: sessionmaker[Session]

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[DeliveryRow]:
        """Deliveries due by ``now`` (leased or not), without claiming them."""
        query = (
            select(DeliveryRowModel, TriggerRow.payload)
            .join(TriggerRow, TriggerRow.trigger_id == DeliveryRowModel.trigger_id)
            .where(DeliveryRowModel.status == "pending", DeliveryRowModel.next_attempt_at <= now)
            .order_by(DeliveryRowModel.next_attempt_at)
            .limit(limit)
        )
        with self._sessions() as session:
            return [_row(row, payload) for row, payload in session.execute(query)]

    def claim_due(
        self,
        now: datetime,
        owner: str,
        lease_s: Callable[[DeliveryRow], float],
        limit: int = 8,
    ) -> list[DeliveryRow]:
        """Lease up to ``limit`` due deliveries to ``owner`` (a relay): until ``now`` plus
        ``lease_s(delivery)`` no other relay gets them. A lease past its expiry (its
        relay died) is free again.

        PostgreSQL skips the rows another relay is claiming (``FOR UPDATE SKIP LOCKED``);
        on every database the lease is set only where it is still free, so a delivery
        is never leased twice at once.
        """
        query = (
            select(DeliveryRowModel, TriggerRow.payload)
            .join(TriggerRow, TriggerRow.trigger_id == DeliveryRowModel.trigger_id)
            .where(
                DeliveryRowModel.status == "pending",
                DeliveryRowModel.next_attempt_at <= now,
                _lease_free(now),
            )
            .order_by(DeliveryRowModel.next_attempt_at, DeliveryRowModel.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=DeliveryRowModel)
        )
        claimed = []
        with self._sessions.begin() as session:
            rows = session.execute(query).all()
            deleted, current = _monitors_now(session, {row.model_id for row, _ in rows})
            for row, payload in rows:
                # Recorded in a transaction that could not see its monitor's deletion.
                reason = gone_reason(
                    deleted.get(row.model_id),
                    current.get(row.model_id),
                    row.tenant,
                    row.monitor_made_at,
                )
                if reason is not None:
                    row.status, row.reason = "cancelled", reason
                    row.lease_owner = row.lease_expires_at = None
                    continue
                delivery = _row(row, payload)
                taken = session.execute(
                    update(DeliveryRowModel)
                    .where(
                        DeliveryRowModel.id == row.id,
                        DeliveryRowModel.status == "pending",
                        _lease_free(now),
                    )
                    .values(
                        lease_owner=owner,
                        lease_expires_at=now + timedelta(seconds=lease_s(delivery)),
                    )
                    .execution_options(synchronize_session=False)
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(delivery)
        return claimed

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
        external_id: str | None = None,
        owner: str | None = None,
    ) -> bool:
        """Log one attempt and move the delivery on (``pending`` means retry), releasing
        the lease. With ``owner``, the delivery moves on only while that relay holds its
        lease (False otherwise: cancelled meanwhile, or the lease lost); the attempt is
        logged either way, since it happened.
        """
        with self._sessions.begin() as session:
            row = session.get_one(DeliveryRowModel, delivery_id)
            current = row.status == "pending" and (owner is None or row.lease_owner == owner)
            session.add(
                DeliveryAttemptRow(
                    delivery_id=delivery_id,
                    attempt=row.attempts + 1,
                    attempted_at=now,
                    outcome="retry" if status == "pending" else status,
                    http_status=http_status,
                    latency_s=latency_s,
                    error=error,
                )
            )
            row.attempts += 1
            if not current:
                return False
            row.status = status
            row.last_status = http_status
            row.last_error = error
            row.last_latency_s = latency_s
            row.next_attempt_at = next_attempt_at
            row.lease_owner, row.lease_expires_at = None, None
            if external_id is not None:
                row.external_id = external_id
            if status == "delivered":
                row.delivered_at = now
            return True

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
            deleted = session.get(DeletedMonitorRow, row.model_id)
            if deleted is not None:
                raise ValueError(
                    f"delivery {delivery_id}: {deleted_reason(deleted.deleted_at)}; "
                    "it is not sent again"
                )
            row.status, row.attempts, row.next_attempt_at = "pending", 0, now
            row.lease_owner, row.lease_expires_at = None, None
        return self.delivery(delivery_id)

    def disable_endpoint(self, url: str, reason: str, now: datetime) -> None:
        """Stop sending to ``url`` (it answered 410 Gone); kept until removed from the table."""
        with self._sessions.begin() as session:
            if session.get(DisabledEndpointRow, url) is None:
                session.add(DisabledEndpointRow(url=url, reason=reason, disabled_at=now))

    def disabled_endpoints(self) -> dict[str, str]:
        """Disabled endpoint URLs and why."""
        with self._sessions() as session:
            return {row.url: row.reason for row in session.scalars(select(DisabledEndpointRow))}

    def disabled_endpoint_list(self) -> list[dict[str, Any]]:
        with self._sessions() as session:
            return [
                {
                    "url": r.url,
                    "reason": r.reason,
                    "disabled_at": as_utc(r.disabled_at).isoformat(),
                }
                for r in session.scalars(
                    select(DisabledEndpointRow).order_by(DisabledEndpointRow.url)
                )
            ]

    def enable_endpoint(self, url: str) -> bool:
        """Send to ``url`` again (deliveries already dead stay dead: replay them)."""
        with self._sessions.begin() as session:
            result = session.execute(
                delete(DisabledEndpointRow).where(DisabledEndpointRow.url == url)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def deliveries(
        self,
        trigger_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        *,
        models: Collection[str] | None = None,
        tenant: str | None = None,
    ) -> list[dict[str, Any]]:
        """Deliveries, newest first, with their attempts: of ``tenant`` only (with
        ``models``, those recorded before deliveries had a tenant: of those models)."""
        query = select(DeliveryRowModel).order_by(DeliveryRowModel.id.desc()).limit(limit)
        if trigger_id is not None:
            query = query.where(DeliveryRowModel.trigger_id == trigger_id)
        if status is not None:
            query = query.where(DeliveryRowModel.status == status)
        if tenant is not None:
            older = DeliveryRowModel.tenant.is_(None) & DeliveryRowModel.model_id.in_(
                list(models or ())
            )
            query = query.where((DeliveryRowModel.tenant == tenant) | older)
        elif models is not None:
            query = query.where(DeliveryRowModel.model_id.in_(list(models)))
        with self._sessions() as session:
            rows = list(session.scalars(query))
            attempts: dict[int, list[dict[str, Any]]] = {r.id: [] for r in rows}
            for a in session.scalars(
                select(DeliveryAttemptRow)
                .where(DeliveryAttemptRow.delivery_id.in_(attempts))
                .order_by(DeliveryAttemptRow.id)
            ):
                attempts[a.delivery_id].append(
                    {
                        "attempt": a.attempt,
                        "at": as_utc(a.attempted_at).isoformat(),
                        "outcome": a.outcome,
                        "http_status": a.http_status,
                        "latency_s": a.latency_s,
                        "error": a.error,
                    }
                )
            return [_delivery_body(r, attempts[r.id]) for r in rows]

    def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        with self._sessions() as session:
            trigger_id = session.scalar(
                select(DeliveryRowModel.trigger_id).where(DeliveryRowModel.id == delivery_id)
            )
        if trigger_id is None:
            return None
        return next(d for d in self.deliveries(trigger_id) if d["id"] == delivery_id)


def _delivery_body(row: DeliveryRowModel, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row.id,
        "trigger_id": row.trigger_id,
        "model_id": row.model_id,
        "tenant": row.tenant,
        "target_type": row.target_type,
        "target_url": row.target_url,
        "status": row.status,
        "reason": row.reason,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "external_id": row.external_id,
        "next_attempt_at": (
            as_utc(row.next_attempt_at).isoformat() if row.status == "pending" else None
        ),
        "created_at": as_utc(row.created_at).isoformat(),
        "delivered_at": as_utc(row.delivered_at).isoformat() if row.delivered_at else None,
        "attempt_log": attempts,
    }
