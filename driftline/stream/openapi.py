"""The OpenAPI 3.1 document of the /v1 API, served at /v1/openapi.json.

Schemas come from the pydantic models the responses are checked against
(``driftline.schemas.api``), so the document and the code cannot drift apart;
schemathesis runs against it in the test suite.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from driftline import __version__
from driftline.schemas import api
from driftline.schemas.alertmanager import Notification
from driftline.schemas.monitors import MonitorSpec

_REF = "#/components/schemas/{model}"
_ERRORS = {
    "400": "Invalid query or body",
    "401": "No API key, or not a valid one",
    "403": "The key's scope does not allow this",
    "404": "Not found (or another tenant's)",
    "409": "Conflicts with the resource's state",
    "429": "Rate limited: retry after Retry-After seconds",
    "503": "The store is unavailable: retry",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(
    summary: str,
    ok: type[BaseModel],
    errors: tuple[str, ...],
    *,
    ok_status: str = "200",
    parameters: list[dict[str, Any]] | None = None,
    body: type[BaseModel] | None = None,
    secured: bool = True,
) -> dict[str, Any]:
    responses: dict[str, Any] = {ok_status: {"description": "OK", "content": _json(_ref(ok))}}
    for status in (*errors, *(("401", "429") if secured else ())):
        response: dict[str, Any] = {
            "description": _ERRORS[status],
            "content": {"application/problem+json": {"schema": _ref(api.Problem)}},
        }
        if status == "429":
            response["headers"] = {
                "Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}
            }
        responses[status] = response
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(_ref(body))}
    if not secured:
        operation["security"] = []
    return operation


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_LIMIT = _query("limit", "Most rows returned.", {"type": "integer", "minimum": 1, "maximum": 1000})
_MODEL = _query("model_id", "Only this model's.", {"type": "string"})
_DELIVERY_ID = {
    "name": "delivery_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
}


@cache
def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        api.Problem,
        api.Models,
        api.Reports,
        api.Triggers,
        api.Deliveries,
        api.OneDelivery,
        api.DisabledEndpoints,
        api.Enabled,
        api.AlertOutcomes,
        api.Health,
        api.Readiness,
        api.MonitorList,
        api.OneMonitor,
        api.Deleted,
        api.ReferenceList,
        api.OneReference,
        api.ModelState,
        api.PerformanceReports,
    ]
    _, definitions = models_json_schema(
        [(m, "serialization") for m in models]
        + [(Notification, "validation"), (MonitorSpec, "validation")],
        ref_template=_REF,
    )
    model = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/v1/monitors": {
            "get": _operation(
                "Your tenant's monitors (from the file and the API)", api.MonitorList, ()
            ),
            "post": _operation(
                "Create a monitor; workers run it once it has a reference",
                api.OneMonitor,
                ("400", "403", "409"),
                ok_status="201",
                body=MonitorSpec,
            ),
        },
        "/v1/monitors/{model_id}": {
            "get": _operation("One monitor", api.OneMonitor, ("404",), parameters=[model]),
            "put": _operation(
                "A new version of a monitor (its windows start afresh)",
                api.OneMonitor,
                ("400", "403", "404", "409"),
                parameters=[model],
                body=MonitorSpec,
            ),
            "delete": _operation(
                "Delete a monitor made through the API",
                api.Deleted,
                ("403", "404", "409"),
                parameters=[model],
            ),
        },
        **{
            f"/v1/monitors/{{model_id}}/{action}": {
                "post": _operation(
                    f"{action.capitalize()} a monitor",
                    api.OneMonitor,
                    ("403", "404"),
                    parameters=[model],
                )
            }
            for action in ("pause", "resume")
        },
        "/v1/monitors/{model_id}/references": {
            "get": _operation(
                "Reference profile versions", api.ReferenceList, ("404",), parameters=[model]
            ),
            "post": {
                **_operation(
                    "Build a reference profile from a Parquet or CSV file (the body)",
                    api.OneReference,
                    ("400", "403", "404", "409"),
                    ok_status="201",
                    parameters=[
                        model,
                        _query(
                            "activate",
                            "Make it the active reference (default true).",
                            {"enum": ["true", "false"]},
                        ),
                        _query("name", "Where the data came from.", {"type": "string"}),
                        _query(
                            "from",
                            "current_window: build it from the window in progress instead "
                            "(on the worker consuming the model; 409 elsewhere).",
                            {"enum": ["current_window"]},
                        ),
                    ],
                ),
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
            },
        },
        "/v1/monitors/{model_id}/references/{version}/activate": {
            "post": _operation(
                "Make a stored version the active reference",
                api.OneMonitor,
                ("403", "404", "409"),
                parameters=[
                    model,
                    {
                        "name": "version",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                    },
                ],
            )
        },
        "/v1/models": {"get": _operation("Your tenant's monitored models", api.Models, ())},
        "/v1/models/{model_id}/state": {
            "get": _operation(
                "The window in progress, the last reports and the drift episodes",
                api.ModelState,
                ("400", "404", "409"),
                parameters=[model, _LIMIT],
            )
        },
        "/v1/models/{model_id}/performance": {
            "get": _operation(
                "Performance windows (labelled predictions), newest first",
                api.PerformanceReports,
                ("400", "404"),
                parameters=[
                    model,
                    _LIMIT,
                    _query(
                        "degraded", "Only degraded (or not) windows.", {"enum": ["true", "false"]}
                    ),
                ],
            )
        },
        "/v1/reports": {
            "get": _operation(
                "Window reports, newest first",
                api.Reports,
                ("400", "404"),
                parameters=[
                    _MODEL,
                    _LIMIT,
                    _query("segment", "One segment's.", {"type": "string"}),
                ],
            )
        },
        "/v1/triggers": {
            "get": _operation(
                "Retraining requests, newest first",
                api.Triggers,
                ("400", "404"),
                parameters=[
                    _MODEL,
                    _query("status", "fired or suppressed", {"enum": ["fired", "suppressed"]}),
                    _LIMIT,
                ],
            )
        },
        "/v1/deliveries": {
            "get": _operation(
                "Deliveries with their attempts, newest first",
                api.Deliveries,
                ("400",),
                parameters=[
                    _query("trigger_id", "One trigger's.", {"type": "string"}),
                    _query("status", "", {"enum": ["pending", "delivered", "dead", "cancelled"]}),
                    _LIMIT,
                ],
            )
        },
        "/v1/deliveries/{delivery_id}": {
            "get": _operation("One delivery", api.OneDelivery, ("404",), parameters=[_DELIVERY_ID])
        },
        "/v1/deliveries/{delivery_id}/replay": {
            "post": _operation(
                "Send a dead delivery again (same id, same webhook-id)",
                api.OneDelivery,
                ("403", "404", "409"),
                ok_status="202",
                parameters=[_DELIVERY_ID],
            )
        },
        "/v1/disabled-endpoints": {
            "get": _operation("Endpoints disabled by 410 Gone", api.DisabledEndpoints, ()),
            "delete": _operation(
                "Send to an endpoint again",
                api.Enabled,
                ("400", "403", "404"),
                parameters=[
                    {"name": "url", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
            ),
        },
        "/v1/alertmanager": {
            "post": _operation(
                "Alertmanager webhook receiver (notification version 4)",
                api.AlertOutcomes,
                ("400", "403", "503"),
                body=Notification,
            )
        },
        "/healthz": {"get": _operation("The process is up", api.Health, (), secured=False)},
        "/readyz": {
            "get": {
                **_operation("The store is usable", api.Readiness, (), secured=False),
                "responses": {
                    "200": {"description": "Ready", "content": _json(_ref(api.Readiness))},
                    "503": {"description": "Not ready", "content": _json(_ref(api.Readiness))},
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "driftline",
            "version": __version__,
            "description": "Drift state, retraining triggers and their deliveries. Every /v1 "
            "operation needs an API key (driftline keys create) of the tenant that owns "
            "the models.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "dl_<id>_<secret>"}
            },
        },
    }
