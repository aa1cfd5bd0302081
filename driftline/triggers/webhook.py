"""Webhook target: POST the retraining event, signed per the Standard Webhooks spec."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime

import aiohttp
from standardwebhooks import Webhook

from driftline.schemas.monitors import Target, WebhookTarget
from driftline.store import DeliveryRow
from driftline.triggers.delivery import Delivery, describe


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date.

    >>> from datetime import UTC
    >>> now = datetime(2024, 1, 1, tzinfo=UTC)
    >>> retry_after_seconds("120", now), retry_after_seconds("Mon, 01 Jan 2024 00:01:00 GMT", now)
    (120.0, 60.0)
    >>> retry_after_seconds("soon", now) is None
    True
    """
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - now).total_seconds())


def signed_headers(
    secrets: str | Sequence[str], message_id: str, body: str, now: datetime
) -> dict[str, str]:
    """The three Standard Webhooks headers (and the content type) for ``body``.

    With several secrets (a rotation), the signature header carries one signature per
    secret, space-separated; a receiver accepts the message if any of them verifies.
    """
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(Webhook(k).sign(message_id, now, body) for k in keys),
    }


class WebhookSender:
    """Sends retraining events to webhook targets through the given HTTP session.

    The ``webhook-id`` is the trigger id, the same on every retry, so receivers can
    deduplicate; redirects are not followed (a redirect is a failure, not a new URL).
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def send(self, target: Target, delivery: DeliveryRow, now: datetime) -> Delivery:
        assert isinstance(target, WebhookTarget)
        body = delivery.payload
        headers = signed_headers(target.signing_secrets, delivery.trigger_id, body, now)
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
                retry_after = None
                if response.status in (429, 503):
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"), now)
                return Delivery(ok, response.status, error, latency, retry_after)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Delivery(False, None, describe(exc), time.perf_counter() - started)
