"""The outbox relay: delivers recorded triggers to their targets, retrying with backoff.

Each worker runs one. A relay attempts only the deliveries it has leased (one sender
per attempt, however many workers run), each attempt bounded in time and the lease
longer than that bound. A delivery is sent to the target it was recorded with, so a
paused or edited monitor does not change it; only the secrets of a webhook are looked
up at each attempt (its ``secret_env`` on this worker, or the secret its monitor has
in the monitors file).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from driftline.schemas.monitors import (
    MAX_TARGET_TIMEOUT_S,
    Target,
    WebhookTarget,
    describe_config_error,
)
from driftline.store import DeliveryRow, Store
from driftline.triggers.delivery import Delivery, Sender

log = logging.getLogger(__name__)

#: First retry after this many seconds, doubling per attempt up to ``MAX_BACKOFF_S``.
BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
#: The longest Retry-After honoured (a receiver asking for days is likely misconfigured).
MAX_RETRY_AFTER_S = 3600.0
#: Deliveries attempted at once: a hanging receiver holds one slot, not the relay.
CONCURRENCY = 8
#: Calls an attempt may make, each bounded by the target's ``timeout_s``: a webhook
#: POST; a Kafka topic check (a listing and a creation) and a send; a Kubeflow lookup,
#: pipeline lookup and create.
ATTEMPT_CALLS = {"webhook": 1, "kafka": 3, "kubeflow": 3}
#: An attempt's bound beyond its calls' timeouts, and a lease's beyond the attempt's
#: (clock skew between workers, a slow store write).
ATTEMPT_SLACK_S = 5.0
LEASE_MARGIN_S = 30.0
#: The per-call bound of an attempt of a delivery recorded before deliveries carried
#: their target (its target's own timeout is not known when it is claimed).
UNKNOWN_TIMEOUT_S = 60.0

#: Called with each attempt's delivery, target (None if unknown) and outcome.
OutcomeHook = Callable[[DeliveryRow, Target | None, str], None]
Targets = Mapping[str, Sequence[Target]]

_TARGET: TypeAdapter[Target] = TypeAdapter(Target)


def backoff_seconds(attempts: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter over the upper half: 2^attempts, capped.

    >>> 0.5 <= backoff_seconds(0, random.Random(1)) <= 1.0
    True
    """
    ceiling = min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2.0**attempts)
    return ceiling * rng.uniform(0.5, 1.0)


def attempt_limit_s(target: Mapping[str, Any]) -> float:
    """How long one attempt to this (stored) target may take at most: its calls'
    timeouts and some slack (a target recorded without its timeout: a minute a call;
    one whose timeout is out of bounds: an hour, the most a target may have).

    >>> attempt_limit_s({"type": "kubeflow", "timeout_s": 10.0})
    35.0
    >>> attempt_limit_s({"type": "webhook"})  # recorded before deliveries kept targets
    65.0
    >>> attempt_limit_s({"type": "webhook", "timeout_s": float("nan")})
    3605.0
    """
    calls = ATTEMPT_CALLS.get(str(target.get("type", "webhook")), max(ATTEMPT_CALLS.values()))
    try:  # a stored target is checked; whatever it holds, a delivery must stay claimable
        timeout = float(target.get("timeout_s", UNKNOWN_TIMEOUT_S))
    except (TypeError, ValueError):
        timeout = MAX_TARGET_TIMEOUT_S
    if not 0 < timeout <= MAX_TARGET_TIMEOUT_S:
        timeout = MAX_TARGET_TIMEOUT_S
    return calls * timeout + ATTEMPT_SLACK_S


def bounds_of(delivery: DeliveryRow) -> Mapping[str, Any]:
    """What bounds a delivery's attempts (and lease): its target as recorded, or for one
    recorded before deliveries kept their target, its type alone."""
    return delivery.target or {"type": delivery.target_type}


def lease_s(delivery: DeliveryRow) -> float:
    """How long a relay holds a delivery it claimed: longer than any attempt of it."""
    return attempt_limit_s(bounds_of(delivery)) + LEASE_MARGIN_S


class TargetUnavailable(Exception):
    """A delivery's target cannot be used now (a secret not available); the attempt fails."""


def delivery_target(delivery: DeliveryRow, configured: Mapping[tuple[str, str], Target]) -> Target:
    """The target to send ``delivery`` to: the one it was recorded with, its secrets
    looked up now. ``configured`` (by model and target key) holds the targets of the
    monitors this process knows, with their secrets; a delivery recorded before
    deliveries carried their target is sent to the configured one of its key.
    """
    known = configured.get((delivery.model_id, delivery.target_url))
    if delivery.target is None:
        if known is None:
            raise TargetUnavailable(
                f"{delivery.target_type} target {delivery.target_url} is no longer configured"
            )
        return known
    spec = dict(delivery.target)
    if spec.get("type", "webhook") == "webhook" and spec.get("secret_env") is None:
        if not isinstance(known, WebhookTarget) or known.secret is None:
            raise TargetUnavailable(
                f"the signing secret of webhook {delivery.target_url} is no longer in the "
                "monitors file (its monitor was removed, or its target changed)"
            )
        spec["secret"] = known.signing_secrets
    try:
        return _TARGET.validate_python(spec)
    except ValidationError as exc:
        raise TargetUnavailable(f"target: {describe_config_error(exc)}") from None


def relay_owner() -> str:
    """A relay's name in the leases it holds: host, process and a random part."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OutboxRelay:
    """Claims due deliveries from the store and sends each to its target."""

    def __init__(
        self,
        store: Store,
        senders: Mapping[str, Sender],
        targets: Targets | Callable[[], Targets],
        on_outcome: OutcomeHook | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
        owner: str | None = None,
    ) -> None:
        self._store = store
        self._senders = senders
        #: The targets of the monitors this process knows (with their secrets).
        self._target_source = targets
        self._targets: dict[tuple[str, str], Target] = {}
        self._on_outcome = on_outcome
        self._rng = rng or random.Random()
        #: What time it is: when deliveries are due, attempts are stamped and signed
        #: (a test's virtual clock runs through hours of backoff in no time).
        self._clock = clock or (lambda: datetime.now(UTC))
        self.owner = owner or relay_owner()
        self._disabled: dict[str, str] = {}

    async def run_once(self) -> int:
        """Attempt every due delivery, ``CONCURRENCY`` at a time, each claimed first;
        return how many were attempted."""
        attempted = 0
        while True:
            due = await asyncio.to_thread(
                self._store.claim_due, self._clock(), self.owner, lease_s, CONCURRENCY
            )
            if due:
                self._disabled = await asyncio.to_thread(self._store.disabled_endpoints)
                source = self._target_source
                targets = source() if callable(source) else source
                self._targets = {(m, t.key): t for m, ts in targets.items() for t in ts}
                await asyncio.gather(*(self._attempt(d) for d in due))
            attempted += len(due)
            if len(due) < CONCURRENCY:
                return attempted

    async def _attempt(self, delivery: DeliveryRow) -> None:
        now = self._clock()
        try:
            target = delivery_target(delivery, self._targets)
        except TargetUnavailable as exc:
            limit = int((delivery.target or {}).get("max_attempts", 8))
            failed = Delivery(False, None, str(exc), 0.0)
            status = "dead" if delivery.attempts + 1 >= limit else "pending"
            await self._record(delivery, None, status, failed, now)
            return
        sender = self._senders.get(target.type)
        if sender is None:
            reason = f"no sender for {target.type} targets in this worker"
            await self._record(delivery, target, "dead", Delivery(False, None, reason, 0.0), now)
            return
        if delivery.target_url in self._disabled:
            reason = f"endpoint disabled: {self._disabled[delivery.target_url]}"
            await self._record(delivery, target, "dead", Delivery(False, None, reason, 0.0), now)
            return
        result = await self._send(sender, target, delivery, now)
        if target.type == "webhook" and result.status == 410:  # Gone: never call again
            reason = f"HTTP 410 Gone at {now.isoformat()}"
            await asyncio.to_thread(self._store.disable_endpoint, delivery.target_url, reason, now)
            self._disabled[delivery.target_url] = reason
            status = "dead"
        elif result.ok:
            status = "delivered"
        elif delivery.attempts + 1 >= target.max_attempts:
            status = "dead"
        else:
            status = "pending"
        log.info(
            "delivery %s of %s to %s: %s (%s)",
            delivery.id,
            delivery.trigger_id,
            delivery.target_url,
            status,
            result.error or result.external_id or result.status,
        )
        await self._record(delivery, target, status, result, now)

    async def _send(
        self, sender: Sender, target: Target, delivery: DeliveryRow, now: datetime
    ) -> Delivery:
        """One attempt, within its time limit (the lease outlives it, so no other relay
        can start one meanwhile)."""
        limit = attempt_limit_s(bounds_of(delivery))  # as the lease was reckoned
        try:
            async with asyncio.timeout(limit):
                return await sender.send(target, delivery, now)
        except TimeoutError:
            return Delivery(False, None, f"the attempt took longer than {limit:g} s", limit)

    async def _record(
        self,
        delivery: DeliveryRow,
        target: Target | None,
        status: str,
        result: Delivery,
        now: datetime,
    ) -> None:
        # The receiver's Retry-After wins over a shorter backoff (capped like the backoff).
        wait = backoff_seconds(delivery.attempts, self._rng)
        if result.retry_after_s is not None:
            wait = max(wait, min(result.retry_after_s, MAX_RETRY_AFTER_S))
        current = await asyncio.to_thread(
            self._store.record_attempt,
            delivery.id,
            status=status,
            http_status=result.status,
            error=result.error,
            latency_s=result.latency_s,
            next_attempt_at=now + timedelta(seconds=wait),
            now=now,
            external_id=result.external_id,
            owner=self.owner,
        )
        if not current:
            log.warning(
                "delivery %s of %s: attempt logged, but it was cancelled or its lease lost "
                "meanwhile; its status is left as it is",
                delivery.id,
                delivery.trigger_id,
            )
        if self._on_outcome is not None:
            self._on_outcome(delivery, target, status if status != "pending" else "retry")
