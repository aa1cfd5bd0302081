"""A Kafka that wants SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; over plaintext and TLS):
the worker, its dead letters, the Kafka target and ``driftline traffic`` authenticate
with the configured credentials (a password read from a mounted file too), a wrong
password or an unknown user stop the worker at once naming the settings, and the
password is never written to the worker's log.

The embedded broker cannot be the SASL end here (see ``sasl_proxy``): a
SASL-terminating proxy in front of it authenticates as a Kafka broker does."""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from driftline.embedded.broker import EmbeddedBroker, free_port
from driftline.embedded.process import WorkerProcess
from tests.integration.sasl_proxy import SaslProxy
from tests.integration.test_kafka_tls import everything_connects, pki, worker_settings

pytestmark = pytest.mark.integration

__all__ = ["pki"]  # the fixture, shared with the TLS tests

USER, PASSWORD = "driftline", "correct horse battery staple"


@contextlib.contextmanager
def sasl_broker(tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, SaslProxy]]:
    """The embedded broker behind a SASL proxy knowing USER; its bootstrap and the proxy."""
    port = free_port()
    with SaslProxy("127.0.0.1", port, {USER: PASSWORD}, tls=tls) as proxy:
        broker = EmbeddedBroker(port=port, advertised_port=proxy.port)
        broker.start()
        try:
            yield f"127.0.0.1:{proxy.port}", proxy
        finally:
            broker.stop()


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.mark.parametrize(
    ("mechanism", "protocol"),
    [
        ("PLAIN", "SASL_PLAINTEXT"),
        ("SCRAM-SHA-256", "SASL_PLAINTEXT"),
        ("SCRAM-SHA-512", "SASL_SSL"),
    ],
)
def test_everything_authenticates(
    pki: dict[str, Path | trustme.CA],
    tmp_path: Path,
    topic_prefix: str,
    mechanism: str,
    protocol: str,
) -> None:
    ca = pki["ca_obj"]
    assert isinstance(ca, trustme.CA)
    env = {
        "KAFKA_SECURITY_PROTOCOL": protocol,
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": USER,
        # The Kafka clients' debug lines show each request they send, SASL's too.
        "LOG_LEVEL": "debug",
    }
    if protocol == "SASL_SSL":  # the password as a mounted secret, the CA file
        secret = tmp_path / "kafka-password"
        secret.write_text(PASSWORD + "\n")
        env.update({"KAFKA_SASL_PASSWORD_FILE": str(secret), "KAFKA_SSL_CAFILE": str(pki["ca"])})
    else:
        env["KAFKA_SASL_PASSWORD"] = PASSWORD
    with sasl_broker(server_tls(ca) if protocol == "SASL_SSL" else None) as (bootstrap, proxy):
        everything_connects(bootstrap, env, tmp_path, topic_prefix)
    assert proxy.failures == 0
    assert (USER, mechanism) in proxy.authenticated
    assert PASSWORD not in (tmp_path / "worker.log").read_text()


@pytest.mark.parametrize("case", ["a wrong password", "an unknown user"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_refused_credentials_stop_the_worker_at_once_naming_them(
    tmp_path: Path, topic_prefix: str, mechanism: str, case: str
) -> None:
    user, password = (USER, "Tr0ub4dor&3") if case == "a wrong password" else ("nobody", PASSWORD)
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD": password,
    }
    with sasl_broker() as (bootstrap, proxy):
        config = worker_settings(tmp_path, bootstrap, topic_prefix)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="exited with code 2") as stopped:
            WorkerProcess({**config, **env}, tmp_path / "worker.log").start(ready_within_s=40)
        assert time.monotonic() - started < 30
    assert proxy.failures >= 1
    assert not proxy.authenticated
    said = str(stopped.value)
    assert "cannot reach Kafka" in said
    assert "DRIFTLINE_KAFKA_SASL_PASSWORD" in said
    assert "DRIFTLINE_KAFKA_SASL_USERNAME" in said
    assert password not in said
    assert password not in (tmp_path / "worker.log").read_text()
