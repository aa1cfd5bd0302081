"""What every target's sender shares: the outcome of one attempt, and the sender protocol."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from driftline.schemas.monitors import Target
from driftline.store import DeliveryRow


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one attempt."""

    ok: bool
    status: int | None
    error: str | None
    latency_s: float
    #: Seconds the receiver asked us to wait (``Retry-After`` on 429 or 503).
    retry_after_s: float | None = None
    #: What the target made of it: a Kubeflow run id, a Kafka partition and offset.
    external_id: str | None = None


class Sender(Protocol):
    """Sends one delivery to one target (of the type it is registered for)."""

    async def send(self, target: Target, delivery: DeliveryRow, now: datetime) -> Delivery: ...


def describe(exc: BaseException) -> str:
    """An exception as a one-line error for the attempt log."""
    return f"{type(exc).__name__}: {exc}"[:500]
