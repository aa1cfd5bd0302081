"""``driftline demo``: broker, worker, webhook receiver and traffic, all local, in one command.

The worker runs as its own process exactly as ``driftline worker`` would; the demo
owns the embedded broker, a receiver that verifies signatures, and the traffic.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import yaml
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from driftline.embedded.broker import EmbeddedBroker
from driftline.embedded.process import WorkerProcess
from driftline.embedded.receiver import WebhookReceiver
from driftline.embedded.traffic import TrafficModel, write_reference
from driftline.kafka_clients import librdkafka_config
from driftline.store import Store
from driftline.stream.topics import Topics, ensure_topics

MODEL_ID = "fraud-detector"
PANE_S = 60
EVENTS_PER_PANE = 400
CLEAN_PANES = 8
PANE_WALL_S = 0.7
FEATURES = ["amount", "age", "tenure_days", "score", "country", "device"]
TTY = sys.stdout.isatty()


def say(text: str = "") -> None:
    print(text, flush=True)


def _bold(text: str, color: str = "1") -> str:
    return f"\033[{color}m{text}\033[0m" if TTY else text


def write_inputs(workdir: Path, webhook_url: str) -> None:
    write_reference(workdir / "reference.parquet")
    monitors = {
        "models": [
            {
                "model_id": MODEL_ID,
                "reference": {"path": "reference.parquet"},
                "features": [
                    {"name": n, "kind": "categorical" if n in ("country", "device") else "numeric"}
                    for n in FEATURES
                ],
                "window": {
                    "duration": "5m",
                    "panes": 5,
                    "allowed_lateness": "10s",
                    "min_events": 200,
                },
                "thresholds": {"mode": "calibrated", "metric": "psi", "false_alarm_rate": 0.01},
                "policy": {"consecutive_windows": 2, "clean_windows_to_close": 3},
                "targets": [
                    {
                        "type": "webhook",
                        "url": webhook_url,
                        "secret_env": "DEMO_WEBHOOK_SECRET",
                        "timeout_s": 5,
                    }
                ],
            }
        ]
    }
    (workdir / "monitors.yaml").write_text(yaml.safe_dump(monitors, sort_keys=False))


def start_worker(workdir: Path, bootstrap: str, secret: str) -> WorkerProcess:
    settings = {
        "MONITORS_PATH": str(workdir / "monitors.yaml"),
        "KAFKA_BOOTSTRAP": bootstrap,
        "DATABASE_URL": f"sqlite:///{workdir / 'driftline.db'}",
        "DATA_DIR": str(workdir / "worker-data"),
        "SESSION_TIMEOUT_S": "6",
        "BATCH_TIMEOUT_S": "0.2",
        "RELAY_INTERVAL_S": "0.5",
        "LOG_LEVEL": "warn",
        "LOG_FORMAT": "console",
    }
    worker = WorkerProcess(settings, workdir / "worker.log", {"DEMO_WEBHOOK_SECRET": secret})
    return worker.start()


class Traffic:
    """Sends one pane of event time per ``PANE_WALL_S``: clean first, then drifted."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = Producer(
            librdkafka_config(bootstrap, **{"linger.ms": 5, "enable.idempotence": True})
        )
        self.topic = topic
        self.rng = np.random.default_rng(11)
        self.start = (int(time.time()) // PANE_S) * PANE_S - 60 * PANE_S
        self.sent = 0
        self.pane = 0

    def send_pane(self) -> None:
        model = TrafficModel(drifted=self.pane >= CLEAN_PANES)
        low = self.start + self.pane * PANE_S
        ts = np.sort(self.rng.uniform(low, low + PANE_S, EVENTS_PER_PANE))
        rows = model.rows(self.rng, EVENTS_PER_PANE, ts, self.sent)
        for chunk in range(0, len(rows), 100):
            batch = {
                "model_id": MODEL_ID,
                "model_version": "2024-05-01",
                "events": rows[chunk : chunk + 100],
            }
            self.producer.produce(self.topic, key=MODEL_ID, value=orjson.dumps(batch))
        if self.pane == 3:
            self._send_bad_events()
        self.producer.flush(10)
        self.sent += EVENTS_PER_PANE
        self.pane += 1

    def _send_bad_events(self) -> None:
        malformed = {"model_id": MODEL_ID, "event_id": "bad-1", "ts": "yesterday", "features": {}}
        late = {
            "model_id": MODEL_ID,
            "event_id": "late-1",
            "ts": self.start + 5,
            "features": {"amount": 10.0},
        }
        for body in (malformed, late):
            self.producer.produce(self.topic, key=MODEL_ID, value=orjson.dumps(body))


class LiveTable:
    """Prints each new window's PSI per feature as the worker reports it."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.windows = 0
        self.drifted = 0

    def header(self) -> None:
        cells = "".join(f"{name:>12}" for name in FEATURES)
        say(_bold(f"{'window (event time)':<21}{'events':>7}{cells}   verdict"))

    def show(self, reports: list[dict[str, Any]]) -> None:
        for report in sorted(reports, key=lambda r: r["window_end"]):
            if report["window_end"] in self.seen:
                continue
            self.seen.add(report["window_end"])
            self.windows += 1
            self.drifted += report["drifted"]
            start, end = report["window_start"][11:16], report["window_end"][11:16]
            cells = ""
            for feature in report["features"]:
                text = f"{feature['psi']:.3f}{'*' if feature['drifted'] else ' '}"
                cells += _bold(f"{text:>12}", "31") if feature["drifted"] else f"{text:>12}"
            verdict = _bold("DRIFT", "1;31") if report["drifted"] else "ok"
            say(f"{start}-{end} UTC      {report['n']:>7}{cells}   {verdict}")


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        return await (response.json() if "json" in response.content_type else response.text())


def _dead_lettered(metrics_text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "driftline_events_dead_lettered":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    counts[sample.labels["reason"]] = int(sample.value)
    return counts


def demo_key(workdir: Path) -> str:
    """A read key of the demo's tenant (as ``driftline keys create`` makes one)."""
    store = Store.connect(f"sqlite:///{workdir / 'driftline.db'}")
    try:
        key, _ = store.create_api_key("default", "read", "demo", datetime.now(UTC))
    finally:
        store.close()
    return key


async def _run(workdir: Path, budget_s: float) -> int:
    deadline = time.monotonic() + budget_s
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    receiver = WebhookReceiver(secret)
    webhook_url = await receiver.start()
    try:
        write_inputs(workdir, webhook_url)
        with contextlib.ExitStack() as stack:
            broker = EmbeddedBroker(log_path=workdir / "broker.log")
            bootstrap = broker.start()
            stack.callback(broker.stop)
            topics = Topics("driftline")
            ensure_topics(bootstrap, topics.all(), 1)
            say(f"[1/4] embedded broker on {bootstrap}; webhook receiver on {webhook_url}")
            worker = start_worker(workdir, bootstrap, secret)
            stack.callback(worker.stop)
            api = worker.api
            say(f"[2/4] worker up: {api}/metrics, {api}/v1/reports (log: {workdir}/worker.log)")
            say(
                f"[3/4] sending {CLEAN_PANES} minutes of reference-like traffic, then drifted "
                "traffic (amount, score, country shift); windows: 5 min sliding by 1 min"
            )
            say(
                "      cells: PSI per feature; * = past its threshold, calibrated from the "
                "reference for the window's size (1% false alarms per window)"
            )
            key = demo_key(workdir)
            auth = {"Authorization": f"Bearer {key}"}
            async with aiohttp.ClientSession(headers=auth) as http:
                return await _stream(http, api, receiver, topics, bootstrap, worker, deadline)
    finally:
        await receiver.stop()


async def _stream(
    http: aiohttp.ClientSession,
    api: str,
    receiver: WebhookReceiver,
    topics: Topics,
    bootstrap: str,
    worker: WorkerProcess,
    deadline: float,
) -> int:
    traffic = Traffic(bootstrap, topics.predictions)
    table = LiveTable()
    table.header()
    while not receiver.arrived.is_set() and time.monotonic() < deadline:
        if worker.returncode is not None:
            say(f"the worker exited with code {worker.returncode}")
            return 1
        if traffic.pane < 60:
            await asyncio.to_thread(traffic.send_pane)
        await asyncio.sleep(PANE_WALL_S)
        table.show((await _get(http, f"{api}/v1/reports?model_id={MODEL_ID}&limit=50"))["reports"])
    if not receiver.verified:
        say("no retraining event arrived in time; see the worker log")
        return 1
    # Keep the drifted traffic flowing a little: the open episode must not fire again.
    for _ in range(4):
        await asyncio.to_thread(traffic.send_pane)
        await asyncio.sleep(PANE_WALL_S)
        table.show((await _get(http, f"{api}/v1/reports?model_id={MODEL_ID}&limit=50"))["reports"])
    event = receiver.verified[0]
    say()
    say(_bold("[4/4] retraining event received; signature verified (Standard Webhooks):", "1;32"))
    say(f"  webhook-id: {event.headers.get('webhook-id', event.headers.get('Webhook-Id'))}")
    say("  " + orjson.dumps(event.body, option=orjson.OPT_INDENT_2).decode().replace("\n", "\n  "))
    return await _summary(http, api, receiver, traffic, table)


async def _summary(
    http: aiohttp.ClientSession,
    api: str,
    receiver: WebhookReceiver,
    traffic: Traffic,
    table: LiveTable,
) -> int:
    deliveries = (await _get(http, f"{api}/v1/deliveries"))["deliveries"]
    triggers = (await _get(http, f"{api}/v1/triggers"))["triggers"]
    dead = _dead_lettered(await _get(http, f"{api}/metrics"))
    delivered = [d for d in deliveries if d["status"] == "delivered"]
    say()
    say(_bold("summary"))
    say(f"  events sent:          {traffic.sent} (+2 bad ones)")
    say(
        f"  dead-lettered:        {sum(dead.values())} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(dead.items()))}) -> driftline.dlq"
    )
    say(f"  windows reported:     {table.windows}, drifted: {table.drifted}")
    say(
        f"  drift episodes:       {len(triggers)} -> retraining events delivered: "
        f"{len(delivered)}, received and verified: {len(receiver.verified)}"
    )
    ok = len(triggers) == 1 and len(delivered) == 1 and len(receiver.verified) == 1
    say(_bold("demo passed" if ok else "demo FAILED", "1;32" if ok else "1;31"))
    return 0 if ok else 1


def run_demo(timeout: float = 150.0) -> int:
    """Run the demo; 0 when exactly one verified retraining event arrived."""
    workdir = Path(tempfile.mkdtemp(prefix="driftline-demo-"))
    say(_bold("driftline demo") + f": everything runs on this machine; files in {workdir}")
    started = time.monotonic()
    try:
        code = asyncio.run(_run(workdir, timeout))
    except Exception as exc:
        say(f"demo failed: {exc}")
        log = workdir / "worker.log"
        if log.exists():
            say("last lines of the worker log:\n" + "\n".join(log.read_text().splitlines()[-20:]))
        return 1
    say(f"  took {time.monotonic() - started:.0f}s")
    return code
