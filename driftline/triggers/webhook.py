"""Webhook target: POST the retraining event, signed per the Standard Webhooks spec."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from standardwebhooks import Webhook

from driftline.schemas.monitors import WebhookTarget


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one attempt."""

    ok: bool
    status: int | None
    error: str | None
    latency_s: float


def signed_headers(secret: str, message_id: str, body: str, now: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers (and the content type) for ``body``."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }


class WebhookSender:
    """Sends retraining events to webhook targets through the given HTTP session.

    The ``webhook-id`` is the trigger id, the same on every retry, so receivers can
    deduplicate; redirects are not followed (a redirect is a failure, not a new URL).
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def send(
        self, target: WebhookTarget, message_id: str, body: str, now: datetime
    ) -> Delivery:
        headers = signed_headers(target.signing_secret, message_id, body, now)
        started = time.perf_counter()
        try:
            async with self._session.post(
                str(target.url),
                data=body.encode(),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=target.timeout_s),
            ) as response:
                await response.read()
                latency = time.perf_counter() - started
                ok = 200 <= response.status < 300
                error = None if ok else f"HTTP {response.status}"
                return Delivery(ok, response.status, error, latency)
        except (aiohttp.ClientError, TimeoutError) as exc:
            latency = time.perf_counter() - started
            return Delivery(False, None, f"{type(exc).__name__}: {exc}"[:500], latency)
