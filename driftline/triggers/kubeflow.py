"""Kubeflow Pipelines target: one pipeline run per retraining request (API v2beta1).

The run's display name is derived from the trigger id. A create call can fail after the
server created the run (the connection drops before the answer); so before creating, the
sender looks the run up by display name, and a run found counts as delivered.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from driftline.schemas.monitors import KubeflowTarget, Target
from driftline.schemas.retraining import RetrainingEvent
from driftline.store import DeliveryRow
from driftline.triggers.delivery import Delivery, describe

RUNS_PATH = "/apis/v2beta1/runs"


class KubeflowError(Exception):
    """The KFP API answered with an error."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail[:300]}")
        self.status = status


def run_display_name(trigger_id: str) -> str:
    """The display name of a trigger's run: what makes a retry find the same run.

    >>> run_display_name("trg_0123")
    'driftline-trg_0123'
    """
    return f"driftline-{trigger_id}"


def create_run_body(
    target: KubeflowTarget, pipeline_id: str, event: RetrainingEvent
) -> dict[str, Any]:
    """The ``V2beta1Run`` to create: pipeline reference, runtime parameters, display name."""
    data = event.data
    reference = {"pipeline_id": pipeline_id}
    if target.pipeline_version_id is not None:
        reference["pipeline_version_id"] = target.pipeline_version_id
    body: dict[str, Any] = {
        "display_name": run_display_name(data.trigger_id),
        "description": (
            f"Retraining of {data.model_id} requested by driftline "
            f"(episode {data.episode_id}, severity {data.severity})"
        ),
        "pipeline_version_reference": reference,
        "runtime_config": {
            "parameters": {
                name: data.field_value(source) for name, source in target.parameters.items()
            }
        },
    }
    if target.experiment_id is not None:
        body["experiment_id"] = target.experiment_id
    if target.service_account is not None:
        body["service_account"] = target.service_account
    return body


#: The largest token file read (a projected service-account token is about 1 KiB).
TOKEN_FILE_MAX_BYTES = 64 * 1024


async def bearer_token(target: KubeflowTarget) -> str | None:
    """The token of the target, read now (a projected token file is rotated by the
    kubelet), in a thread: the event loop never waits on a file."""
    if target.token_env is not None:
        return os.environ.get(target.token_env) or None
    if target.token_file is not None:
        return await asyncio.to_thread(read_token_file, target.token_file)
    return None


def read_token_file(path: Path) -> str | None:
    """A token file's text: a regular file of at most TOKEN_FILE_MAX_BYTES (opened
    without blocking, so a FIFO or a device is refused rather than waited on).

    >>> read_token_file(Path("/dev/zero"))
    Traceback (most recent call last):
    ...
    ValueError: token_file /dev/zero is not a regular file
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError(f"token_file {path} is not a regular file")
        data = os.read(descriptor, TOKEN_FILE_MAX_BYTES + 1)
    finally:
        os.close(descriptor)
    if len(data) > TOKEN_FILE_MAX_BYTES:
        raise ValueError(f"token_file {path} is larger than {TOKEN_FILE_MAX_BYTES} bytes")
    return data.decode(errors="replace").strip() or None


class KubeflowSender:
    """Creates Kubeflow Pipelines runs through the given HTTP session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._pipeline_ids: dict[tuple[str, str, str | None], str] = {}

    async def send(self, target: Target, delivery: DeliveryRow, now: datetime) -> Delivery:
        assert isinstance(target, KubeflowTarget)
        started = time.perf_counter()
        try:
            run_id = await self._deliver(target, delivery)
        except KubeflowError as exc:
            return Delivery(False, exc.status, str(exc), time.perf_counter() - started)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return Delivery(False, None, describe(exc), time.perf_counter() - started)
        return Delivery(True, 200, None, time.perf_counter() - started, external_id=run_id)

    async def _deliver(self, target: KubeflowTarget, delivery: DeliveryRow) -> str:
        headers = {"accept": "application/json"}
        token = await bearer_token(target)
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        base = str(target.endpoint).rstrip("/")
        name = run_display_name(delivery.trigger_id)
        # An earlier attempt (or one before a replay) may have created the run.
        found = await self._find_run(target, base, name, headers)
        if found is not None:
            return found
        pipeline_id = target.pipeline_id or await self._pipeline_id(target, base, headers)
        event = RetrainingEvent.model_validate_json(delivery.payload)
        body = create_run_body(target, pipeline_id, event)
        created = await self._call("POST", f"{base}{RUNS_PATH}", target, headers, json=body)
        return str(created.get("run_id", ""))

    async def _find_run(
        self, target: KubeflowTarget, base: str, name: str, headers: dict[str, str]
    ) -> str | None:
        predicate = {"key": "display_name", "operation": "EQUALS", "string_value": name}
        params = {"filter": json.dumps({"predicates": [predicate]}), "page_size": "10"}
        if target.experiment_id is not None:
            params["experiment_id"] = target.experiment_id
        if target.namespace is not None:
            params["namespace"] = target.namespace
        listing = await self._call("GET", f"{base}{RUNS_PATH}", target, headers, params=params)
        for run in listing.get("runs") or []:
            if run.get("display_name") == name:
                return str(run.get("run_id", ""))
        return None

    async def _pipeline_id(self, target: KubeflowTarget, base: str, headers: dict[str, str]) -> str:
        assert target.pipeline_name is not None
        key = (base, target.pipeline_name, target.namespace)
        if key not in self._pipeline_ids:
            params = {"namespace": target.namespace} if target.namespace else {}
            url = f"{base}/apis/v2beta1/pipelines/names/{target.pipeline_name}"
            pipeline = await self._call("GET", url, target, headers, params=params)
            if not pipeline.get("pipeline_id"):
                raise ValueError(f"pipeline {target.pipeline_name!r} has no pipeline_id")
            self._pipeline_ids[key] = str(pipeline["pipeline_id"])
        return self._pipeline_ids[key]

    async def _call(
        self,
        method: str,
        url: str,
        target: KubeflowTarget,
        headers: dict[str, str],
        **kwargs: Any,
    ) -> dict[str, Any]:
        async with self._session.request(
            method,
            url,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=target.timeout_s),
            **kwargs,
        ) as response:
            text = await response.text()
            if not 200 <= response.status < 300:
                raise KubeflowError(response.status, text)
            value = json.loads(text) if text.strip() else {}
            if not isinstance(value, dict):
                raise ValueError(f"{method} {url}: expected a JSON object")
            return value
