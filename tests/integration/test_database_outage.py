"""PostgreSQL unreachable for 30 s mid-stream: nothing lost or doubled, readiness says so."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer
from sqlalchemy.engine import make_url

from driftline.embedded.process import WorkerProcess
from driftline.monitoring import build_monitor
from driftline.replay import Replay, read_events
from driftline.schemas.monitors import load_monitors
from driftline.schemas.reports import DriftReport
from driftline.stream.topics import Topics, ensure_topics
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_recovery import MODEL, Store, configure, messages, wait_for
from tests.unit.helpers import assert_same_reports

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
OUTAGE_S = 30


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def store_errors(api: str) -> float:
    with urllib.request.urlopen(f"{api}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("driftline_store_errors_total "):
                return float(line.split()[1])
    return 0.0


def test_postgres_outage_mid_stream(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, postgres_database: str
) -> None:
    database = make_url(postgres_database)
    monitors = configure(tmp_path)
    sent = messages()
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(sent) + b"\n")
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics.all(), 1)
    with TcpProxy(database.host or "127.0.0.1", database.port or 5432) as proxy:
        proxied = database.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        settings = {
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "TOPIC_PREFIX": topic_prefix,
            "CONSUMER_GROUP": topic_prefix,
            "MONITORS_PATH": str(monitors),
            "DATABASE_URL": proxied,
            "DATA_DIR": str(tmp_path / "data"),
            "SESSION_TIMEOUT_S": "6",
            "BATCH_SIZE": "4",
            "BATCH_TIMEOUT_S": "0.05",
            "RELAY_INTERVAL_S": "3600",
        }
        direct = Store(database.render_as_string(hide_password=False))
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "log.connection.close": False})
        half = len(sent) // 2
        with WorkerProcess(settings, tmp_path / "worker.log") as worker:
            for value in sent[:half]:
                producer.produce(topics.predictions, key=MODEL, value=value)
            producer.flush(30)
            wait_for(lambda: direct.offset() >= half - 1, worker, 60)
            assert status(f"{worker.api}/readyz") == 200
            proxy.cut()
            for value in sent[half:]:
                producer.produce(topics.predictions, key=MODEL, value=value)
            producer.flush(30)
            del producer
            cut_at = time.monotonic()
            wait_for(lambda: status(f"{worker.api}/readyz") == 503, worker, 20)
            wait_for(lambda: store_errors(worker.api) > 0, worker, 20)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
            assert direct.offset() == half - 1  # nothing committed while it was cut off
            proxy.restore()
            wait_for(lambda: direct.offset() >= len(sent) - 1, worker, 90)
            wait_for(lambda: status(f"{worker.api}/readyz") == 200, worker, 20)
    (spec,) = load_monitors(monitors).models
    replay = Replay({MODEL: build_monitor(spec)})
    expected = list(replay.run(read_events(tmp_path / "events.jsonl")))
    stored = direct.reports()
    assert_same_reports(stored, [r for r in expected if isinstance(r, DriftReport)])
    triggers = [t.data.trigger_id for t in expected if not isinstance(t, DriftReport)]
    assert sorted(direct.column("SELECT trigger_id FROM deliveries")) == sorted(triggers)
    direct.engine.dispose()
