"""Dead letters: events driftline could not count, with the reason in Kafka headers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from driftline.schemas.events import EventRow, TypedRow, WireRow, batch_rows

REASON_HEADER = "driftline-reason"


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """What driftline needs of a consumed Kafka message."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    #: The message's Kafka timestamp in epoch seconds (None when it has none, or in replay).
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One event for the dead-letter topic: its bytes, where it came from, and why."""

    key: bytes | None
    value: bytes
    reason: str
    message: str
    source: SourceMessage
    batch_index: int | None = None

    def headers(self, now: datetime | None = None) -> list[tuple[str, bytes]]:
        moment = (now or datetime.now(UTC)).isoformat()
        headers = [
            (REASON_HEADER, self.reason.encode()),
            ("driftline-error", self.message.encode()[:4000]),
            ("driftline-source-topic", self.source.topic.encode()),
            ("driftline-source-partition", str(self.source.partition).encode()),
            ("driftline-source-offset", str(self.source.offset).encode()),
            ("driftline-dead-lettered-at", moment.encode()),
        ]
        if self.batch_index is not None:
            headers.append(("driftline-batch-index", str(self.batch_index).encode()))
        return headers


def whole_message(source: SourceMessage, reason: str, message: str) -> DeadLetter:
    """The message as it arrived (it could not be split into rows)."""
    return DeadLetter(source.key, source.value or b"", reason, message, source)


def one_row(
    source: SourceMessage,
    reason: str,
    message: str,
    batch_index: int | None,
    model_id: str | None,
    model_version: str | None,
    row: EventRow | WireRow | Any,
) -> DeadLetter:
    """One row: a single event as it arrived, or a batch row as a standalone event."""
    if batch_index is None:
        return whole_message(source, reason, message)
    if isinstance(row, TypedRow) and source.value:  # only its monitored features were read
        body = batch_rows(source.value)[batch_index]
    elif isinstance(row, EventRow | WireRow):
        body = row.model_dump(mode="json")
    else:
        body = row
    if isinstance(body, dict):
        body = {"model_id": model_id, "model_version": model_version, **body}
    return DeadLetter(source.key, orjson.dumps(body), reason, message, source, batch_index)


def label_letter(model_id: str, row: Any, origin: Any, reason: str, message: str) -> DeadLetter:
    """A label as a standalone ``LabelEvent``; ``origin`` is ``[topic, partition, offset,
    batch index]`` as kept while it waited (a label can be refused long after it came)."""
    topic, partition, offset, index = origin
    body = {"model_id": model_id, **row.model_dump(mode="json")}
    source = SourceMessage(model_id.encode(), None, topic, partition, offset)
    return DeadLetter(source.key, orjson.dumps(body), reason, message, source, index)
