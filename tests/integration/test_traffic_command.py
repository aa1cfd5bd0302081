"""`driftline traffic`: the compose demo producer, against a real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from driftline.cli import cli
from driftline.stream.topics import Topics, ensure_topics
from tests.integration.test_worker_e2e import consume_all

pytestmark = pytest.mark.integration


def test_writes_a_reference_and_streams_live_events(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    reference = tmp_path / "shared" / "reference.parquet"
    done = runner.invoke(cli, ["traffic", "--write-reference", str(reference)])
    assert done.exit_code == 0, done.output
    table = pq.read_table(reference)
    assert table.num_rows == 5000
    assert {"amount", "country", "score"} <= set(table.column_names)
    topic = Topics(topic_prefix).predictions
    ensure_topics(kafka_bootstrap, [topic], 1)
    done = runner.invoke(
        cli,
        [
            "traffic",
            "--bootstrap",
            kafka_bootstrap,
            "--topic-prefix",
            topic_prefix,
            "--rate",
            "40",
            "--duration",
            "2",
            "--drift-after",
            "1",
        ],
    )
    assert done.exit_code == 0, done.output
    messages = consume_all(kafka_bootstrap, topic, 2)
    assert len(messages) >= 2
    body = json.loads(messages[0].value())
    assert body["model_id"] == "fraud-detector"
    assert body["events"][0]["features"]["country"]


def test_without_a_broker_it_says_what_to_give() -> None:
    done = CliRunner(env={"DRIFTLINE_KAFKA_BOOTSTRAP": ""}).invoke(cli, ["traffic"])
    assert done.exit_code == 2
    assert "--bootstrap" in done.output


def test_events_no_broker_acknowledged_are_an_error_not_a_count() -> None:
    """A producer whose events never arrive says so (nothing listens on port 1)."""
    done = CliRunner().invoke(
        cli, ["traffic", "--bootstrap", "127.0.0.1:1", "--rate", "20", "--duration", "1"]
    )
    assert done.exit_code == 1, done.output
    assert "not delivered to 127.0.0.1:1" in done.output
    assert "sent " not in done.output
