"""HTTP views on the worker's web port: metrics, health, readiness and the /v1 API.

Every /v1 call needs an API key (``Authorization: Bearer dl_...``) unless
``DRIFTLINE_API_AUTH=none``. A key sees only its tenant's models: anything of another
tenant answers 404, as if it did not exist. Store reads run in a thread so a slow
database does not stall the stream.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, cast

import faust
import orjson
from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from driftline.auth import Principal, RateLimiter, Scope, matches, parse_key
from driftline.exceptions import InvalidMonitor, ReferenceDataError
from driftline.registry import build_reference, labels_of, stored_monitor_spec
from driftline.schemas.alertmanager import Notification
from driftline.schemas.monitors import FeatureSpec, MonitorSpec
from driftline.settings import Settings
from driftline.store.repository import MonitorConflict, MonitorRecord
from driftline.stream.openapi import openapi_document
from driftline.stream.outcomes import OutcomeState
from driftline.stream.service import DriftService
from driftline.triggers.alerts import receive
from driftline.triggers.policy import EpisodePolicy

PROBLEM_JSON = "application/problem+json"
#: Row ids are 32-bit integers in every supported database.
MAX_ID = 2**31 - 1
_ID = re.compile(r"^[0-9]{1,10}$")
#: How long a verified key is trusted before the store is asked again (revocation delay).
KEY_CACHE_S = 10.0


class Problem(Exception):
    """An RFC 9457 problem to answer with."""

    def __init__(
        self, status: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = headers or {}


def problem(view: View, status: int, title: str, detail: str, **headers: str) -> Response:
    """An RFC 9457 problem body."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return view.json(body, status=status, content_type=PROBLEM_JSON, headers=headers or None)


def _stored_labels(record: Any) -> Any:
    """A stored monitor's labels section; a 409 if it no longer validates (a monitor
    stored before a check it fails was added: it does not run either)."""
    try:
        return labels_of(record)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Problem(
            409,
            "Invalid stored monitor",
            f"labels.{where}: {first['msg'].removeprefix('Value error, ')}; replace the "
            "monitor (PUT) with a valid spec",
        ) from None


async def read_json_body(request: Request, limit_kb: int) -> bytes:
    """A JSON request's body, refused with 413 past ``limit_kb`` KiB: by its declared
    length before anything is read, else as it arrives (a chunked body has none)."""
    raw = cast(web.Request, request)  # Faust's aiohttp driver hands aiohttp's request
    limit = limit_kb * 1024
    too_large = Problem(
        413,
        "Body too large",
        f"body: more than {limit_kb} KiB (DRIFTLINE_API_MAX_JSON_KB)",
        {"Connection": "close"},
    )
    if raw.content_length is not None and raw.content_length > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in raw.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _limit(request: Request, default: int = 20, most: int = 1000) -> int:
    raw = request.query.get("limit", str(default))
    if not _ID.match(raw) or not 1 <= int(raw) <= most:
        raise Problem(400, "Invalid query", f"limit: a whole number from 1 to {most}, got {raw!r}")
    return int(raw)


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise Problem(400, "Invalid query", f"{name}: one of {', '.join(allowed)}, got {value!r}")


class Gate:
    """Authenticates API keys, applies per-key rate limits, and checks scopes."""

    def __init__(self, service: DriftService, settings: Settings) -> None:
        self._service = service
        self._open = settings.api_auth == "none"
        self._limiter = RateLimiter(settings.api_rate_limit, settings.api_rate_burst)
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def check(self, request: Request, needed: Scope) -> Principal:
        if self._open:
            return Principal("-", "*", "admin")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "Unauthorized",
                "send an API key: Authorization: Bearer dl_...",
                {"WWW-Authenticate": 'Bearer realm="driftline"'},
            )
        principal = await self._principal(token.strip())
        wait = self._limiter.acquire(principal.key_id)
        if wait > 0:
            raise Problem(
                429,
                "Too many requests",
                f"this key is limited to {self._limiter.rate:g} requests per second",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if not principal.allows(needed):
            raise Problem(403, "Forbidden", f"this needs a key with {needed} scope")
        return principal

    async def _principal(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        invalid = Problem(
            401,
            "Unauthorized",
            "the API key is not valid (unknown, revoked or mistyped)",
            {"WWW-Authenticate": 'Bearer realm="driftline", error="invalid_token"'},
        )
        parsed = parse_key(token)
        if parsed is None:
            raise invalid
        key_id, secret = parsed
        stored = await asyncio.to_thread(self._service.store.api_key, key_id)
        if stored is None or not matches(secret, stored[0]):
            raise invalid
        principal = Principal(key_id, stored[1], stored[2])  # type: ignore[arg-type]
        self._cache[token] = (principal, time.monotonic() + KEY_CACHE_S)
        return principal

    def models(self, principal: Principal) -> list[str]:
        """The models a caller may see: its tenant's in the registry (running or not)."""
        return [
            model_id
            for model_id, tenant in self._service.tenants.items()
            if principal.tenant in ("*", tenant)
        ]

    def running(self, principal: Principal) -> list[str]:
        """The caller's models this worker runs now."""
        return [m for m in self.models(principal) if m in self._service.monitors]


def register_views(app: faust.App, service: DriftService, settings: Settings) -> None:
    """Add driftline's pages to the Faust app's web server."""
    store = service.store
    gate = Gate(service, settings)

    def api(
        needed: Scope,
    ) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
        """A /v1 handler: authorized, its Problems answered as RFC 9457 bodies."""

        def wrap(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
            async def run(view: View, request: Request, **kwargs: Any) -> Response:
                try:
                    principal = await gate.check(request, needed)
                    return await handler(view, request, principal, **kwargs)
                except Problem as exc:
                    return problem(view, exc.status, exc.title, exc.detail, **exc.headers)

            return run

        return wrap

    def own_model(principal: Principal, model_id: str | None) -> None:
        if model_id is not None and model_id not in gate.models(principal):
            raise Problem(404, "Unknown model", f"model_id: no monitor for model {model_id!r}")

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # As Prometheus' own exporters: name[]=... renders only those metrics.
            names = request.query.getall("name[]", [])  # type: ignore[attr-defined]
            registry = service.metrics.registry
            # aiohttp refuses a charset in content_type, so the header carries it.
            return self.bytes(
                generate_latest(registry.restricted_registry(names) if names else registry),
                headers={"Content-Type": CONTENT_TYPE_LATEST},
            )

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            now = time.monotonic()
            last, started = service.relay_last_pass, service.relay_pass_started
            # The relay passes every DRIFTLINE_RELAY_INTERVAL_S. A pass waiting on slow
            # receivers (each bounded by its timeout) is fine; no pass for long: stuck.
            relay = (
                last is not None and now - last < max(30.0, 10 * settings.relay_interval_s)
            ) or (started is not None and (last is None or started > last) and now - started < 300)
            checks = {
                "store": service.store_healthy and await asyncio.to_thread(store.ping),
                "broker": service.broker_healthy,
                "relay": relay,
            }
            ready = all(checks.values())
            return self.json({"ready": ready, "checks": checks}, status=200 if ready else 503)

    @app.page("/v1/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            return self.json(openapi_document())

    @app.page("/v1/models")
    class Models(View):
        @api("read")
        async def get(self, request: Request, principal: Principal) -> Response:
            summaries = [_model_summary(service, m) for m in gate.running(principal)]
            return self.json({"models": summaries})

    @app.page("/v1/models/{model_id}/state")
    class ModelState(View):
        @api("read")
        async def get(self, request: Request, principal: Principal, model_id: str) -> Response:
            own_model(principal, model_id)
            limit = _limit(request, default=10, most=200)
            if model_id not in service.states:
                raise Problem(
                    409, "Not running", f"model_id: {model_id!r} is paused or has no reference"
                )
            state = service.states[model_id]
            reports, triggers = await asyncio.to_thread(
                lambda: (
                    store.reports(model_id, limit),
                    store.triggers(model_id, limit=1000),
                )
            )
            current = state.current_report()
            body = {
                "model_id": model_id,
                # A worker holds the windows of the partitions it consumes only.
                "consumed_here": model_id in service.consumed_models(),
                "watermark": service.watermarks().get(model_id),
                "current_window": None if current is None else current.model_dump(mode="json"),
                "episode": episode_state(state.policy),
                "reports": reports,
                "episodes": episodes_of(triggers),
                "labels": None
                if state.outcomes is None
                else await labels_state(state.outcomes, model_id, limit, state.model_version),
            }
            return self.json(body)

    async def labels_state(
        outcomes: OutcomeState, model_id: str, limit: int, model_version: str | None
    ) -> dict[str, Any]:
        reports = await asyncio.to_thread(store.performance_reports, model_id, limit)
        current = outcomes.current_report(model_version)
        detector = outcomes.detector
        predictions, labels = outcomes.join.waiting
        return {
            "pending_predictions": predictions,
            "pending_labels": labels,
            "counts": vars(outcomes.join.counts),
            "concept": None
            if detector is None
            else {
                "detector": detector.kind,
                "detections": detector.detections,
                "estimation": detector.estimation,
            },
            "current_window": None if current is None else current.model_dump(mode="json"),
            "episode": episode_state(outcomes.policy),
            "reports": reports,
        }

    @app.page("/v1/models/{model_id}/performance")
    class Performance(View):
        @api("read")
        async def get(self, request: Request, principal: Principal, model_id: str) -> Response:
            own_model(principal, model_id)
            limit = _limit(request)
            degraded = request.query.get("degraded")
            if degraded not in (None, "true", "false"):
                raise Problem(400, "Invalid query", f"degraded: true or false, got {degraded!r}")
            reports = await asyncio.to_thread(
                store.performance_reports,
                model_id,
                limit,
                None if degraded is None else degraded == "true",
            )
            return self.json({"reports": reports})

    @app.page("/v1/reports")
    class Reports(View):
        @api("read")
        async def get(self, request: Request, principal: Principal) -> Response:
            model_id = request.query.get("model_id")
            own_model(principal, model_id)
            limit = _limit(request)
            segment = request.query.get("segment")
            reports = await asyncio.to_thread(
                lambda: store.reports(model_id, limit, segment, models=gate.models(principal))
            )
            return self.json({"reports": reports})

    @app.page("/v1/triggers")
    class Triggers(View):
        @api("read")
        async def get(self, request: Request, principal: Principal) -> Response:
            model_id = request.query.get("model_id")
            own_model(principal, model_id)
            status = request.query.get("status")
            limit = _limit(request, default=100)
            _choice("status", status, ("fired", "suppressed"))
            rows = await asyncio.to_thread(
                lambda: store.triggers(model_id, status, limit, models=gate.models(principal))
            )
            return self.json({"triggers": rows})

    def sees_delivery(principal: Principal, row: dict[str, Any]) -> bool:
        """A delivery is its tenant's (recorded with it), even once its monitor is gone."""
        if principal.tenant == "*":
            return True
        if row["tenant"] is not None:
            return bool(row["tenant"] == principal.tenant)
        return row["model_id"] in gate.models(principal)  # recorded before tenants were

    async def owned_delivery(principal: Principal, delivery_id: str) -> dict[str, Any]:
        row = None
        if _ID.match(delivery_id) and int(delivery_id) <= MAX_ID:
            row = await asyncio.to_thread(store.delivery, int(delivery_id))
        if row is None or not sees_delivery(principal, row):
            raise Problem(404, "Unknown delivery", f"no delivery {delivery_id!r}")
        return row

    @app.page("/v1/deliveries/{delivery_id}/replay")
    class ReplayDelivery(View):
        @api("write")
        async def post(self, request: Request, principal: Principal, delivery_id: str) -> Response:
            await owned_delivery(principal, delivery_id)
            now = datetime.now(UTC)
            try:
                row = await asyncio.to_thread(store.replay_delivery, int(delivery_id), now)
            except ValueError as exc:
                raise Problem(409, "Not replayable", str(exc)) from None
            return self.json({"delivery": row}, status=202)

    @app.page("/v1/deliveries/{delivery_id}")
    class Delivery(View):
        @api("read")
        async def get(self, request: Request, principal: Principal, delivery_id: str) -> Response:
            return self.json({"delivery": await owned_delivery(principal, delivery_id)})

    @app.page("/v1/deliveries")
    class Deliveries(View):
        @api("read")
        async def get(self, request: Request, principal: Principal) -> Response:
            trigger_id = request.query.get("trigger_id")
            status = request.query.get("status")
            limit = _limit(request, default=100)
            _choice("status", status, ("pending", "delivered", "dead", "cancelled"))
            tenant = tenant_of(principal)
            models = None if tenant is None else gate.models(principal)
            rows = await asyncio.to_thread(
                lambda: store.deliveries(trigger_id, status, limit, models=models, tenant=tenant)
            )
            return self.json({"deliveries": rows})

    def endpoints_of(principal: Principal) -> set[str]:
        """The target URLs of the caller's monitors."""
        return {
            t.key
            for model_id in gate.running(principal)
            for t in service.monitors[model_id].spec.targets
        }

    @app.page("/v1/disabled-endpoints")
    class DisabledEndpoints(View):
        @api("read")
        async def get(self, request: Request, principal: Principal) -> Response:
            mine = endpoints_of(principal)
            rows = await asyncio.to_thread(store.disabled_endpoint_list)
            return self.json({"endpoints": [r for r in rows if r["url"] in mine]})

        @api("admin")
        async def delete(self, request: Request, principal: Principal) -> Response:
            url = request.query.get("url")
            if not url:
                raise Problem(400, "Invalid query", "url: give the endpoint as ?url=...")
            if url not in endpoints_of(principal) or not await asyncio.to_thread(
                store.enable_endpoint, url
            ):
                raise Problem(404, "Not disabled", f"url: {url} is not a disabled endpoint")
            return self.json({"enabled": url})

    def tenant_of(principal: Principal) -> str | None:
        return None if principal.tenant == "*" else principal.tenant

    async def owned_monitor(principal: Principal, model_id: str) -> MonitorRecord:
        record = await asyncio.to_thread(store.monitor_record, model_id)
        if record is None or principal.tenant not in ("*", record.tenant):
            raise Problem(404, "Unknown monitor", f"model_id: no monitor {model_id!r}")
        return record

    async def read_spec(request: Request, principal: Principal) -> MonitorSpec:
        """A monitor spec from the body: the checks ``driftline monitors apply`` makes too."""
        try:
            body = orjson.loads(await read_json_body(request, settings.api_max_json_kb))
        except orjson.JSONDecodeError as exc:
            raise Problem(400, "Invalid body", f"body: not JSON ({exc})") from None
        if isinstance(body, dict) and principal.tenant not in (
            "*",
            body.get("tenant", principal.tenant),
        ):
            raise Problem(403, "Forbidden", f"tenant: this key acts for {principal.tenant!r}")
        default = "default" if principal.tenant == "*" else principal.tenant
        try:
            return stored_monitor_spec(body, tenant=default, topic_prefix=settings.topic_prefix)
        except InvalidMonitor as exc:
            raise Problem(400, "Invalid monitor", str(exc)) from None

    def monitor_body(record: MonitorRecord) -> dict[str, Any]:
        return {**record.as_json(), "running": record.model_id in service.monitors}

    @app.page("/v1/monitors")
    class Monitors(View):
        @api("read")
        async def get(self, request: Request, principal: Principal) -> Response:
            records = await asyncio.to_thread(store.monitor_records, tenant_of(principal))
            return self.json({"monitors": [monitor_body(r) for r in records]})

        @api("write")
        async def post(self, request: Request, principal: Principal) -> Response:
            spec = await read_spec(request, principal)
            try:
                record = await asyncio.to_thread(store.create_monitor, spec, datetime.now(UTC))
            except MonitorConflict as exc:
                raise Problem(409, "Conflict", str(exc)) from None
            return self.json({"monitor": monitor_body(record)}, status=201)

    @app.page("/v1/monitors/{model_id}")
    class OneMonitor(View):
        @api("read")
        async def get(self, request: Request, principal: Principal, model_id: str) -> Response:
            return self.json({"monitor": monitor_body(await owned_monitor(principal, model_id))})

        @api("write")
        async def put(self, request: Request, principal: Principal, model_id: str) -> Response:
            await owned_monitor(principal, model_id)
            spec = await read_spec(request, principal)
            if spec.model_id != model_id:
                raise Problem(400, "Invalid monitor", "model_id: must be the one in the path")
            try:
                record = await asyncio.to_thread(store.update_monitor, spec, datetime.now(UTC))
            except MonitorConflict as exc:
                raise Problem(409, "Conflict", str(exc)) from None
            assert record is not None
            return self.json({"monitor": monitor_body(record)})

        @api("admin")
        async def delete(self, request: Request, principal: Principal, model_id: str) -> Response:
            await owned_monitor(principal, model_id)
            try:
                await asyncio.to_thread(store.delete_monitor, model_id, datetime.now(UTC))
            except MonitorConflict as exc:
                raise Problem(409, "Conflict", str(exc)) from None
            return self.json({"deleted": model_id})

    @app.page("/v1/monitors/{model_id}/references")
    class References(View):
        @api("read")
        async def get(self, request: Request, principal: Principal, model_id: str) -> Response:
            await owned_monitor(principal, model_id)
            versions = await asyncio.to_thread(store.reference_versions, model_id)
            return self.json({"references": versions})

        @api("write")
        async def post(self, request: Request, principal: Principal, model_id: str) -> Response:
            record = await owned_monitor(principal, model_id)
            data = await request.read()
            source = request.query.get("from")
            if source is not None:
                return self.json(
                    {"reference": await from_window(request, model_id, source)}, status=201
                )
            if not data:
                raise Problem(400, "Invalid body", "body: a Parquet or CSV file")
            name = request.query.get("name") or "uploaded through the API"
            try:
                version = await asyncio.to_thread(
                    build_reference,
                    store,
                    model_id,
                    features_of(record),
                    data,
                    name[:200],
                    datetime.now(UTC),
                    _stored_labels(record),
                )
            except ReferenceDataError as exc:
                raise Problem(400, "Invalid reference data", f"body: {exc}") from None
            if request.query.get("activate", "true").lower() != "false":
                await asyncio.to_thread(
                    store.activate_reference, model_id, version, datetime.now(UTC)
                )
            versions = await asyncio.to_thread(store.reference_versions, model_id)
            (built,) = [v for v in versions if v["version"] == version]
            return self.json({"reference": built}, status=201)

    @app.page("/v1/monitors/{model_id}/references/{version}/activate")
    class Activate(View):
        @api("write")
        async def post(
            self, request: Request, principal: Principal, model_id: str, version: str
        ) -> Response:
            monitor = await owned_monitor(principal, model_id)
            record = None
            if _ID.match(version) and int(version) <= MAX_ID:
                loaded = await asyncio.to_thread(store.load_profile, model_id, int(version))
                labels = _stored_labels(monitor)
                if loaded is not None and labels is not None and loaded[1].outcomes is None:
                    raise Problem(
                        409,
                        "Labels needed",
                        f"version: reference {version} has no labels, and the monitor has a "
                        "labels section",
                    )
                record = await asyncio.to_thread(
                    store.activate_reference, model_id, int(version), datetime.now(UTC)
                )
            if record is None:
                raise Problem(404, "Unknown reference", f"version: no version {version!r}")
            return self.json({"monitor": monitor_body(record)})

    def pause_page(action: str) -> None:
        @app.page(f"/v1/monitors/{{model_id}}/{action}")
        class PauseResume(View):
            @api("write")
            async def post(self, request: Request, principal: Principal, model_id: str) -> Response:
                await owned_monitor(principal, model_id)
                record = await asyncio.to_thread(
                    store.set_paused, model_id, action == "pause", datetime.now(UTC)
                )
                assert record is not None
                return self.json({"monitor": monitor_body(record)})

    pause_page("pause")
    pause_page("resume")

    async def from_window(request: Request, model_id: str, source: str) -> dict[str, Any]:
        """A reference profile from the window in progress (the worker consuming the model
        holds it), on the active reference's bins."""
        if source != "current_window":
            raise Problem(400, "Invalid query", f"from: current_window, got {source!r}")
        if model_id not in service.consumed_models():
            raise Problem(
                409,
                "Not here",
                "from: the window in progress is held by the worker that consumes the "
                "model's partition; this one does not (retry, or upload a file)",
            )
        if service.monitors[model_id].spec.labels is not None:
            raise Problem(
                409,
                "Labels needed",
                "from: a monitor with labels needs a reference with labels and predictions; "
                "upload a file with those columns",
            )
        current = service.states[model_id].current_profile()
        if current is None:
            raise Problem(409, "No window", "from: the model has no window in progress")
        profile, start, end = current
        now = datetime.now(UTC)
        label = (
            f"window {datetime.fromtimestamp(start, UTC).isoformat()}"
            f"..{datetime.fromtimestamp(end, UTC).isoformat()}"
        )
        version = await asyncio.to_thread(store.save_profile, model_id, profile, label, now)
        if request.query.get("activate", "true").lower() != "false":
            await asyncio.to_thread(store.activate_reference, model_id, version, now)
        versions = await asyncio.to_thread(store.reference_versions, model_id)
        (built,) = [v for v in versions if v["version"] == version]
        return built

    def features_of(record: MonitorRecord) -> list[FeatureSpec]:
        """The features a reference is built for (a running monitor's, else the stored)."""
        running = service.monitors.get(record.model_id)
        if running is not None:
            return list(running.features)
        return [FeatureSpec.model_validate(f) for f in record.spec.get("features") or []]

    @app.page("/v1/alertmanager")
    class AlertmanagerReceiver(View):
        @api("write")
        async def post(self, request: Request, principal: Principal) -> Response:
            try:
                notification = Notification.model_validate_json(
                    await read_json_body(request, settings.api_max_json_kb)
                )
            except ValidationError as exc:
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                    for e in exc.errors(include_url=False)
                )
                raise Problem(400, "Not an Alertmanager v4 notification", detail) from None
            visible = {m: service.monitors[m] for m in gate.running(principal)}
            try:
                outcomes = await asyncio.to_thread(
                    receive,
                    notification,
                    visible,
                    store,
                    settings.alertmanager_trigger_label,
                    settings.alertmanager_model_label,
                    datetime.now(UTC),
                )
            except SQLAlchemyError as exc:  # Alertmanager retries a 5xx: nothing is lost
                service.metrics.store_errors.inc()
                raise Problem(
                    503, "Store unavailable", f"try again: {type(exc).__name__}"
                ) from None
            if any(o.outcome == "fired" for o in outcomes):
                service.outbox_changed.set()
            for outcome in outcomes:
                service.metrics.alerts.labels(outcome.outcome).inc()
                if outcome.outcome in ("fired", "suppressed") and outcome.model_id is not None:
                    service.metrics.triggers.labels(
                        outcome.model_id, "alertmanager", outcome.outcome
                    ).inc()
            return self.json({"alerts": [asdict(o) for o in outcomes]})


def episode_state(policy: EpisodePolicy) -> dict[str, Any]:
    return {
        "open": policy.episode_open,
        "episode_id": policy.episode_id,
        "fired": policy.episode_fired,
        "consecutive_drifted_windows": policy.consecutive_drifted,
        "consecutive_clean_windows": policy.consecutive_clean,
    }


def episodes_of(triggers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drift episodes from their triggers (newest first): when each started, what it sent."""
    episodes: dict[str, dict[str, Any]] = {}
    for trigger in triggers:
        data = trigger["event"]["data"]
        episode = episodes.setdefault(
            trigger["episode_id"],
            {
                "episode_id": trigger["episode_id"],
                "started_at": data["episode_started_at"],
                "source": trigger["source"],
                "requests": [],
            },
        )
        episode["requests"].append(
            {
                "trigger_id": trigger["trigger_id"],
                "status": trigger["status"],
                "severity": trigger["severity"],
                "created_at": trigger["created_at"],
            }
        )
    return sorted(episodes.values(), key=lambda e: e["started_at"], reverse=True)


def _model_summary(service: DriftService, model_id: str) -> dict[str, Any]:
    monitor = service.monitors[model_id]
    last = service.states[model_id].last_report
    return {
        "model_id": model_id,
        "tenant": monitor.spec.tenant,
        "reference_version": monitor.reference_version,
        "features": [{"name": f.name, "kind": f.kind} for f in monitor.features],
        "window": monitor.spec.window.model_dump(mode="json"),
        "watermark": service.watermarks().get(model_id),
        "last_report": None if last is None else last.model_dump(mode="json"),
    }
