"""The outbox relay: delivers recorded triggers to their targets, retrying with backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from driftline.schemas.monitors import WebhookTarget
from driftline.store import DeliveryRow, Store
from driftline.triggers.webhook import WebhookSender

log = logging.getLogger(__name__)

#: First retry after this many seconds, doubling per attempt up to ``MAX_BACKOFF_S``.
BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
#: The longest Retry-After honoured (a receiver asking for days is likely misconfigured).
MAX_RETRY_AFTER_S = 3600.0


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
        sender: WebhookSender,
        targets: Mapping[str, Sequence[WebhookTarget]],
        on_outcome: Callable[[DeliveryRow, str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._sender = sender
        self._targets = {(model_id, str(t.url)): t for model_id, ts in targets.items() for t in ts}
        self._on_outcome = on_outcome
        self._rng = rng or random.Random()
        self._disabled: dict[str, str] = {}

    async def run_once(self) -> int:
        """Attempt every due delivery; return how many were attempted."""
        due = await asyncio.to_thread(self._store.due_deliveries, datetime.now(UTC))
        if due:
            self._disabled = await asyncio.to_thread(self._store.disabled_endpoints)
        for delivery in due:
            await self._attempt(delivery)
        return len(due)

    async def _attempt(self, delivery: DeliveryRow) -> None:
        now = datetime.now(UTC)
        target = self._targets.get((delivery.model_id, delivery.target_url))
        if target is None:
            await self._record(delivery, "dead", None, "target is no longer configured", None, now)
            return
        if delivery.target_url in self._disabled:
            reason = f"endpoint disabled: {self._disabled[delivery.target_url]}"
            await self._record(delivery, "dead", None, reason, None, now)
            return
        result = await self._sender.send(target, delivery.trigger_id, delivery.payload, now)
        if result.status == 410:  # Gone: the receiver asks never to be called again
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
            result.error or result.status,
        )
        await self._record(
            delivery,
            status,
            result.status,
            result.error,
            result.latency_s,
            now,
            result.retry_after_s,
        )

    async def _record(
        self,
        delivery: DeliveryRow,
        status: str,
        http_status: int | None,
        error: str | None,
        latency_s: float | None,
        now: datetime,
        retry_after_s: float | None = None,
    ) -> None:
        # The receiver's Retry-After wins over a shorter backoff (capped like the backoff).
        wait = backoff_seconds(delivery.attempts, self._rng)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, MAX_RETRY_AFTER_S))
        retry_at = now + timedelta(seconds=wait)
        await asyncio.to_thread(
            self._store.record_attempt,
            delivery.id,
            status=status,
            http_status=http_status,
            error=error,
            latency_s=latency_s,
            next_attempt_at=retry_at,
            now=now,
        )
        if self._on_outcome is not None:
            self._on_outcome(delivery, status if status != "pending" else "retry")
