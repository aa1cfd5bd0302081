"""The shipped alert rules in a real Prometheus, routed by a real Alertmanager to driftline.

Drifted traffic -> worker gauges -> Prometheus (scraping every second) fires
DriftlineFeatureDrift -> Alertmanager -> POST /v1/alertmanager -> outbox -> webhook.
The worker's own drift policy is set never to fire, so the webhook that arrives is the
alert's. The rules are the shipped ones with `for` shortened and, on the feature-drift
rule, the driftline_retrain label added (as an operator would).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from driftline.embedded.broker import free_port, stop_process
from driftline.embedded.process import WorkerProcess
from driftline.embedded.receiver import WebhookReceiver
from driftline.stream.topics import Topics, ensure_topics
from tests.conftest import unavailable
from tests.integration.keys import bearer, create_key
from tests.integration.test_worker_e2e import (
    MODEL,
    SECRET,
    produce,
    traffic,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).parents[2] / "deploy"


def binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    unavailable(f"{names[0]} is not installed (apt-get install prometheus prometheus-alertmanager)")
    raise AssertionError  # unreachable: unavailable() skips or fails


def test_rules_fire_and_alertmanager_triggers_retraining(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    prometheus = binary("prometheus")
    alertmanager = binary("prometheus-alertmanager", "alertmanager")
    asyncio.run(_scenario(prometheus, alertmanager, kafka_bootstrap, topic_prefix, tmp_path))


def rules_with_short_for(directory: Path) -> Path:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "driftline-rules.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
            if rule["alert"] == "DriftlineFeatureDrift":
                rule["labels"]["driftline_retrain"] = "true"
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


async def _scenario(
    prometheus: str, alertmanager: str, bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    receiver = WebhookReceiver(SECRET)
    url = await receiver.start()
    topics = Topics(prefix)
    ensure_topics(bootstrap, topics.all(), 1)
    settings = {
        "KAFKA_BOOTSTRAP": bootstrap,
        "TOPIC_PREFIX": prefix,
        "CONSUMER_GROUP": prefix,
        # The stream's own episodes never fire here: only the alert does.
        "MONITORS_PATH": str(
            write_config(
                tmp_path, url, {"consecutive_windows": 1000, "cooldown": "1h"}, kafka_target=False
            )
        ),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'driftline.db'}",
        "DATA_DIR": str(tmp_path / "data"),
        "SESSION_TIMEOUT_S": "6",
        "BATCH_TIMEOUT_S": "0.2",
        "RELAY_INTERVAL_S": "0.2",
    }
    worker = WorkerProcess(settings, tmp_path / "worker.log", {"E2E_WEBHOOK_SECRET": SECRET})
    am_port, prom_port = free_port(), free_port()
    key = create_key(settings["DATABASE_URL"], scope="write")
    (tmp_path / "alertmanager.yml").write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "driftline",
                    "group_by": ["alertname", "model"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "driftline",
                        "webhook_configs": [
                            {
                                "url": f"{worker.api}/v1/alertmanager",
                                "send_resolved": True,
                                "http_config": {
                                    "authorization": {"type": "Bearer", "credentials": key}
                                },
                            }
                        ],
                    }
                ],
            }
        )
    )
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules_with_short_for(tmp_path))],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                },
                "scrape_configs": [
                    {
                        "job_name": "driftline",
                        "static_configs": [{"targets": [f"127.0.0.1:{worker.web_port}"]}],
                    }
                ],
            }
        )
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        worker.start()
        processes.append(
            start(
                [
                    alertmanager,
                    f"--config.file={tmp_path / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                tmp_path / "alertmanager.log",
            )
        )
        processes.append(
            start(
                [
                    prometheus,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                tmp_path / "prometheus.log",
            )
        )
        messages, _, _ = traffic()
        await asyncio.to_thread(produce, bootstrap, topics.predictions, messages)
        async with aiohttp.ClientSession(headers=bearer(key)) as http:

            async def alert_firing() -> bool:
                return bool(await firing(http, prom_port, "DriftlineFeatureDrift"))

            await wait_for(alert_firing, 90, "DriftlineFeatureDrift to fire", worker)
            await wait_for(lambda: _any(receiver.verified), 60, "the retraining webhook", worker)
            events = [r.body for r in receiver.verified]
            assert {e["data"]["source"] for e in events} == {"alertmanager"}
            data = events[0]["data"]
            assert data["model_id"] == MODEL
            assert data["alert"]["labels"]["alertname"] == "DriftlineFeatureDrift"
            assert data["alert"]["labels"]["driftline_retrain"] == "true"
            async with http.get(f"{worker.api}/v1/triggers?model_id={MODEL}") as response:
                triggers = (await response.json())["triggers"]
            fired = [t for t in triggers if t["status"] == "fired"]
            # One request: every other feature's alert came inside the 1h cooldown.
            assert len(fired) == 1
            assert {t["source"] for t in triggers} == {"alertmanager"}
            await asyncio.sleep(2)  # repeats of the notification change nothing
            assert len(receiver.verified) == 1
    finally:
        for process in processes:
            stop_process(process, 10)
        assert worker.stop() == 0, worker.log_tail()
        await receiver.stop()


async def firing(http: aiohttp.ClientSession, port: int, name: str) -> list[dict[str, Any]]:
    async with http.get(f"http://127.0.0.1:{port}/api/v1/alerts") as response:
        alerts = (await response.json())["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


async def _any(items: list[Any]) -> bool:
    return bool(items)
