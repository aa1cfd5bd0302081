"""Topic names and creation (through confluent-kafka's admin client)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from driftline.exceptions import BrokerError
from driftline.kafka_clients import HeardLog, connection_hint, librdkafka_config

if TYPE_CHECKING:
    from driftline.settings import Settings


@dataclass(frozen=True)
class Topics:
    prefix: str

    @property
    def predictions(self) -> str:
        return f"{self.prefix}.predictions"

    @property
    def labels(self) -> str:
        """Delayed labels, keyed by model_id like the predictions (same partition count)."""
        return f"{self.prefix}.labels"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def retraining(self) -> str:
        """The default topic of Kafka targets."""
        return f"{self.prefix}.retraining"

    def all(self) -> list[str]:
        return [self.predictions, self.labels, self.dlq]


def ensure_topics(
    bootstrap: str,
    names: Sequence[str],
    partitions: int,
    timeout_s: float = 15.0,
    copartitioned: Sequence[str] = (),
    settings: Settings | None = None,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    ``copartitioned`` topics (predictions and labels) must have one partition count, so
    that partition N of each goes to the same worker: a missing one is created with the
    count of those that exist, and different counts are an error.
    """
    heard = HeardLog()  # what librdkafka says while it cannot connect
    admin = AdminClient(librdkafka_config(bootstrap, settings, logger=heard))
    try:
        tls = settings is not None and settings.kafka_security_protocol.endswith("SSL")
        _ensure(admin, bootstrap, names, partitions, timeout_s, copartitioned, heard.lines, tls)
    finally:
        admin.poll(0)  # hand librdkafka's log lines to Python logging


def _unreachable(
    admin: AdminClient, what: str, exc: KafkaException, errors: list[str], tls: bool
) -> BrokerError:
    admin.poll(0.2)  # librdkafka's log lines (why it failed) arrive when it is polled
    said = f" ({errors[-1]})" if errors else ""
    return BrokerError(
        f"cannot reach {what}: {exc.args[0].str()}{said}; {connection_hint(errors, tls)}"
    )


#: Errors that say a broker did not answer (any other error is an answer from it).
_NO_ANSWER = {
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._AUTHENTICATION,
    KafkaError._SSL,
}


def _reach_brokers(
    admin: AdminClient,
    bootstrap: str,
    brokers: dict[int, Any],
    timeout_s: float,
    errors: list[str],
    tls: bool,
) -> None:
    """Asks every broker the bootstrap advertises for its configuration: the consumer
    and the producers talk to those addresses, not to the bootstrap's (a certificate
    naming only the bootstrap host, a listener of another protocol fail only there)."""
    resources = [ConfigResource(ResourceType.BROKER, str(broker)) for broker in brokers]
    if not resources:
        return
    futures = admin.describe_configs(resources, request_timeout=timeout_s)
    for resource, future in futures.items():
        try:
            future.result(timeout=timeout_s + 5)
        except KafkaException as exc:
            if exc.args[0].code() in _NO_ANSWER:
                address = brokers[int(resource.name)]
                what = f"Kafka broker {resource.name} at {address.host}:{address.port}"
                where = f"{what} (advertised by {bootstrap})"
                raise _unreachable(admin, where, exc, errors, tls) from None


def _ensure(
    admin: AdminClient,
    bootstrap: str,
    names: Sequence[str],
    partitions: int,
    timeout_s: float,
    copartitioned: Sequence[str],
    errors: list[str],
    tls: bool = False,
) -> None:
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise _unreachable(admin, f"Kafka at {bootstrap}", exc, errors, tls) from None
    existing = {name: len(meta.partitions) for name, meta in metadata.topics.items()}
    _reach_brokers(admin, bootstrap, metadata.brokers, timeout_s, errors, tls)
    counts = {name: existing[name] for name in copartitioned if name in existing}
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{name} has {count}" for name, count in counts.items())
        raise BrokerError(
            f"topics {', '.join(copartitioned)} must have the same number of partitions "
            f"(a model's labels go to the worker that has its predictions): {found}"
        )
    shared = next(iter(counts.values()), partitions)
    wanted = [
        NewTopic(
            n,
            num_partitions=shared if n in copartitioned else partitions,
            replication_factor=-1,
        )
        for n in names
        if n not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name}: {exc}") from None
