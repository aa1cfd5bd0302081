"""The configuration of driftline's confluent-kafka (librdkafka) clients, made in one place.

Every producer and admin client the worker and the CLI make takes its configuration
from ``librdkafka_config``, so that they all behave alike. librdkafka writes its own
log lines (``%3|...|FAIL|rdkafka#producer-1| ...``) to stderr unless it is given a
logger: with one, its lines go through Python logging (and so into the worker's JSON
log). They arrive when the client is polled: an admin client is polled after each call.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

from driftline.settings import read_secret

if TYPE_CHECKING:
    from driftline.settings import Settings

#: Where librdkafka's log lines go.
LIBRDKAFKA_LOG = logging.getLogger("driftline.librdkafka")


def librdkafka_config(
    bootstrap: str, settings: Settings | None = None, /, **options: Any
) -> dict[str, Any]:
    """A confluent-kafka client configuration for ``bootstrap``, connecting as
    ``settings`` say (none: plaintext), plus ``options`` (librdkafka's names, e.g.
    ``{"enable.idempotence": True}``).

    >>> config = librdkafka_config("127.0.0.1:9092", **{"linger.ms": 5})
    >>> config["bootstrap.servers"], config["linger.ms"], config["logger"].name
    ('127.0.0.1:9092', 5, 'driftline.librdkafka')
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": LIBRDKAFKA_LOG,
        # A broker closing an idle connection is not news (tansu closes them often).
        "log.connection.close": False,
    }
    if settings is not None:
        config.update(_librdkafka_security(settings))
    return {**config, **options}


def _librdkafka_security(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "client.id": settings.kafka_client_id,
        "security.protocol": settings.kafka_security_protocol.lower(),
    }
    credentials = sasl_credentials(settings)
    if credentials is not None:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"], config["sasl.password"] = credentials
    if settings.kafka_security_protocol.endswith("SSL"):
        files = {
            "ssl.ca.location": settings.kafka_ssl_cafile,
            "ssl.certificate.location": settings.kafka_ssl_certfile,
            "ssl.key.location": settings.kafka_ssl_keyfile,
        }
        config.update({name: str(path) for name, path in files.items() if path is not None})
        check = "https" if settings.kafka_ssl_check_hostname else "none"
        config["ssl.endpoint.identification.algorithm"] = check
    return config


#: What librdkafka says when a connection fails, and the settings to check then.
_HINTS = (
    (
        ("certificate verify failed", "ssl handshake failed", "unable to get local issuer"),
        "the broker's certificate is not trusted, or the TLS handshake failed: check "
        "DRIFTLINE_KAFKA_SSL_CAFILE (and DRIFTLINE_KAFKA_SSL_CHECK_HOSTNAME, "
        "DRIFTLINE_KAFKA_SSL_CERTFILE and _KEYFILE if the broker asks for a client certificate)",
    ),
    (
        # Not "sasl": every line of a SASL client names its broker sasl_ssl://...
        ("authentication failed", "sasl authentication", "invalid credentials"),
        "the broker refused the credentials: check DRIFTLINE_KAFKA_SASL_USERNAME, "
        "DRIFTLINE_KAFKA_SASL_PASSWORD and DRIFTLINE_KAFKA_SASL_MECHANISM",
    ),
    (
        ("security.protocol", "apiversion", "disconnected"),
        "the broker speaks another protocol than DRIFTLINE_KAFKA_SECURITY_PROTOCOL (a TLS "
        "listener needs SSL or SASL_SSL)",
    ),
)


class HeardLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """librdkafka's logger for a client whose lines are kept too (why it cannot connect
    is said only there: an SSL handshake's reason, a SASL failure)."""

    def __init__(self) -> None:
        super().__init__(LIBRDKAFKA_LOG, {})
        self.lines: list[str] = []

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        self.lines.append(str(msg) % args if args else str(msg))
        super().log(level, msg, *args, **kwargs)


def connection_hint(errors: list[str], tls: bool = False) -> str:
    """The settings to check, from what librdkafka said while it could not connect (a
    broker that closes the connection on a TLS client without a certificate says
    nothing more).

    >>> connection_hint(["SSL handshake failed: certificate verify failed"])[:33]
    "the broker's certificate is not t"
    >>> connection_hint([])
    'check DRIFTLINE_KAFKA_BOOTSTRAP and DRIFTLINE_KAFKA_SECURITY_PROTOCOL'
    """
    said = " ".join(errors).lower()
    for words, hint in _HINTS:
        if any(word in said for word in words):
            return hint
    if tls:
        return (
            "check DRIFTLINE_KAFKA_BOOTSTRAP; a broker that closes TLS connections may want a "
            "client certificate (DRIFTLINE_KAFKA_SSL_CERTFILE and DRIFTLINE_KAFKA_SSL_KEYFILE)"
        )
    return "check DRIFTLINE_KAFKA_BOOTSTRAP and DRIFTLINE_KAFKA_SECURITY_PROTOCOL"


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of an aiokafka client connecting as ``settings`` say."""
    options: dict[str, Any] = {
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    credentials = sasl_credentials(settings)
    if credentials is not None:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"], options["sasl_plain_password"] = credentials
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = ssl_context(settings)
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of the Python clients (aiokafka, Faust): the CA file (else the
    system's CAs), the client certificate for mutual TLS, the host name checked."""
    context = ssl.create_default_context(
        cafile=None if settings.kafka_ssl_cafile is None else str(settings.kafka_ssl_cafile)
    )
    if settings.kafka_ssl_certfile is not None and settings.kafka_ssl_keyfile is not None:
        context.load_cert_chain(str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile))
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for ``settings`` (None: plaintext)."""
    import faust

    protocol = settings.kafka_security_protocol
    credentials = sasl_credentials(settings)
    if credentials is not None:
        username, password = credentials
        context = ssl_context(settings) if protocol == "SASL_SSL" else None
        return faust.SASLCredentials(
            username=username,
            password=password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return None


def sasl_credentials(settings: Settings) -> tuple[str, str] | None:
    """The SASL user name and password (read from their files where given, at each
    client's making: a rotated secret is picked up by the next client); None without
    SASL."""
    if not settings.kafka_security_protocol.startswith("SASL_"):
        return None

    def value(text: str | None, file: Any) -> str:
        if file is not None:
            return read_secret(file)
        return text or ""

    password = settings.kafka_sasl_password
    return (
        value(settings.kafka_sasl_username, settings.kafka_sasl_username_file),
        value(
            None if password is None else password.get_secret_value(),
            settings.kafka_sasl_password_file,
        ),
    )
