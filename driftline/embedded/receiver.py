"""A webhook receiver that verifies Standard Webhooks signatures (demo and tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    """One request: its headers, its raw body, the parsed body if verified."""

    headers: dict[str, str]
    raw: str
    body: Any
    verified: bool
    error: str | None = None


@dataclass
class WebhookReceiver:
    """POST / verifies the signature with ``secret`` and keeps what arrived.

    Answers 204 when the signature verifies and 400 when it does not.
    """

    secret: str
    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        return f"http://{self.host}:{self.port}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        headers = dict(request.headers)
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            self.received.append(Received(headers, body, None, False, str(exc)))
            return web.json_response({"error": str(exc)}, status=400)
        self.received.append(Received(headers, body, payload, True))
        self.arrived.set()
        return web.Response(status=204)

    @property
    def verified(self) -> list[Received]:
        return [r for r in self.received if r.verified]
