"""Topic names and creation (through confluent-kafka's admin client)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

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
        existing = {
            name: len(meta.partitions)
            for name, meta in admin.list_topics(timeout=timeout_s).topics.items()
        }
    except KafkaException as exc:
        admin.poll(0.2)  # librdkafka's log lines (why it failed) arrive when it is polled
        said = f" ({errors[-1]})" if errors else ""
        raise BrokerError(
            f"cannot reach Kafka at {bootstrap}: {exc.args[0].str()}{said}; "
            f"{connection_hint(errors, tls)}"
        ) from None
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
