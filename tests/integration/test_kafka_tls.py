"""A Kafka reached only through TLS (a TLS-terminating proxy in front of the embedded
broker, which advertises the proxy): the worker (its consumer, Faust's producer of dead
letters, the admin clients), the Kafka target and ``driftline traffic`` connect with a CA
file, and with a client certificate where the broker asks for one; a wrong CA, a missing
client certificate or a plaintext client stop the worker at once, naming the setting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
import yaml
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from driftline.cli import cli
from driftline.embedded.broker import EmbeddedBroker, free_port
from driftline.embedded.process import WorkerProcess
from driftline.kafka_clients import librdkafka_config
from driftline.schemas.monitors import KafkaTarget
from driftline.settings import Settings
from driftline.store import DeliveryRow
from driftline.stream.topics import Topics
from driftline.triggers.kafka import KafkaSender
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_offset_logs import scrape
from tests.integration.test_worker_e2e import metric_values

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"  # driftline traffic's model


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | trustme.CA]:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    client = ca.issue_cert("driftline-worker")
    files: dict[str, Path | trustme.CA] = {"ca_obj": ca}
    for name, blob in {
        "ca": ca.cert_pem,
        "other_ca": other.cert_pem,
        "cert": client.cert_chain_pems[0],
        "key": client.private_key_pem,
    }.items():
        path = directory / f"{name}.pem"
        blob.write_to_path(str(path))
        files[name] = path
    return files


@contextlib.contextmanager
def tls_broker(
    ca: trustme.CA,
    client_certificates: bool,
    names: tuple[str, ...] = ("127.0.0.1", "localhost"),
    host: str = "127.0.0.1",
) -> Iterator[str]:
    """The embedded broker behind a TLS proxy whose certificate has ``names``; its
    bootstrap (the proxy's address as ``host``; the broker advertises 127.0.0.1)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(context)
    if client_certificates:
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    port = free_port()
    with TcpProxy("127.0.0.1", port, tls=context) as proxy:
        broker = EmbeddedBroker(port=port, advertised_port=proxy.port)
        broker.start()
        try:
            yield f"{host}:{proxy.port}"
        finally:
            broker.stop()


def tls_env(pki: dict[str, Path | trustme.CA], mutual: bool = False) -> dict[str, str]:
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(pki["ca"])}
    if mutual:
        env.update({"KAFKA_SSL_CERTFILE": str(pki["cert"]), "KAFKA_SSL_KEYFILE": str(pki["key"])})
    return env


def worker_settings(directory: Path, bootstrap: str, prefix: str) -> dict[str, str]:
    reference = directory / "reference.parquet"
    assert CliRunner().invoke(cli, ["traffic", "--write-reference", str(reference)]).exit_code == 0
    spec = {
        "model_id": MODEL,
        "reference": {"path": str(reference)},
        "window": {"duration": "1m", "panes": 1, "min_events": 10},
    }
    (directory / "monitors.yaml").write_text(yaml.safe_dump({"models": [spec]}))
    return {
        "KAFKA_BOOTSTRAP": bootstrap,
        "TOPIC_PREFIX": prefix,
        "CONSUMER_GROUP": prefix,
        "MONITORS_PATH": str(directory / "monitors.yaml"),
        "DATABASE_URL": f"sqlite:///{directory / 'store.db'}",
        "DATA_DIR": str(directory / "data"),
        "SESSION_TIMEOUT_S": "6",
        "BATCH_TIMEOUT_S": "0.2",
    }


def counted(worker: WorkerProcess, name: str) -> float:
    return sum(metric_values(scrape(worker), name).values())


def wait_for(condition: object, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def read_topic(bootstrap: str, settings: Settings, topic: str, expected: int) -> list[bytes]:
    """The first ``expected`` values of ``topic``, read from every partition's start
    (assigned, not subscribed: no consumer group to join)."""
    consumer = Consumer(librdkafka_config(bootstrap, settings, **{"group.id": "unused"}))
    partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.append(message.value())
    finally:
        consumer.close()
    return values


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_everything_connects_through_tls(
    pki: dict[str, Path | trustme.CA], tmp_path: Path, topic_prefix: str, mutual: bool
) -> None:
    assert isinstance(pki["ca_obj"], trustme.CA)
    env = tls_env(pki, mutual)
    with tls_broker(pki["ca_obj"], client_certificates=mutual) as bootstrap:
        everything_connects(bootstrap, env, tmp_path, topic_prefix)


def everything_connects(bootstrap: str, env: dict[str, str], directory: Path, prefix: str) -> None:
    """The worker counts what ``driftline traffic`` sends, dead-letters what a producer
    sends, and the Kafka target publishes: all connecting to ``bootstrap`` as ``env``
    (settings without their DRIFTLINE_ prefix) says."""
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    topics = Topics(prefix)
    config = worker_settings(directory, bootstrap, prefix)
    with WorkerProcess({**config, **env}, directory / "worker.log") as worker:
        traffic = CliRunner(env={f"DRIFTLINE_{k}": v for k, v in env.items()}).invoke(
            cli,
            [
                *("traffic", "--bootstrap", bootstrap, "--topic-prefix", prefix),
                *("--rate", "100", "--duration", "2", "--drift-after", "60"),
            ],
        )
        assert traffic.exit_code == 0, traffic.output
        sent = int(traffic.output.split("sent ")[-1].split()[0])
        assert sent > 0
        wait_for(
            lambda: counted(worker, "driftline_events_processed_total") >= sent,
            60,
            "the events sent",
        )
        producer = Producer(librdkafka_config(bootstrap, settings))
        producer.produce(topics.predictions, value=b"{not json")
        assert producer.flush(15) == 0
        wait_for(
            lambda: counted(worker, "driftline_events_dead_lettered_total") >= 1,
            30,
            "the dead letter",
        )
    (letter,) = read_topic(bootstrap, settings, topics.dlq, 1)
    assert letter == b"{not json"
    # The Kafka target publishes as the worker connects.
    sender = KafkaSender(bootstrap, settings=settings)
    target = KafkaTarget(type="kafka", topic=f"{prefix}.retraining", timeout_s=10)
    delivery = DeliveryRow(
        id=1,
        trigger_id="trg_secure",
        model_id=MODEL,
        target_type="kafka",
        target_url=target.key,
        payload=json.dumps({"trigger_id": "trg_secure"}),
        attempts=0,
        target=None,
        tenant=None,
    )
    sent_ok = asyncio.run(sender.send(target, delivery, datetime.now(UTC)))
    sender.close()
    assert sent_ok.ok, sent_ok.error
    (request,) = read_topic(bootstrap, settings, target.topic or "", 1)
    assert json.loads(request)["trigger_id"] == "trg_secure"


@pytest.mark.parametrize(
    ("case", "hint"),
    [
        ("another CA", "DRIFTLINE_KAFKA_SSL_CAFILE"),
        ("no client certificate", "DRIFTLINE_KAFKA_SSL_CERTFILE"),
        ("plaintext", "DRIFTLINE_KAFKA_SECURITY_PROTOCOL"),
        # The bootstrap's name is in the certificate, the advertised broker's is not:
        # only the connections the consumer and producers make would fail.
        ("a broker's name not in its certificate", "DRIFTLINE_KAFKA_SSL_CHECK_HOSTNAME"),
    ],
)
def test_a_wrong_tls_setting_stops_the_worker_at_once_naming_it(
    pki: dict[str, Path | trustme.CA], tmp_path: Path, topic_prefix: str, case: str, hint: str
) -> None:
    assert isinstance(pki["ca_obj"], trustme.CA)
    env = {
        "another CA": {**tls_env(pki), "KAFKA_SSL_CAFILE": str(pki["other_ca"])},
        "no client certificate": tls_env(pki),
        "plaintext": {},
        "a broker's name not in its certificate": tls_env(pki),
    }[case]
    advertised_unnamed = case == "a broker's name not in its certificate"
    with tls_broker(
        pki["ca_obj"],
        client_certificates=case == "no client certificate",
        names=("localhost",) if advertised_unnamed else ("127.0.0.1", "localhost"),
        host="localhost" if advertised_unnamed else "127.0.0.1",
    ) as bootstrap:
        config = worker_settings(tmp_path, bootstrap, topic_prefix)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="exited with code 2") as stopped:
            WorkerProcess({**config, **env}, tmp_path / "worker.log").start(ready_within_s=40)
        assert time.monotonic() - started < 30
    assert "cannot reach Kafka" in str(stopped.value)
    assert hint in str(stopped.value)
    # (Where it fails varies: at the advertised broker's check, or already at the
    # metadata request when librdkafka sends it to the broker it has just learned.)
