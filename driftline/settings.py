"""Process settings: one frozen object read from ``DRIFTLINE_*`` environment variables."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftline.exceptions import ConfigError


class Settings(BaseSettings):
    """Settings of a driftline process. Every field is ``DRIFTLINE_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", frozen=True, extra="ignore")

    monitors_path: Path = Field(
        Path("monitors.yaml"), description="YAML file describing the monitored models."
    )
    kafka_bootstrap: str | None = Field(
        None,
        description="Kafka bootstrap servers (host:port,...). Unset: start the embedded broker.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client of driftline connects."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_username_file: Path | None = Field(
        None, description="A file holding the SASL user name (a mounted secret)."
    )
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_sasl_password_file: Path | None = Field(
        None, description="A file holding the SASL password (a mounted secret)."
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA certificates (PEM) to verify the brokers by; unset: the system's."
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for mutual TLS."
    )
    kafka_ssl_keyfile: Path | None = Field(
        None, description="Private key (PEM) of the client certificate."
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that a broker's certificate names the host connected to."
    )
    kafka_client_id: str = Field(
        "driftline", min_length=1, description="Client id of driftline's Kafka clients."
    )
    kafka_fetch_max_bytes: int = Field(
        64 * 2**20, ge=1024, description="Most bytes the consumer fetches in one request."
    )
    kafka_max_partition_fetch_bytes: int = Field(
        8 * 2**20, ge=1024, description="Most bytes fetched of one partition per request."
    )
    kafka_max_poll_interval_s: float = Field(
        300.0,
        gt=0,
        description="Longest a batch may take before the group gives the worker's partitions "
        "to another (whose counts this worker's later write then cannot replace).",
    )
    embedded_broker_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of the embedded broker (no DRIFTLINE_KAFKA_BOOTSTRAP); unset: a "
        "free one. Fixed, producers on this machine can be configured once.",
    )
    topic_prefix: str = Field(
        "driftline",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Prefix of the topics <prefix>.predictions and <prefix>.dlq.",
    )
    topic_partitions: int = Field(
        1, ge=1, description="Partitions for topics driftline creates when they do not exist."
    )
    consumer_group: str = Field(
        "driftline", description="Kafka consumer group (the Faust app id) of the workers."
    )
    database_url: str = Field(
        "sqlite:///driftline.db",
        description="SQLAlchemy URL of the store: a SQLite file by default, or PostgreSQL.",
    )
    web_host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    web_port: int = Field(6066, ge=0, le=65535, description="Port of /metrics, /healthz, /v1.")
    batch_size: int = Field(
        1000, ge=1, description="Most Kafka messages the worker processes in one batch."
    )
    batch_max_bytes: int = Field(
        2**20,
        ge=1,
        description="Most message bytes processed at once: a batch of larger messages is "
        "processed in parts this size, so decoding it takes bounded memory.",
    )
    batch_timeout_s: float = Field(
        0.5, gt=0, description="Longest wait for a batch to fill before processing it anyway."
    )
    session_timeout_s: float = Field(
        10.0, gt=0, description="Kafka consumer group session timeout in seconds."
    )
    relay_interval_s: float = Field(
        1.0, gt=0, description="How often the outbox relay looks for due deliveries."
    )
    snapshot_every_events: int = Field(
        0, ge=0, description="Store state (and ack) after this many events; 0: by time only."
    )
    snapshot_every_s: float = Field(
        1.0,
        ge=0,
        description="Store state (and ack) at least this often; 0 (and no event count): "
        "with every batch. A batch that fires a retraining trigger is stored at once.",
    )
    report_retention_days: float = Field(
        30.0, gt=0, description="Window reports older than this many days are pruned."
    )
    delivery_retention_days: float = Field(
        30.0, gt=0, description="Delivered or dead outbox rows older than this are pruned."
    )
    alertmanager_trigger_label: str = Field(
        "driftline_retrain",
        min_length=1,
        description="Label that makes a firing Alertmanager alert a retraining trigger "
        'when it is "true".',
    )
    alertmanager_model_label: str = Field(
        "model", min_length=1, description="Label of an Alertmanager alert naming the model."
    )
    monitors_refresh_s: float = Field(
        5.0, gt=0, description="How often workers apply monitors changed through the API."
    )
    api_max_upload_mb: float = Field(
        256.0, gt=0, description="Largest request body (reference files) in MiB."
    )
    api_max_json_kb: int = Field(
        1024,
        ge=1,
        description="Largest JSON request body (monitors, Alertmanager) in KiB: refused "
        "with 413 as it arrives, never read whole.",
    )
    api_auth: Literal["keys", "none"] = Field(
        "keys",
        description="keys: /v1 needs an API key (driftline keys create); none: open (local use).",
    )
    api_rate_limit: float = Field(20.0, gt=0, description="Requests per second per API key.")
    api_rate_burst: int = Field(40, ge=1, description="Burst of requests per API key.")
    data_dir: Path = Field(
        Path(".driftline"), description="Directory for the worker's local files (Faust datadir)."
    )
    log_format: Literal["json", "console"] = Field(
        "json", description="json: one JSON object per log line; console: for people."
    )
    log_level: str = Field(
        "info", pattern=r"^(crit|error|warn|info|debug)$", description="Worker log level."
    )

    @model_validator(mode="after")
    def _cadence(self) -> Settings:
        if self.snapshot_every_events and not self.snapshot_every_s:
            raise ValueError(
                "DRIFTLINE_SNAPSHOT_EVERY_S must be > 0 when DRIFTLINE_SNAPSHOT_EVERY_EVENTS "
                "is set (or a quiet stream would never be stored)"
            )
        return self

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        problem = kafka_security_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def kafka_security_problem(settings: Settings) -> str | None:
    """What is wrong with the Kafka security settings (None: nothing), naming the
    variable to fix."""
    protocol = settings.kafka_security_protocol
    sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    pairs = [
        ("USERNAME", settings.kafka_sasl_username, settings.kafka_sasl_username_file),
        ("PASSWORD", settings.kafka_sasl_password, settings.kafka_sasl_password_file),
    ]
    for name, value, file in pairs:
        if value is not None and file is not None:
            return f"set DRIFTLINE_KAFKA_SASL_{name} or DRIFTLINE_KAFKA_SASL_{name}_FILE, not both"
    if sasl:
        if settings.kafka_sasl_mechanism is None:
            return f"DRIFTLINE_KAFKA_SASL_MECHANISM is needed with {protocol}"
        for name, value, file in pairs:
            if value is None and file is None:
                return f"DRIFTLINE_KAFKA_SASL_{name} (or _FILE) is needed with {protocol}"
    elif settings.kafka_sasl_mechanism is not None or any(v or f for _, v, f in pairs):
        return f"DRIFTLINE_KAFKA_SASL_* are for SASL_PLAINTEXT or SASL_SSL, not {protocol}"
    files = {
        "SSL_CAFILE": settings.kafka_ssl_cafile,
        "SSL_CERTFILE": settings.kafka_ssl_certfile,
        "SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    if not tls and any(files.values()):
        return f"DRIFTLINE_KAFKA_SSL_* are for SSL or SASL_SSL, not {protocol}"
    if (settings.kafka_ssl_certfile is None) != (settings.kafka_ssl_keyfile is None):
        return "DRIFTLINE_KAFKA_SSL_CERTFILE and DRIFTLINE_KAFKA_SSL_KEYFILE go together"
    named = {**files, "SASL_USERNAME_FILE": settings.kafka_sasl_username_file}
    named["SASL_PASSWORD_FILE"] = settings.kafka_sasl_password_file
    for name, path in named.items():
        if path is not None:
            problem = _unreadable(path)
            if problem:
                return f"DRIFTLINE_KAFKA_{name}: {problem}"
    if sasl:
        for name, value, file in pairs:
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if file is not None:
                try:
                    text = read_secret(file)
                except UnicodeDecodeError:
                    return f"DRIFTLINE_KAFKA_SASL_{name}_FILE: {file} is not UTF-8 text"
            if not text:
                return f"DRIFTLINE_KAFKA_SASL_{name}{'_FILE' if file else ''} is empty"
    return _tls_files_problem(settings) if tls else None


def read_secret(path: Path) -> str:
    """A secret's file's text without the line ending a shell or an editor adds."""
    return path.read_bytes().decode().rstrip("\r\n")


def _unreadable(path: Path) -> str | None:
    if not path.is_file():
        return f"no file {path}"
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return f"cannot read {path} ({exc.strerror}; the worker runs as uid {os.getuid()})"


def _tls_files_problem(settings: Settings) -> str | None:
    """Certificates and a key the TLS libraries would refuse, found before a client
    refuses them (librdkafka's words name no setting)."""
    cafile, certfile = settings.kafka_ssl_cafile, settings.kafka_ssl_certfile
    try:
        context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    except ssl.SSLError as exc:
        return f"DRIFTLINE_KAFKA_SSL_CAFILE: {cafile} holds no PEM certificate ({exc.reason})"
    if certfile is not None and settings.kafka_ssl_keyfile is not None:
        try:  # an empty password: an encrypted key fails here rather than prompting
            context.load_cert_chain(str(certfile), str(settings.kafka_ssl_keyfile), b"")
        except ssl.SSLError as exc:
            return (
                "DRIFTLINE_KAFKA_SSL_CERTFILE and _KEYFILE are not a PEM certificate and "
                f"its unencrypted private key ({exc.reason})"
            )
    return None


def load_settings() -> Settings:
    """Read settings from the environment; fail with a message naming the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"DRIFTLINE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        # Not chained: pydantic's error holds the raw input, secrets included.
        raise ConfigError(f"invalid settings: {problems}") from None
