"""The outbox relay: delivers recorded triggers to their targets, retrying with backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from driftline.schemas.monitors import Target
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

#: Called with each attempt's delivery, target (None if unconfigured) and outcome.
OutcomeHook = Callable[[DeliveryRow, Target | None, str], None]


def backoff_seconds(attempts: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter over the upper half: 2^attempts, capped.

    >>> 0.5 <= backoff_seconds(0, random.Random(1)) <= 1.0
    True
    """
    ceiling = min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2.0**attempts)
    return ceiling * rng.uniform(0.5, 1.0)


class OutboxRelay:
    """Reads due deliveries from the store and sends each to its target once per pass."""

    def __init__(
        self,
        store: Store,
        senders: Mapping[str, Sender],
        targets: Mapping[str, Sequence[Target]] | Callable[[], Mapping[str, Sequence[Target]]],
        on_outcome: OutcomeHook | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._senders = senders
        self._target_source = targets
        self._targets: dict[tuple[str, str], Target] = {}
        self._on_outcome = on_outcome
        self._rng = rng or random.Random()
        #: What time it is: when deliveries are due, attempts are stamped and signed
        #: (a test's virtual clock runs through hours of backoff in no time).
        self._clock = clock or (lambda: datetime.now(UTC))
        self._disabled: dict[str, str] = {}
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def run_once(self) -> int:
        """Attempt every due delivery (several at once); return how many were attempted."""
        due = await asyncio.to_thread(self._store.due_deliveries, self._clock())
        if due:
            self._disabled = await asyncio.to_thread(self._store.disabled_endpoints)
            source = self._target_source
            targets = source() if callable(source) else source
            self._targets = {(m, t.key): t for m, ts in targets.items() for t in ts}
        await asyncio.gather(*(self._attempt_in_slot(d) for d in due))
        return len(due)

    async def _attempt_in_slot(self, delivery: DeliveryRow) -> None:
        async with self._slots:
            await self._attempt(delivery)

    async def _attempt(self, delivery: DeliveryRow) -> None:
        now = self._clock()
        target = self._targets.get((delivery.model_id, delivery.target_url))
        sender = None if target is None else self._senders.get(target.type)
        if target is None or sender is None:
            reason = f"{delivery.target_type} target {delivery.target_url} is no longer configured"
            await self._record(delivery, target, "dead", Delivery(False, None, reason, 0.0), now)
            return
        if delivery.target_url in self._disabled:
            reason = f"endpoint disabled: {self._disabled[delivery.target_url]}"
            await self._record(delivery, target, "dead", Delivery(False, None, reason, 0.0), now)
            return
        result = await sender.send(target, delivery, now)
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
        await asyncio.to_thread(
            self._store.record_attempt,
            delivery.id,
            status=status,
            http_status=result.status,
            error=result.error,
            latency_s=result.latency_s,
            next_attempt_at=now + timedelta(seconds=wait),
            now=now,
            external_id=result.external_id,
        )
        if self._on_outcome is not None:
            self._on_outcome(delivery, target, status if status != "pending" else "retry")
