"""Real HTTP receivers that fail for a while, answer slowly, and say whether one delivery
was ever attempted twice at once: a signed-webhook receiver and a Kubeflow Pipelines API.

Each runs on its own event loop in a thread (``serving``), so that a test, a relay in
the test's loop, and worker processes can all call it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class InFlight:
    """Requests in flight per delivery (a webhook-id, a Kubeflow run name)."""

    now: Counter[str] = field(default_factory=Counter)
    most: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)

    @contextmanager
    def one(self, key: str) -> Iterator[None]:
        self.now[key] += 1
        self.requests[key] += 1
        self.most[key] = max(self.most[key], self.now[key])
        try:
            yield
        finally:
            self.now[key] -= 1

    @property
    def overlapping(self) -> dict[str, int]:
        """Deliveries attempted more than once at a time, with how many at most."""
        return {key: most for key, most in self.most.items() if most > 1}


class _App(Protocol):
    def routes(self, app: web.Application) -> None: ...


@dataclass
class FlakyWebhook:
    """Verifies Standard Webhooks signatures; answers 503 until ``failing_s`` after its
    first request, then 204. Each request is held ``delay_s`` (so that two attempts of
    one delivery would overlap)."""

    secret: str
    failing_s: float = 3.0
    delay_s: float = 0.3
    flight: InFlight = field(default_factory=InFlight)
    accepted: Counter[str] = field(default_factory=Counter)
    bodies: dict[str, Any] = field(default_factory=dict)
    unverified: int = 0
    _first: float | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.unverified += 1
            return web.Response(status=400)
        message_id = request.headers["webhook-id"]
        self._first = self._first or time.monotonic()
        with self.flight.one(message_id):
            await asyncio.sleep(self.delay_s)
            if time.monotonic() - self._first < self.failing_s:
                return web.Response(status=503)
            self.accepted[message_id] += 1
            self.bodies[message_id] = payload
            return web.Response(status=204)


@dataclass
class FlakyKubeflow:
    """The Kubeflow Pipelines v2beta1 calls driftline makes (list runs by display name,
    create a run); 503 to each until ``failing_s`` after the first, each held
    ``delay_s``. A run created twice for one name is what a lookup/create race gives."""

    failing_s: float = 3.0
    delay_s: float = 0.3
    flight: InFlight = field(default_factory=InFlight)
    runs: list[dict[str, Any]] = field(default_factory=list)
    _first: float | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/apis/v2beta1/runs", self._list)
        app.router.add_post("/apis/v2beta1/runs", self._create)

    def created(self) -> Counter[str]:
        return Counter(run["display_name"] for run in self.runs)

    def _failing(self) -> bool:
        self._first = self._first or time.monotonic()
        return time.monotonic() - self._first < self.failing_s

    async def _list(self, request: web.Request) -> web.Response:
        (predicate,) = json.loads(request.query["filter"])["predicates"]
        name = predicate["string_value"]
        with self.flight.one(name):
            await asyncio.sleep(self.delay_s)
            if self._failing():
                return web.json_response({"error": "unavailable"}, status=503)
            runs = [r for r in self.runs if r["display_name"] == name]
            return web.json_response({"runs": runs, "total_size": len(runs)})

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self.flight.one(body["display_name"]):
            await asyncio.sleep(self.delay_s)
            if self._failing():
                return web.json_response({"error": "unavailable"}, status=503)
            run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING"}
            self.runs.append(run)
            return web.json_response(run)


@contextmanager
def serving(receiver: _App) -> Iterator[str]:
    """Serve ``receiver`` on 127.0.0.1 from a thread of its own; yields its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[web.AppRunner, str]:
        app = web.Application()
        receiver.routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{port}/"

    runner, url = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
