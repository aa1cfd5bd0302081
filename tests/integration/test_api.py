"""The /v1 API over real HTTP: API keys, scopes, tenant isolation, rate limits, problems."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from driftline.embedded.process import WorkerProcess
from driftline.embedded.traffic import TrafficModel
from driftline.stream.topics import Topics, ensure_topics
from tests.integration.keys import bearer, create_key
from tests.integration.test_worker_e2e import ALERT, SECRET

pytestmark = pytest.mark.integration


@dataclass
class Api:
    url: str
    keys: dict[str, str]
    database_url: str
    topic: str
    log: Path

    def call(
        self, method: str, path: str, key: str | None = None, body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data else {}
        if key is not None:
            headers.update(bearer(self.keys.get(key, key)))
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read() or b"null")


@contextlib.contextmanager
def running_api(bootstrap: str, directory: Path, rate: str, burst: str) -> Iterator[Api]:
    """A worker with two tenants' models (a-model: team-a, b-model: team-b) and keys."""
    pq.write_table(
        pa.table(TrafficModel().sample(np.random.default_rng(1), 2000)),
        directory / "reference.parquet",
    )
    hook = {"url": "http://127.0.0.1:9/hook", "secret_env": "API_WEBHOOK_SECRET", "max_attempts": 1}
    models = [
        {
            "model_id": model_id,
            "tenant": tenant,
            "reference": {"path": "reference.parquet"},
            "window": {"duration": "5m"},
            "targets": [hook],
        }
        for model_id, tenant in (("a-model", "team-a"), ("b-model", "team-b"))
    ]
    (directory / "monitors.yaml").write_text(yaml.safe_dump({"models": models}))
    database_url = f"sqlite:///{directory / 'driftline.db'}"
    keys = {
        "a-read": create_key(database_url, "team-a", "read"),
        "a-write": create_key(database_url, "team-a", "write"),
        "a-admin": create_key(database_url, "team-a", "admin"),
        "b-write": create_key(database_url, "team-b", "write"),
        "limited": create_key(database_url, "team-a", "read"),
    }
    prefix = "api" + uuid.uuid4().hex[:10]
    settings = {
        "KAFKA_BOOTSTRAP": bootstrap,
        "TOPIC_PREFIX": prefix,
        "CONSUMER_GROUP": prefix,
        "MONITORS_PATH": str(directory / "monitors.yaml"),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(directory / "data"),
        "SESSION_TIMEOUT_S": "6",
        "RELAY_INTERVAL_S": "0.2",
        "API_RATE_LIMIT": rate,
        "API_RATE_BURST": burst,
        "MONITORS_REFRESH_S": "0.5",
    }
    ensure_topics(bootstrap, Topics(prefix).all(), 1)
    with WorkerProcess(
        settings, directory / "worker.log", {"API_WEBHOOK_SECRET": SECRET}
    ) as worker:
        yield Api(worker.api, keys, database_url, Topics(prefix).predictions, worker.log_path)


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(kafka_bootstrap, tmp_path_factory.mktemp("api"), "5", "20") as running:
        yield running


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Property-based calls of every operation in /v1/openapi.json, as tenant A's admin."""
    with running_api(kafka_bootstrap, tmp_path, "10000", "10000") as api:
        # /readyz is a 503 (documented) until the relay's first pass: start once ready.
        wait_until(lambda: api.call("GET", "/readyz")[0] == 200, 10, "readiness")
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{api.url}/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {api.keys['a-admin']}",
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,"
                "content_type_conformance,response_headers_conformance",
                "--max-examples",
                "40",
                "--seed",
                "7",
                "--request-timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "NO_COLOR": "1"},
        )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_no_key_a_bad_key_or_a_revoked_key_is_401(api: Api) -> None:
    from click.testing import CliRunner

    from driftline.cli import cli

    for key in (None, "dl_000000000000_" + "x" * 43, "not-a-key"):
        status, headers, body = api.call("GET", "/v1/models", key)
        assert status == 401, key
        assert headers["Content-Type"].startswith("application/problem+json")
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert body["status"] == 401
    doomed = create_key(api.database_url, "team-a", "read")
    key_id = doomed.split("_")[1]
    runner = CliRunner(env={"DRIFTLINE_DATABASE_URL": api.database_url})
    assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 0
    assert api.call("GET", "/v1/models", doomed)[0] == 401
    listed = runner.invoke(cli, ["keys", "list", "--tenant", "team-a"]).stdout
    assert key_id in listed
    assert doomed.split("_", 2)[2] not in listed  # never the secret


def test_a_key_sees_only_its_tenants_models(api: Api) -> None:
    status, _, body = api.call("GET", "/v1/models", "a-read")
    assert status == 200
    assert [m["model_id"] for m in body["models"]] == ["a-model"]
    assert body["models"][0]["tenant"] == "team-a"
    for path in ("/v1/reports?model_id=b-model", "/v1/triggers?model_id=b-model"):
        status, _, body = api.call("GET", path, "a-read")
        assert status == 404
        assert body["detail"] == "model_id: no monitor for model 'b-model'"
    # The same answer as for a model that does not exist at all: nothing leaks.
    assert api.call("GET", "/v1/reports?model_id=nobody", "a-read")[2]["detail"] == (
        "model_id: no monitor for model 'nobody'"
    )


def test_another_tenants_trigger_and_delivery_are_invisible(api: Api) -> None:
    alert = json.loads(json.dumps(ALERT))
    alert["alerts"][0]["labels"]["model"] = "b-model"
    alert["alerts"][0]["fingerprint"] = "b0b0b0b0"
    status, _, body = api.call("POST", "/v1/alertmanager", "b-write", alert)
    assert status == 200
    assert [a["outcome"] for a in body["alerts"]] == ["fired"]
    # A's write key posting B's alert: B's model is not A's, so it is ignored.
    alert["alerts"][0]["fingerprint"] = "a0a0a0a0"
    status, _, body = api.call("POST", "/v1/alertmanager", "a-write", alert)
    assert [a["outcome"] for a in body["alerts"]] == ["ignored"]
    _, _, b_deliveries = api.call("GET", "/v1/deliveries", "b-write")
    (delivery,) = b_deliveries["deliveries"]
    assert api.call("GET", "/v1/deliveries", "a-read")[2]["deliveries"] == []
    assert api.call("GET", "/v1/triggers", "a-read")[2]["triggers"] == []
    assert len(api.call("GET", "/v1/triggers", "b-write")[2]["triggers"]) == 1
    for method, path in (
        ("GET", f"/v1/deliveries/{delivery['id']}"),
        ("POST", f"/v1/deliveries/{delivery['id']}/replay"),
    ):
        status, _, body = api.call(method, path, "a-admin")
        assert status == 404, path
        assert body["title"] == "Unknown delivery"
    status, _, body = api.call("GET", f"/v1/deliveries/{delivery['id']}", "b-write")
    assert status == 200
    assert body["delivery"]["trigger_id"] == delivery["trigger_id"]


def test_scopes(api: Api) -> None:
    status, _, body = api.call("POST", "/v1/alertmanager", "a-read", ALERT)
    assert status == 403
    assert "write scope" in body["detail"]
    status, _, _ = api.call("DELETE", "/v1/disabled-endpoints?url=http://x/", "a-write")
    assert status == 403
    status, _, body = api.call("DELETE", "/v1/disabled-endpoints?url=http://x/", "a-admin")
    assert status == 404
    status, _, body = api.call("DELETE", "/v1/disabled-endpoints", "a-admin")
    assert (status, body["detail"].split(":")[0]) == (400, "url")


def test_problems_name_the_field(api: Api) -> None:
    for path, field in (
        ("/v1/reports?limit=abc", "limit"),
        ("/v1/triggers?status=maybe", "status"),
        ("/v1/deliveries?status=lost", "status"),
    ):
        status, headers, body = api.call("GET", path, "a-read")
        assert status == 400, path
        assert headers["Content-Type"].startswith("application/problem+json")
        assert body["detail"].startswith(f"{field}:"), body
    status, _, body = api.call("POST", "/v1/alertmanager", "a-write", {"version": "4"})
    assert status == 400
    assert "alerts" in body["detail"]


BAD_SPECS = {
    "inline secret": {"targets": [{"url": "http://127.0.0.1:9/x", "secret": SECRET}]},
    "reference file": {"reference": {"path": "reference.parquet"}},
    "no features": {"features": None},
    "bad window": {"window": {"duration": "soon"}},
    "unknown field": {"windows": {"duration": "1m"}},
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_monitors_apply_and_the_api_refuse_a_bad_spec_alike(
    api: Api, tmp_path: Path, case: str
) -> None:
    """One validation path: the same error for the same spec, whichever way it comes."""
    from click.testing import CliRunner

    from driftline.cli import cli

    spec = {
        "model_id": f"bad-{case.replace(' ', '-')}",
        "window": {"duration": "1m"},
        "features": [{"name": "amount", "kind": "numeric"}],
        **BAD_SPECS[case],
    }
    spec = {k: v for k, v in spec.items() if v is not None}
    status, _, body = api.call("POST", "/v1/monitors", "a-write", spec)
    assert status == 400, body
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump({**spec, "tenant": "team-a"}))
    done = CliRunner(env={"DRIFTLINE_DATABASE_URL": api.database_url}).invoke(
        cli, ["monitors", "apply", "-f", str(path)]
    )
    assert done.exit_code != 0
    assert str(done.exception) == f"{path}: {body['detail']}"
    assert api.call("GET", f"/v1/monitors/{spec['model_id']}", "a-read")[0] == 404


def test_monitors_apply_names_kafka_topics_with_the_configured_prefix(
    api: Api, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from driftline.cli import cli

    prefix = api.topic.removesuffix(".predictions")
    spec = {
        "model_id": "cli-kafka",
        "tenant": "team-a",
        "window": {"duration": "1m"},
        "features": [{"name": "amount", "kind": "numeric"}],
        "targets": [{"type": "kafka"}],
    }
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {"DRIFTLINE_DATABASE_URL": api.database_url, "DRIFTLINE_TOPIC_PREFIX": prefix}
    done = CliRunner(env=env).invoke(cli, ["monitors", "apply", "-f", str(path)])
    assert done.exit_code == 0, done.output
    status, _, body = api.call("GET", "/v1/monitors/cli-kafka", "a-read")
    assert status == 200
    assert body["monitor"]["spec"]["targets"][0]["topic"] == f"{prefix}.retraining"
    deleted = CliRunner(env=env).invoke(cli, ["monitors", "delete", "cli-kafka"])
    assert deleted.exit_code == 0, deleted.output


def test_rate_limit_per_key(api: Api) -> None:
    statuses = [api.call("GET", "/v1/models", "limited")[:2] for _ in range(40)]
    limited = [headers for status, headers in statuses if status == 429]
    assert limited, "the burst of 20 at 5/s was never limited"
    assert int(limited[0]["Retry-After"]) >= 1
    assert api.call("GET", "/v1/models", "a-read")[0] == 200  # other keys are not limited


def test_secrets_never_appear_in_responses(api: Api) -> None:
    everything = json.dumps(
        [
            api.call("GET", path, "b-write")[2]
            for path in ("/v1/models", "/v1/triggers", "/v1/deliveries", "/v1/disabled-endpoints")
        ]
    )
    assert SECRET not in everything
    assert SECRET.removeprefix("whsec_") not in everything
    assert api.keys["b-write"].split("_", 2)[2] not in everything
    log = api.log.read_text()
    assert SECRET.removeprefix("whsec_") not in log
    assert not any(key.split("_", 2)[2] in log for key in api.keys.values())


def test_open_endpoints_need_no_key(api: Api) -> None:
    assert api.call("GET", "/healthz")[0] == 200
    # Ready once the relay has made its first pass (moments after start).
    wait_until(lambda: api.call("GET", "/readyz")[0] == 200, 10, "readiness")
    status, _, body = api.call("GET", "/readyz")
    assert (status, body) == (
        200,
        {"ready": True, "checks": {"store": True, "broker": True, "relay": True}},
    )
    request = urllib.request.Request(api.url + "/metrics")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_keys_create_refuses_a_bad_tenant(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from driftline.cli import cli

    runner = CliRunner(env={"DRIFTLINE_DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}"})
    result = runner.invoke(cli, ["keys", "create", "--tenant", "Team A"])
    assert result.exit_code == 2
    assert "--tenant" in result.output


def upload(api: Api, path: str, key: str, data: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        api.url + path, data, {**bearer(api.keys[key]), "Content-Type": "application/octet-stream"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_monitor_created_through_the_api_runs_without_a_restart(
    api: Api, kafka_bootstrap: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from driftline.cli import cli
    from tests.integration.test_worker_e2e import produce

    spec = {
        "model_id": "c-model",
        "window": {"duration": "1m", "panes": 1, "min_events": 10},
        "features": [
            {"name": "amount", "kind": "numeric"},
            {"name": "country", "kind": "categorical"},
        ],
        "targets": [{"url": "http://127.0.0.1:9/c", "secret": SECRET}],
    }
    status, _, body = api.call("POST", "/v1/monitors", "a-write", spec)
    assert (status, body["detail"]) == (
        400,
        "targets[0].secret: secrets are not stored; use secret_env",
    )
    spec["targets"] = [{"url": "http://127.0.0.1:9/c", "secret_env": "API_WEBHOOK_SECRET"}]
    assert api.call("POST", "/v1/monitors", "a-read", spec)[0] == 403
    assert api.call("POST", "/v1/monitors", "a-write", {**spec, "tenant": "team-b"})[0] == 403
    status, _, body = api.call("POST", "/v1/monitors", "a-write", spec)
    assert status == 201, body
    assert body["monitor"]["tenant"] == "team-a"
    assert (body["monitor"]["source"], body["monitor"]["running"]) == ("api", False)
    assert api.call("POST", "/v1/monitors", "a-write", spec)[0] == 409
    assert api.call("GET", "/v1/monitors/c-model", "b-write")[0] == 404  # other tenant

    data = tmp_path / "reference.parquet"
    pq.write_table(pa.table(TrafficModel().sample(np.random.default_rng(5), 3000)), data)
    status, built = upload(api, "/v1/monitors/c-model/references", "a-write", data.read_bytes())
    assert status == 201, built
    reference = built["reference"]
    assert (reference["version"], reference["active"], reference["n_rows"]) == (1, True, 3000)
    # The CLI builds the same profile from the same file: same fingerprint, same version.
    runner = CliRunner(env={"DRIFTLINE_DATABASE_URL": api.database_url})
    done = runner.invoke(cli, ["reference", "build", "--model", "c-model", "--data", str(data)])
    assert done.exit_code == 0, done.output
    cli_built = json.loads(done.stdout)
    assert (cli_built["fingerprint"], cli_built["version"]) == (
        reference["fingerprint"],
        reference["version"],
    )
    assert upload(api, "/v1/monitors/c-model/references", "a-write", b"not,a\nfile")[0] == 400

    # The worker picks it up (DRIFTLINE_MONITORS_REFRESH_S) and evaluates its events.
    def running() -> bool:
        return api.call("GET", "/v1/monitors/c-model", "a-read")[2]["monitor"]["running"]

    wait_until(running, 30, "the new monitor to run")
    rng = np.random.default_rng(6)
    start = 1_700_000_040.0
    rows = TrafficModel().rows(rng, 200, np.linspace(start, start + 59, 200), 0)
    far = {"event_id": "far", "ts": start + 600, "features": {"amount": 1.0}}
    messages = [json.dumps({"model_id": "c-model", "events": [*rows, far]}).encode()]
    produce(kafka_bootstrap, api.topic, messages)

    def reported() -> bool:
        return bool(api.call("GET", "/v1/reports?model_id=c-model", "a-read")[2]["reports"])

    wait_until(reported, 30, "a window report of the new monitor")
    report = api.call("GET", "/v1/reports?model_id=c-model&limit=1", "a-read")[2]["reports"][0]
    assert report["n"] == 200
    assert {f["name"] for f in report["features"]} == {"amount", "country"}

    # A reference from the window in progress (the far event's), on the active bins.
    status, built = upload(
        api, "/v1/monitors/c-model/references?from=current_window", "a-write", b""
    )
    assert status == 201, built
    assert (built["reference"]["version"], built["reference"]["n_rows"]) == (2, 1)
    assert built["reference"]["source"].startswith("window ")
    assert built["reference"]["active"]
    status, _, body = api.call("POST", "/v1/monitors/c-model/references/1/activate", "a-write")
    assert (status, body["monitor"]["reference_version"]) == (200, 1)

    # Pause, resume, new version, delete: each applied without a restart.
    status, _, body = api.call("POST", "/v1/monitors/c-model/pause", "a-write")
    assert (status, body["monitor"]["paused"]) == (200, True)
    wait_until(lambda: not running(), 30, "the paused monitor to stop")
    # Paused: its history stays visible to its tenant; it has no live state.
    assert api.call("GET", "/v1/reports?model_id=c-model", "a-read")[2]["reports"]
    assert api.call("GET", "/v1/models/c-model/state", "a-read")[0] == 409
    assert api.call("GET", "/v1/reports?model_id=c-model", "b-write")[0] == 404
    assert api.call("POST", "/v1/monitors/c-model/resume", "a-write")[0] == 200
    wait_until(running, 30, "the resumed monitor to run")
    status, _, body = api.call(
        "PUT", "/v1/monitors/c-model", "a-write", {**spec, "window": {"duration": "2m"}}
    )
    assert (status, body["monitor"]["version"]) == (200, 7)
    status, _, body = api.call("GET", "/v1/monitors/c-model/references", "a-read")
    assert [(r["version"], r["active"]) for r in body["references"]] == [(1, True), (2, False)]
    assert api.call("POST", "/v1/monitors/c-model/references/9/activate", "a-write")[0] == 404
    assert api.call("DELETE", "/v1/monitors/c-model", "a-write")[0] == 403
    assert api.call("DELETE", "/v1/monitors/a-model", "a-admin")[0] == 409  # the file's
    assert 'model="c-model"' in metrics_text(api)
    assert api.call("DELETE", "/v1/monitors/c-model", "a-admin")[0] == 200

    def models() -> list[str]:
        return [m["model_id"] for m in api.call("GET", "/v1/models", "a-read")[2]["models"]]

    wait_until(lambda: models() == ["a-model"], 30, "the deleted monitor to stop")
    # Its series leave /metrics (within a refresh): cardinality does not grow with churn.
    wait_until(lambda: 'model="c-model"' not in metrics_text(api), 10, "its metrics to go")
    assert 'model="a-model"' in metrics_text(api)
    listed = [m["model_id"] for m in api.call("GET", "/v1/monitors", "a-read")[2]["monitors"]]
    assert listed == ["a-model"]


def metrics_text(api: Api) -> str:
    with urllib.request.urlopen(f"{api.url}/metrics", timeout=10) as response:
        return str(response.read().decode())


def wait_until(condition: Any, within_s: float, what: str) -> None:
    import time

    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_status_command(api: Api) -> None:
    from click.testing import CliRunner

    from driftline.cli import cli

    runner = CliRunner(env={"DRIFTLINE_DATABASE_URL": api.database_url})
    table = runner.invoke(cli, ["status"])
    assert table.exit_code == 0, table.output
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["MODEL", "TENANT", "STATE"]
    assert [r.split()[0] for r in rows if r.split()[0] in ("a-model", "b-model")] == [
        "a-model",
        "b-model",
    ]
    done = runner.invoke(cli, ["status", "--json", "--tenant", "team-b"])
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (row["model_id"], row["tenant"], row["state"]) == ("b-model", "team-b", "active")


def _running_api_monitor(api: Api, model_id: str, url: str, data: Path) -> None:
    """An API monitor of tenant A whose webhook is ``url``, running (a reference built)."""
    spec = {
        "model_id": model_id,
        "window": {"duration": "1m"},
        "features": [{"name": "amount", "kind": "numeric"}],
        "targets": [
            {"url": url, "secret_env": "API_WEBHOOK_SECRET", "timeout_s": 2, "max_attempts": 50}
        ],
    }
    assert api.call("POST", "/v1/monitors", "a-write", spec)[0] == 201
    assert (
        upload(api, f"/v1/monitors/{model_id}/references", "a-write", data.read_bytes())[0] == 201
    )
    wait_until(
        lambda: api.call("GET", f"/v1/monitors/{model_id}", "a-read")[2]["monitor"]["running"],
        30,
        f"{model_id} to run",
    )


def _alert(api: Api, model_id: str, fingerprint: str) -> str:
    alert = json.loads(json.dumps(ALERT))
    alert["alerts"][0]["labels"]["model"] = model_id
    alert["alerts"][0]["fingerprint"] = fingerprint
    status, _, body = api.call("POST", "/v1/alertmanager", "a-write", alert)
    assert status == 200, body
    (outcome,) = body["alerts"]
    assert outcome["outcome"] == "fired", outcome
    return str(outcome["trigger_id"])


def test_pausing_a_monitor_keeps_its_retrying_delivery_and_deleting_it_cancels(
    api: Api, tmp_path: Path
) -> None:
    """A delivery carries its target: pausing its monitor while it retries, it is still
    delivered; deleting a monitor cancels its pending delivery, visibly, to its tenant."""
    from tests.integration.receivers import FlakyWebhook, serving

    data = tmp_path / "reference.parquet"
    pq.write_table(pa.table(TrafficModel().sample(np.random.default_rng(8), 2000)), data)
    receiver = FlakyWebhook(SECRET, failing_s=3.0, delay_s=0.05)
    with serving(receiver) as url:
        _running_api_monitor(api, "p-model", url, data)
        trigger_id = _alert(api, "p-model", "p1p1p1p1")
        assert api.call("POST", "/v1/monitors/p-model/pause", "a-write")[0] == 200

        def delivery() -> dict[str, Any]:
            path = f"/v1/deliveries?trigger_id={trigger_id}"
            status, headers, body = api.call("GET", path, "a-read")
            if status == 429:  # as a client does: once more after Retry-After
                time.sleep(float(headers["Retry-After"]))
                status, headers, body = api.call("GET", path, "a-read")
            assert status == 200, (status, body)
            (row,) = body["deliveries"]
            return dict(row)

        wait_until(lambda: delivery()["attempts"] >= 1, 10, "a first (failed) attempt")
        assert delivery()["status"] == "pending"
        wait_until(lambda: delivery()["status"] == "delivered", 30, "delivery while paused")
        assert not api.call("GET", "/v1/monitors/p-model", "a-read")[2]["monitor"]["running"]
    assert dict(receiver.accepted) == {trigger_id: 1}
    assert api.call("POST", "/v1/monitors/p-model/resume", "a-write")[0] == 200
    assert api.call("DELETE", "/v1/monitors/p-model", "a-admin")[0] == 200

    _running_api_monitor(api, "d-model", "http://127.0.0.1:9/nobody", data)
    gone = _alert(api, "d-model", "d1d1d1d1")
    # Deleted, and made again at once by another tenant (within one refresh of the
    # workers; its version is 1 again, as the deleted one's was).
    again = {
        "model_id": "d-model",
        "window": {"duration": "2m"},
        "features": [{"name": "amount", "kind": "numeric"}],
    }
    assert api.call("DELETE", "/v1/monitors/d-model", "a-admin")[0] == 200
    assert api.call("POST", "/v1/monitors", "b-write", again)[0] == 201
    cancelled = api.call("GET", "/v1/deliveries?status=cancelled", "a-read")[2]["deliveries"]
    (row,) = [d for d in cancelled if d["trigger_id"] == gone]
    assert row["reason"].startswith("its monitor was deleted at ")
    assert row["tenant"] == "team-a"
    assert api.call("GET", f"/v1/deliveries/{row['id']}", "a-read")[0] == 200
    assert api.call("GET", f"/v1/deliveries/{row['id']}", "b-write")[0] == 404
    others = api.call("GET", "/v1/deliveries?status=cancelled", "b-write")[2]["deliveries"]
    assert all(d["trigger_id"] != gone for d in others)

    def runs_as_b() -> bool:
        models = api.call("GET", "/v1/models", "b-write")[2]["models"]
        return any(
            m["model_id"] == "d-model"
            and m["tenant"] == "team-b"
            and m["window"]["duration"] == 120.0
            for m in models
        )

    wait_until(runs_as_b, 30, "the new d-model to run")
    a_models = api.call("GET", "/v1/models", "a-read")[2]["models"]
    assert all(m["model_id"] != "d-model" for m in a_models)
