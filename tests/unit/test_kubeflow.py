"""The Kubeflow Pipelines target against a local server implementing the v2beta1 run API."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from driftline.schemas.monitors import KubeflowTarget
from driftline.store import Store
from driftline.triggers.kubeflow import KubeflowSender, run_display_name
from tests.unit.helpers import recording_relay, run_passes
from tests.unit.test_store import NOW, drifting_results

PIPELINE_ID = "0f4c6b5e-pipeline"


class FakeKubeflow:
    """The v2beta1 endpoints driftline calls: create and list runs, pipeline by name.

    With ``drop_first_create`` it creates the first run, then drops the connection
    before answering: the ambiguous failure a retry must not turn into a second run.
    """

    def __init__(self, drop_first_create: bool = False, token: str | None = None) -> None:
        self.drop_first_create = drop_first_create
        self.token = token
        self.runs: list[dict[str, Any]] = []
        self.creates = 0
        self.lists: list[dict[str, str]] = []
        self.port = 0  # kept across restarts: the target's URL stays the same

    def _authorized(self, request: web.Request) -> bool:
        return self.token is None or request.headers.get("Authorization") == f"Bearer {self.token}"

    async def create_run(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": "unauthenticated"}, status=401)
        self.creates += 1
        body = await request.json()
        run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING"}
        self.runs.append(run)
        if self.drop_first_create and self.creates == 1:
            assert request.transport is not None
            request.transport.abort()  # created, but the caller never hears of it
            await asyncio.sleep(0.1)
        return web.json_response(run)

    async def list_runs(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthenticated"}, status=401)
        self.lists.append(dict(request.query))
        runs = self.runs
        if "filter" in request.query:
            (predicate,) = json.loads(request.query["filter"])["predicates"]
            assert predicate["operation"] == "EQUALS"
            runs = [r for r in runs if r[predicate["key"]] == predicate["string_value"]]
        return web.json_response({"runs": runs, "total_size": len(runs)})

    async def pipeline_by_name(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != "retrain-fraud":
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"pipeline_id": PIPELINE_ID, "display_name": "retrain-fraud"})

    async def start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/apis/v2beta1/runs", self.create_run)
        app.router.add_get("/apis/v2beta1/runs", self.list_runs)
        app.router.add_get("/apis/v2beta1/pipelines/names/{name}", self.pipeline_by_name)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{self.port}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.connect(f"sqlite:///{tmp_path / 's.db'}")
    yield store
    store.close()


async def deliver(store: Store, kfp: FakeKubeflow, passes: int, **target: Any) -> list[str]:
    runner, url = await kfp.start()
    spec = KubeflowTarget.model_validate({"type": "kubeflow", "endpoint": url, **target})
    reports, triggers = drifting_results()
    store.record_results(reports, triggers, {"m": [spec]}, NOW)
    try:
        async with aiohttp.ClientSession() as session:
            relay, outcomes = recording_relay(store, {"kubeflow": KubeflowSender(session)}, spec)
            await run_passes(relay, store, passes)
    finally:
        await runner.cleanup()
    return outcomes


def test_one_run_per_episode_even_when_the_create_call_is_dropped(
    store: Store, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    kfp = FakeKubeflow(drop_first_create=True, token="s3cret-token")
    outcomes = asyncio.run(
        deliver(
            store,
            kfp,
            passes=4,
            pipeline_id=PIPELINE_ID,
            pipeline_version_id="v7",
            experiment_id="exp-1",
            token_file=str(token),
            parameters={"model": "model_id", "features": "drifted_features", "why": "trigger_id"},
        )
    )
    assert outcomes == ["retry", "delivered"]
    assert kfp.creates == 1  # the retry found the run instead of creating another
    (run,) = kfp.runs
    (delivery,) = store.deliveries()
    (trigger,) = store.triggers()
    assert delivery["status"] == "delivered"
    assert delivery["external_id"] == run["run_id"]
    assert run["display_name"] == run_display_name(trigger["trigger_id"])
    assert run["experiment_id"] == "exp-1"
    assert run["pipeline_version_reference"] == {
        "pipeline_id": PIPELINE_ID,
        "pipeline_version_id": "v7",
    }
    parameters = run["runtime_config"]["parameters"]
    data = trigger["event"]["data"]
    assert parameters == {
        "model": "m",
        "features": ",".join(f["name"] for f in data["drifted_features"]),
        "why": trigger["trigger_id"],
    }
    assert kfp.lists[0]["experiment_id"] == "exp-1"
    assert [a["outcome"] for a in delivery["attempt_log"]] == ["retry", "delivered"]
    assert delivery["attempt_log"][0]["error"]  # the dropped connection is logged


def test_replaying_a_dead_delivery_finds_the_run_it_created(store: Store) -> None:
    kfp = FakeKubeflow(drop_first_create=True)
    outcomes = asyncio.run(deliver(store, kfp, passes=1, pipeline_id=PIPELINE_ID, max_attempts=1))
    assert outcomes == ["dead"]
    (dead,) = store.deliveries()
    store.replay_delivery(dead["id"], NOW)
    # The same store and server, one more pass: the run is found, not created again.
    outcomes = asyncio.run(deliver(store, kfp, passes=1, pipeline_id=PIPELINE_ID, max_attempts=1))
    assert outcomes == ["delivered"]
    assert kfp.creates == 1
    assert store.deliveries()[0]["external_id"] == kfp.runs[0]["run_id"]


def test_pipeline_by_name_and_a_token_from_the_environment(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFP_TOKEN", "env-token")
    kfp = FakeKubeflow(token="env-token")
    outcomes = asyncio.run(
        deliver(store, kfp, passes=2, pipeline_name="retrain-fraud", token_env="KFP_TOKEN")
    )
    assert outcomes == ["delivered"]
    (run,) = kfp.runs
    assert run["pipeline_version_reference"] == {"pipeline_id": PIPELINE_ID}  # latest version
    assert "experiment_id" not in run
    assert set(run["runtime_config"]["parameters"]) == {
        "model_id",
        "model_version",
        "trigger_id",
        "drifted_features",
    }


def test_a_rejected_token_is_logged_and_retried(store: Store, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("wrong")
    kfp = FakeKubeflow(token="right")
    outcomes = asyncio.run(
        deliver(
            store, kfp, passes=2, pipeline_id=PIPELINE_ID, token_file=str(token), max_attempts=2
        )
    )
    assert outcomes == ["retry", "dead"]
    assert kfp.runs == []
    (delivery,) = store.deliveries()
    assert delivery["last_status"] == 401
    assert "HTTP 401" in delivery["last_error"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of 'pipeline_id' or 'pipeline_name'"),
        ({"pipeline_name": "p", "pipeline_version_id": "v"}, "needs 'pipeline_id'"),
        ({"pipeline_id": "p", "parameters": {"x": "nope"}}, "unknown fields"),
        ({"pipeline_id": "p", "token_env": "DRIFTLINE_TEST_UNSET_TOKEN"}, "is not set"),
    ],
)
def test_invalid_kubeflow_targets_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KubeflowTarget.model_validate({"type": "kubeflow", "endpoint": "http://kfp:8888", **fields})
