"""HTTP views on the worker's web port: metrics, health, readiness and the /v1 API.

Store reads run in a thread so a slow database does not stall the stream.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from driftline.stream.service import DriftService

PROBLEM_JSON = "application/problem+json"


def problem(view: View, status: int, title: str, detail: str) -> Response:
    """An RFC 9457 problem body."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return view.json(body, status=status, content_type=PROBLEM_JSON)


def _limit(request: Request, default: int = 20, most: int = 1000) -> int:
    raw = request.query.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ValueError(f"limit must be a whole number from 1 to {most}, got {raw!r}")
    return int(raw)


def register_views(app: faust.App, service: DriftService) -> None:
    """Add driftline's pages to the Faust app's web server."""
    store = service.store

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp refuses a charset in content_type, so the header carries it.
            return self.bytes(
                generate_latest(service.metrics.registry),
                headers={"Content-Type": CONTENT_TYPE_LATEST},
            )

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            checks = {"store": service.store_healthy and await asyncio.to_thread(store.ping)}
            ready = all(checks.values())
            return self.json({"ready": ready, "checks": checks}, status=200 if ready else 503)

    @app.page("/v1/models")
    class Models(View):
        async def get(self, request: Request) -> Response:
            return self.json({"models": [_model_summary(service, m) for m in service.monitors]})

    @app.page("/v1/reports")
    class Reports(View):
        async def get(self, request: Request) -> Response:
            model_id = request.query.get("model_id")
            if model_id is not None and model_id not in service.monitors:
                return problem(self, 404, "Unknown model", f"no monitor for model {model_id!r}")
            try:
                limit = _limit(request)
            except ValueError as exc:
                return problem(self, 400, "Invalid query", str(exc))
            segment = request.query.get("segment")
            reports = await asyncio.to_thread(store.reports, model_id, limit, segment)
            return self.json({"reports": reports})

    @app.page("/v1/triggers")
    class Triggers(View):
        async def get(self, request: Request) -> Response:
            model_id = request.query.get("model_id")
            return self.json({"triggers": await asyncio.to_thread(store.triggers, model_id)})

    @app.page("/v1/deliveries/{delivery_id}/replay")
    class ReplayDelivery(View):
        async def post(self, request: Request, delivery_id: str) -> Response:
            if not delivery_id.isdigit():
                return problem(self, 404, "Unknown delivery", f"no delivery {delivery_id!r}")
            now = datetime.now(UTC)
            try:
                row = await asyncio.to_thread(store.replay_delivery, int(delivery_id), now)
            except ValueError as exc:
                return problem(self, 409, "Not replayable", str(exc))
            if row is None:
                return problem(self, 404, "Unknown delivery", f"no delivery {delivery_id}")
            return self.json({"delivery": row}, status=202)

    @app.page("/v1/deliveries")
    class Deliveries(View):
        async def get(self, request: Request) -> Response:
            trigger_id = request.query.get("trigger_id")
            return self.json({"deliveries": await asyncio.to_thread(store.deliveries, trigger_id)})


def _model_summary(service: DriftService, model_id: str) -> dict[str, Any]:
    monitor = service.monitors[model_id]
    last = service.states[model_id].last_report
    return {
        "model_id": model_id,
        "reference_version": monitor.reference_version,
        "features": [{"name": f.name, "kind": f.kind} for f in monitor.features],
        "window": monitor.spec.window.model_dump(mode="json"),
        "watermark": service.watermarks().get(model_id),
        "last_report": None if last is None else last.model_dump(mode="json"),
    }
