"""Kafka security settings: checked at startup naming the variable, and built in one place
into each client's configuration (librdkafka's names, aiokafka's, Faust's credentials)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from driftline.exceptions import ConfigError
from driftline.kafka_clients import (
    aiokafka_options,
    connection_hint,
    faust_credentials,
    librdkafka_config,
    ssl_context,
)
from driftline.settings import Settings, load_settings


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, and a client certificate and key it signed, as PEM files."""
    ca = trustme.CA()
    client = ca.issue_cert("driftline-client")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return files


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SECURITY_PROTOCOL": "SASL_SSL"}, "DRIFTLINE_KAFKA_SASL_MECHANISM is needed"),
        (
            {"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_MECHANISM": "PLAIN"},
            "DRIFTLINE_KAFKA_SASL_USERNAME (or _FILE) is needed",
        ),
        (
            {"SASL_MECHANISM": "PLAIN", "SASL_USERNAME": "u", "SASL_PASSWORD": "p"},
            "DRIFTLINE_KAFKA_SASL_* are for SASL_PLAINTEXT or SASL_SSL, not PLAINTEXT",
        ),
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_CERTFILE": "/etc/hostname"},
            "DRIFTLINE_KAFKA_SSL_CERTFILE and DRIFTLINE_KAFKA_SSL_KEYFILE go together",
        ),
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_CAFILE": "/nonexistent/ca.pem"},
            "DRIFTLINE_KAFKA_SSL_CAFILE: no file /nonexistent/ca.pem",
        ),
        ({"SSL_CAFILE": "/etc/hostname"}, "DRIFTLINE_KAFKA_SSL_* are for SSL or SASL_SSL"),
        ({"SECURITY_PROTOCOL": "TLS"}, "DRIFTLINE_KAFKA_SECURITY_PROTOCOL"),
        (
            {
                "SECURITY_PROTOCOL": "SASL_SSL",
                "SASL_MECHANISM": "PLAIN",
                "SASL_USERNAME": "u",
                "SASL_PASSWORD": "p",
                "SASL_PASSWORD_FILE": "/etc/hostname",
            },
            "set DRIFTLINE_KAFKA_SASL_PASSWORD or DRIFTLINE_KAFKA_SASL_PASSWORD_FILE, not both",
        ),
    ],
)
def test_bad_security_settings_fail_at_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    refused = refused_settings(monkeypatch, env)
    assert message in str(refused)
    assert "hunter2" not in str(refused)


def refused_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> ConfigError:
    """The error loading settings from ``env`` (DRIFTLINE_KAFKA_ names without it)."""
    for name, value in env.items():
        monkeypatch.setenv(f"DRIFTLINE_KAFKA_{name}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return caught.value


def test_plaintext_by_default_changes_nothing_but_the_client_id() -> None:
    settings = Settings()
    config = librdkafka_config("127.0.0.1:9092", settings)
    assert config["security.protocol"] == "plaintext"
    assert config["client.id"] == "driftline"
    assert not [k for k in config if k.startswith(("sasl.", "ssl."))]
    assert aiokafka_options(settings) == {
        "client_id": "driftline",
        "security_protocol": "PLAINTEXT",
    }
    assert faust_credentials(settings) is None


def test_sasl_ssl_with_scram_and_a_mounted_password(tmp_path: Path, pki: dict[str, Path]) -> None:
    password = tmp_path / "password"
    password.write_text("hunter2\n")  # as a mounted secret often ends
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="drift",
        kafka_sasl_password_file=password,
        kafka_ssl_cafile=pki["ca"],
        kafka_client_id="drift-prod",
    )
    config = librdkafka_config("b1:9093,b2:9093", settings, **{"acks": "all"})
    assert {k: v for k, v in config.items() if k not in ("logger", "log.connection.close")} == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "client.id": "drift-prod",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "drift",
        "sasl.password": "hunter2",
        "ssl.ca.location": str(pki["ca"]),
        "ssl.endpoint.identification.algorithm": "https",
        "acks": "all",
    }
    options = aiokafka_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("drift", "hunter2")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname
    credentials = faust_credentials(settings)
    assert (credentials.username, credentials.password) == ("drift", "hunter2")
    assert credentials.ssl_context is not None
    password.write_text("rotated")  # read at each client's making
    assert librdkafka_config("b1:9093", settings)["sasl.password"] == "rotated"
    assert "hunter2" not in repr(settings)


def test_mutual_tls_loads_the_client_certificate(pki: dict[str, Path]) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki["ca"],
        kafka_ssl_certfile=pki["cert"],
        kafka_ssl_keyfile=pki["key"],
        kafka_ssl_check_hostname=False,
    )
    config = librdkafka_config("b1:9093", settings)
    assert config["ssl.certificate.location"] == str(pki["cert"])
    assert config["ssl.key.location"] == str(pki["key"])
    assert config["ssl.endpoint.identification.algorithm"] == "none"
    context = ssl_context(settings)
    assert not context.check_hostname
    assert context.get_ca_certs()  # the CA file's
    assert faust_credentials(settings).context is not None


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("an empty password file", "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE is empty"),
        ("a password file of a newline", "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE is empty"),
        ("a password file not UTF-8", "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE: "),
        ("an empty password", "DRIFTLINE_KAFKA_SASL_PASSWORD is empty"),
        ("a CA file of no certificate", "DRIFTLINE_KAFKA_SSL_CAFILE: "),
        ("a key that is not the certificate's", "DRIFTLINE_KAFKA_SSL_CERTFILE and _KEYFILE"),
        ("a key file of garbage", "DRIFTLINE_KAFKA_SSL_CERTFILE and _KEYFILE"),
    ],
)
def test_files_a_client_would_refuse_fail_at_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: dict[str, Path], case: str, message: str
) -> None:
    """Settings that pass a glance but that librdkafka refuses with words naming no
    setting (or a traceback showing a byte of the secret)."""
    secret, other = tmp_path / "password", trustme.CA().issue_cert("someone-else")
    env = {
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SASL_MECHANISM": "PLAIN",
        "SASL_USERNAME": "drift",
        "SASL_PASSWORD_FILE": str(secret),
        "SSL_CAFILE": str(pki["ca"]),
        "SSL_CERTFILE": str(pki["cert"]),
        "SSL_KEYFILE": str(pki["key"]),
    }
    secret.write_text("hunter2")
    if case == "an empty password file":
        secret.write_text("")
    elif case == "a password file of a newline":
        secret.write_text("\r\n")
    elif case == "a password file not UTF-8":
        secret.write_bytes(b"hunter2\xff")
    elif case == "an empty password":
        del env["SASL_PASSWORD_FILE"]
        env["SASL_PASSWORD"] = ""
    elif case == "a CA file of no certificate":
        pki["ca"].write_text("not a certificate\n")
    elif case == "a key that is not the certificate's":
        other.private_key_pem.write_to_path(str(pki["key"]))
    else:
        pki["key"].write_text("garbage\n")
    refused = refused_settings(monkeypatch, env)
    assert message in str(refused)
    assert "hunter2" not in str(refused)
    assert refused.__cause__ is None  # pydantic's error, holding the input, is dropped
    assert refused.__suppress_context__


def test_a_password_file_keeps_its_spaces_and_loses_its_line_ending(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(" two spaces  \n")
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="drift",
        kafka_sasl_password_file=secret,
    )
    assert librdkafka_config("b1:9092", settings)["sasl.password"] == " two spaces  "


def test_the_credentials_hint_needs_words_of_a_refusal_not_a_sasl_address() -> None:
    refused = (
        "sasl_plaintext://127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: "
        "Connection refused (after 0ms in state CONNECT)"
    )
    assert "SASL_PASSWORD" not in connection_hint([refused])
    wrong = (
        "sasl_ssl://b1:9093/bootstrap: SASL authentication error: Authentication failed "
        "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
    )
    assert "DRIFTLINE_KAFKA_SASL_PASSWORD" in connection_hint([refused, wrong])
