"""The webhook receiver down for 2 minutes of virtual time, then back: each retraining
request arrives once, signed, with every failed attempt logged and the backoff growing.

The store (SQLite and PostgreSQL), the relay, the signing sender and the receiver (a
real aiohttp server, stopped for the outage: connection refused) are real; only the
relay's clock is virtual, so minutes of backoff take no time. Three seeds (the relay's
jitter) each.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import aiohttp
import pytest

from driftline.embedded.receiver import WebhookReceiver
from driftline.schemas.monitors import WebhookTarget
from driftline.store import Store
from driftline.triggers.relay import OutboxRelay
from driftline.triggers.webhook import WebhookSender
from tests.unit.helpers import SECRET
from tests.unit.test_store import NOW, drifting_results

pytestmark = pytest.mark.integration

DOWN = timedelta(minutes=2)


class VirtualClock:
    """Starts 3 minutes behind the real time (signatures carry it: the receiver accepts
    timestamps within 5 minutes) and moves only when told."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) - timedelta(minutes=3)

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_receiver_down_for_two_minutes_gets_each_request_once_after(
    seed: int, database_url: str
) -> None:
    store = Store.connect(database_url)
    try:
        asyncio.run(outage(seed, store))
    finally:
        store.close()


async def outage(seed: int, store: Store) -> None:
    receiver = WebhookReceiver(SECRET)
    url = await receiver.start()
    await receiver.stop()  # down from the start: connection refused
    clock = VirtualClock()
    target = WebhookTarget(url=url, secret=SECRET, timeout_s=2, max_attempts=12)  # type: ignore[arg-type]
    reports, triggers = drifting_results()
    store.record_results(reports, triggers, {"m": [target]}, NOW)
    assert len(triggers) == 1
    async with aiohttp.ClientSession() as session:
        relay = OutboxRelay(
            store,
            {"webhook": WebhookSender(session)},
            {"m": [target]},
            rng=random.Random(seed),
            clock=clock,
        )
        went_down = clock.now
        failed = 0
        while clock.now - went_down < DOWN:
            failed += await relay.run_once()
            clock.now = next_due(store)
        assert failed >= 5  # 1 + 2 + 4 + 8 + 16 + 32 s (each halved at worst) < 2 minutes
        back = WebhookReceiver(SECRET, port=receiver.port)
        await back.start()
        try:
            assert await relay.run_once() == 1
            # Long after: nothing is due, nothing more arrives.
            clock.now += timedelta(hours=2)
            assert await relay.run_once() == 0
        finally:
            await back.stop()
    (delivery,) = store.deliveries()
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == failed + 1
    log = delivery["attempt_log"]
    assert len(log) == failed + 1
    assert [a["outcome"] for a in log] == ["retry"] * failed + ["delivered"]
    assert all(a["error"] for a in log[:-1])  # each failure says why
    # Each request once, signed, and with the trigger's id as its webhook-id.
    assert len(back.received) == len(back.verified) == 1
    assert back.verified[0].headers["webhook-id"] == triggers[0].data.trigger_id
    # The backoff grew: each wait at least half its doubling ceiling (full jitter on top).
    moments = [datetime.fromisoformat(a["at"]) for a in log]
    waits = [(b - a).total_seconds() for a, b in pairwise(moments)]
    for attempt, wait in enumerate(waits[:-1]):
        assert 2.0**attempt * 0.5 <= wait <= 2.0**attempt + 0.01


def next_due(store: Store) -> datetime:
    (pending,) = store.deliveries(status="pending")
    return datetime.fromisoformat(pending["next_attempt_at"])
