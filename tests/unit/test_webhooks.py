"""Webhook signing and the outbox relay, against a real local HTTP server."""

import asyncio
import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from driftline.schemas.monitors import WebhookTarget
from driftline.store import DeliveryRow, Store
from driftline.triggers.relay import OutboxRelay
from driftline.triggers.webhook import WebhookSender
from tests.unit.helpers import SECRET, recording_relay, run_passes
from tests.unit.test_store import NOW, drifting_results


class Receiver:
    """Answers with the given statuses in turn (then 204) and keeps every request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], str]] = []
        self.received_at: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.text()))
        self.received_at.append(time.time())
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


async def serve(receiver: Receiver) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.connect(f"sqlite:///{tmp_path / 's.db'}")
    yield store
    store.close()


async def deliver_until_done(
    statuses: list[int], store: Store, max_attempts: int = 8, secret: object = SECRET
) -> tuple[Receiver, list[str]]:
    receiver = Receiver(statuses)
    runner, url = await serve(receiver)
    target = WebhookTarget(url=url, secret=secret, max_attempts=max_attempts)  # type: ignore[arg-type]
    reports, triggers = drifting_results()
    store.record_results(reports, triggers, {"m": [target]}, NOW)
    try:
        async with aiohttp.ClientSession() as session:
            relay, outcomes = recording_relay(store, {"webhook": WebhookSender(session)}, target)
            # Each attempt in its own second: fresh timestamps.
            await run_passes(relay, store, max_attempts + 2, pause_s=0.6)
    finally:
        await runner.cleanup()
    return receiver, outcomes


def test_retries_keep_the_webhook_id_and_every_signature_verifies(store: Store) -> None:
    receiver, outcomes = asyncio.run(deliver_until_done([500, 500, 500], store))
    assert outcomes == ["retry", "retry", "retry", "delivered"]
    assert len(receiver.requests) == 4
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    (trigger,) = store.triggers()
    assert ids == {trigger["trigger_id"]}
    stamps = [int(headers["webhook-timestamp"]) for headers, _ in receiver.requests]
    for stamp, received in zip(stamps, receiver.received_at, strict=True):
        assert abs(stamp - received) <= 1  # signed when sent, not when first recorded
    assert len(set(stamps)) > 1
    for headers, body in receiver.requests:
        payload = Webhook(SECRET).verify(body, headers)
        assert payload["type"] == "driftline.retraining.requested"
        assert payload["data"]["trigger_id"] == trigger["trigger_id"]
        assert payload["data"]["drifted_features"]
        assert headers["Content-Type"] == "application/json"
    (row,) = store.deliveries()
    assert row["status"] == "delivered"
    assert row["attempts"] == 4
    assert [a["outcome"] for a in row["attempt_log"]] == ["retry"] * 3 + ["delivered"]
    assert [a["http_status"] for a in row["attempt_log"]] == [500, 500, 500, 200]
    assert all(a["latency_s"] >= 0 for a in row["attempt_log"])


def test_key_rotation_signs_with_every_secret(store: Store) -> None:
    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    receiver, outcomes = asyncio.run(deliver_until_done([], store, secret=[new, SECRET]))
    assert outcomes == ["delivered"]
    ((headers, body),) = receiver.requests
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (new, SECRET):  # receivers on either key accept it
        assert Webhook(secret).verify(body, headers)["type"] == "driftline.retraining.requested"
    with pytest.raises(Exception, match="No matching signature"):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(body, headers)


def test_a_delivery_past_its_budget_is_dead(store: Store) -> None:
    receiver, outcomes = asyncio.run(deliver_until_done([500] * 10, store, max_attempts=3))
    assert outcomes == ["retry", "retry", "dead"]
    assert len(receiver.requests) == 3
    (row,) = store.deliveries()
    assert row["status"] == "dead"
    assert row["last_error"] == "HTTP 500"


def test_wrong_secret_does_not_verify() -> None:
    from driftline.triggers.webhook import signed_headers

    headers = signed_headers(SECRET, "msg_1", '{"a": 1}', datetime.now(UTC))
    assert Webhook(SECRET).verify('{"a": 1}', headers) == {"a": 1}
    other = Webhook("whsec_" + "A" * 32)
    with pytest.raises(Exception, match="No matching signature"):
        other.verify('{"a": 1}', headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SECRET).verify('{"a": 2}', headers)


def test_unreachable_receiver_is_an_error_not_a_crash() -> None:
    async def attempt() -> str | None:
        target = WebhookTarget(url="http://127.0.0.1:9/hook", secret=SECRET, timeout_s=2)  # type: ignore[arg-type]
        async with aiohttp.ClientSession() as session:
            delivery = DeliveryRow(1, "id", "m", "webhook", str(target.url), 0, "{}")
            result = await WebhookSender(session).send(target, delivery, datetime.now(UTC))
        assert not result.ok
        return result.error

    assert "Connect" in (asyncio.run(attempt()) or "")


class Scripted:
    """Answers each request with the next (status, headers, delay) of a script."""

    def __init__(self, script: list[tuple[int, dict[str, str], float]]) -> None:
        self.script = list(script)
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        status, headers, delay = self.script.pop(0) if self.script else (204, {}, 0.0)
        await asyncio.sleep(delay)
        return web.Response(status=status, headers=headers)


async def one_pass(
    script: list[tuple[int, dict[str, str], float]], store: Store, timeout_s: float = 5.0
) -> tuple[Scripted, float]:
    receiver = Scripted(script)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    target = WebhookTarget(
        url=f"http://127.0.0.1:{port}/hook",
        secret=SECRET,  # type: ignore[arg-type]
        timeout_s=timeout_s,
    )
    reports, triggers = drifting_results()
    store.record_results(reports, triggers, {"m": [target]}, NOW)
    try:
        async with aiohttp.ClientSession() as session:
            started = asyncio.get_running_loop().time()
            await OutboxRelay(
                store, {"webhook": WebhookSender(session)}, {"m": [target]}
            ).run_once()
            took = asyncio.get_running_loop().time() - started
    finally:
        await runner.cleanup()
    return receiver, took


@pytest.mark.parametrize("retry_after", ["120", "HTTP-DATE"])
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(store: Store, status: int, retry_after: str) -> None:
    from email.utils import format_datetime

    now = datetime.now(UTC)
    header = (
        retry_after
        if retry_after != "HTTP-DATE"
        else format_datetime(now + timedelta(seconds=120), usegmt=True)
    )
    asyncio.run(one_pass([(status, {"Retry-After": header}, 0.0)], store))
    (row,) = store.due_deliveries(now + timedelta(days=1))
    assert row.attempts == 1
    assert store.due_deliveries(now + timedelta(seconds=100)) == []  # not before it asked


def test_a_hanging_receiver_is_timed_out_and_retried(store: Store) -> None:
    receiver, took = asyncio.run(one_pass([(204, {}, 3.0)], store, timeout_s=0.5))
    assert receiver.calls == 1
    assert took < 2.0  # the pass gave up after the timeout, not after the receiver
    (row,) = store.deliveries()
    assert row["status"] == "pending"
    assert row["attempts"] == 1
    assert "Timeout" in row["last_error"]


def test_a_dead_delivery_replays_with_the_same_id_and_succeeds(store: Store) -> None:
    async def scenario() -> tuple[Receiver, list[str]]:
        receiver = Receiver([500, 500])  # then 200
        runner, url = await serve(receiver)
        target = WebhookTarget(url=url, secret=SECRET, max_attempts=2)  # type: ignore[arg-type]
        reports, triggers = drifting_results()
        store.record_results(reports, triggers, {"m": [target]}, NOW)
        try:
            async with aiohttp.ClientSession() as session:
                sender = {"webhook": WebhookSender(session)}
                relay, outcomes = recording_relay(store, sender, target)
                await run_passes(relay, store, 3)
                (dead,) = store.deliveries()
                assert dead["status"] == "dead"
                replayed = store.replay_delivery(dead["id"], datetime.now(UTC))
                assert replayed is not None
                assert (replayed["id"], replayed["status"]) == (dead["id"], "pending")
                with pytest.raises(ValueError, match="only dead ones replay"):
                    store.replay_delivery(dead["id"], NOW)
                await relay.run_once()
        finally:
            await runner.cleanup()
        return receiver, outcomes

    receiver, outcomes = asyncio.run(scenario())
    assert outcomes == ["retry", "dead", "delivered"]
    assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 1  # same id
    (row,) = store.deliveries()
    assert (row["status"], row["last_status"]) == ("delivered", 200)
    assert [a["outcome"] for a in row["attempt_log"]] == ["retry", "dead", "delivered"]
    assert store.replay_delivery(9999, NOW) is None


def test_410_disables_the_endpoint(store: Store) -> None:
    """A 410 kills the delivery and the endpoint: later triggers are not sent to it."""
    first, _ = asyncio.run(one_pass([(410, {}, 0.0)], store))
    (gone,) = store.deliveries()
    assert (gone["status"], gone["last_status"], first.calls) == ("dead", 410, 1)
    (url,) = store.disabled_endpoints()
    assert "HTTP 410 Gone" in store.disabled_endpoints()[url]

    async def later_trigger() -> int:
        receiver = Scripted([])
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = int(url.split(":")[2].split("/")[0])
        await web.TCPSite(runner, "127.0.0.1", port).start()
        target = WebhookTarget(url=url, secret=SECRET)  # type: ignore[arg-type]
        reports, triggers = drifting_results()
        moved = [
            t.model_copy(update={"data": t.data.model_copy(update={"trigger_id": "trg_later"})})
            for t in triggers
        ]
        store.record_results(reports, moved, {"m": [target]}, NOW)
        try:
            async with aiohttp.ClientSession() as session:
                await OutboxRelay(
                    store, {"webhook": WebhookSender(session)}, {"m": [target]}
                ).run_once()
        finally:
            await runner.cleanup()
        return receiver.calls

    assert asyncio.run(later_trigger()) == 0  # nothing was sent
    later = store.deliveries("trg_later")[0]
    assert later["status"] == "dead"
    assert later["last_error"].startswith("endpoint disabled: HTTP 410 Gone")
