"""Which log an offset belongs to: a stored offset means something only for the log it
was read from.

A log is named by the cluster's id and the topic's id, as the broker's metadata gives
them (``<cluster id>/<topic id>``). A fresh embedded broker (a new cluster id at every
start, and its topics new), a topic deleted and re-created (a new topic id) or another
cluster behind the same database is another log: its offsets start again from 0, and
trusting the stored ones would skip every new event as already counted. Where a broker
gives neither id, a log that ends before the stored offset is taken for another one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from driftline.kafka_clients import librdkafka_config

if TYPE_CHECKING:
    from driftline.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
#: How long the identities read from the broker are reused.
IDENTITY_TTL_S = 5.0


def log_name(cluster_id: str | None, topic_id: str | None) -> str | None:
    """A log's name; None when the broker gives neither id.

    >>> log_name("tansu-1", "AaIx"), log_name(None, "AaIx"), log_name(None, None)
    ('tansu-1/AaIx', '/AaIx', None)
    """
    if not cluster_id and not topic_id:
        return None
    return f"{cluster_id or ''}/{topic_id or ''}"


def another_log(
    stored_offset: int, stored: str | None, current: str | None, log_end: int | None
) -> str | None:
    """Why a stored offset belongs to another log than the current one; None if it is
    this log's (or nothing tells them apart).

    An id both sides know and that differs tells; else a log that ends at or before
    the stored offset (it never held the event counted last) is another log.

    >>> another_log(41, "c1/t1", "c2/t1", None)
    'the cluster id changed (c1 -> c2)'
    >>> another_log(41, "c1/t1", "c1/t2", 100)
    'the topic id changed (t1 -> t2: the topic was re-created)'
    >>> another_log(41, None, None, 10)
    'the log ends at offset 10, before the stored offset 41'
    >>> another_log(41, "c1/t1", "c1/t1", 10) is None  # same ids: trusted
    True
    """
    old = (stored or "/").split("/", 1)
    new = (current or "/").split("/", 1)
    for what, before, now in (("cluster", old[0], new[0]), ("topic", old[1], new[1])):
        if before and now and before != now:
            extra = ": the topic was re-created" if what == "topic" else ""
            return f"the {what} id changed ({before} -> {now}{extra})"
    unsure = needs_log_end(stored_offset, stored, current)
    if unsure and log_end is not None and log_end <= stored_offset:
        return f"the log ends at offset {log_end}, before the stored offset {stored_offset}"
    return None


def better_named(stored: str | None, current: str | None) -> bool:
    """Whether ``current`` names a log more fully than ``stored`` does (a topic id where
    there was none): the stored name is then replaced, once the log is known the same.

    >>> better_named("c1/", "c1/t1"), better_named("c1/t1", "c1/t1"), better_named(None, "c1/t1")
    (True, False, True)
    """
    return bool((current or "/").split("/", 1)[1]) and not (stored or "/").split("/", 1)[1]


def needs_log_end(stored_offset: int, stored: str | None, current: str | None) -> bool:
    """Whether the ids cannot say that a stored offset is this log's (no topic id on
    either side), so that its log end must.

    >>> needs_log_end(41, "c1/t1", "c1/t1"), needs_log_end(41, None, "c1/t1")
    (False, True)
    """
    known = (stored or "/").split("/", 1)[1] and (current or "/").split("/", 1)[1]
    return stored_offset >= 0 and not known


class LogInspector:
    """Reads the cluster id, topic ids and log ends from the broker (blocking calls,
    for a thread). An answer is cached for ``IDENTITY_TTL_S`` (unless asked ``fresh``);
    a call that fails for a passing reason is retried for up to ``answer_within_s``,
    since nothing must be counted or skipped on a guess; after that the answer is
    unknown (and nothing is concluded from it)."""

    def __init__(
        self,
        bootstrap: str,
        timeout_s: float = 10.0,
        answer_within_s: float = 30.0,
        settings: Settings | None = None,
    ) -> None:
        self._admin = AdminClient(librdkafka_config(bootstrap, settings))
        self._timeout_s = timeout_s
        self._answer_within_s = answer_within_s
        self._cached: dict[str, tuple[str | None, float]] = {}
        self._cluster_refused = False

    def identities(self, topics: Collection[str], fresh: bool = False) -> dict[str, str | None]:
        """Each topic's log name (None where the broker does not say)."""
        now = time.monotonic()
        wanted = sorted(t for t in topics if fresh or self._cached.get(t, (None, 0.0))[1] <= now)
        if wanted:
            names = self._asked(lambda: self._names(wanted), f"the ids of {', '.join(wanted)}")
            for topic, name in (names or {}).items():
                self._cached[topic] = (name, now + IDENTITY_TTL_S)
            if names is None:  # no answer: unknown, and asked again next time
                return {t: None if t in wanted else self._cached[t][0] for t in topics}
        return {topic: self._cached[topic][0] for topic in topics}

    def _names(self, topics: list[str]) -> dict[str, str | None]:
        timeout = self._timeout_s
        described = self._admin.describe_topics(TopicCollection(topics), request_timeout=timeout)
        topic_ids = {t: _text(f.result(timeout).topic_id) for t, f in described.items()}
        cluster_id = self._cluster_id()
        return {topic: log_name(cluster_id, topic_id) for topic, topic_id in topic_ids.items()}

    def _cluster_id(self) -> str | None:
        """The cluster's id; None where describing the cluster is not allowed (a client
        may lack that permission: the topic ids still tell re-created topics apart)."""
        if self._cluster_refused:
            return None
        timeout = self._timeout_s
        try:
            cluster = self._admin.describe_cluster(request_timeout=timeout).result(timeout)
            return None if cluster.cluster_id is None else str(cluster.cluster_id)
        except KafkaException as exc:
            if _passing(exc):
                raise
            self._cluster_refused = True
            log.warning(
                "the broker does not give this client its cluster id (%s): another cluster "
                "behind the same database is told apart by its topic ids only",
                exc,
            )
            return None

    def log_ends(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Each partition's log end offset (where the next event goes); those the
        broker does not answer for are left out."""
        if not partitions:
            return {}
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        request = {TopicPartition(t, p): latest for t, p in partitions}

        def ends() -> dict[tuple[str, int], int]:
            answers = self._admin.list_offsets(request, request_timeout=self._timeout_s)
            return {
                (tp.topic, tp.partition): int(future.result(self._timeout_s).offset)
                for tp, future in answers.items()
            }

        return self._asked(ends, "the log ends") or {}

    def _asked(self, call: Callable[[], T], what: str) -> T | None:
        """``call()``, retried while the broker fails for a passing reason; None if it
        gives no answer (after ``answer_within_s``, or at once for a lasting reason)."""
        deadline = time.monotonic() + self._answer_within_s
        delay = 0.25
        try:
            while True:
                try:
                    return call()
                except (KafkaException, TimeoutError) as exc:
                    passing = _passing(exc)
                    if not passing or time.monotonic() + delay > deadline:
                        log.warning("the broker does not say %s: %s", what, exc)
                        return None
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            self._admin.poll(0)  # librdkafka's log lines, to Python logging


def _passing(exc: BaseException) -> bool:
    """Whether a failed admin call may succeed if tried again."""
    if isinstance(exc, TimeoutError):
        return True
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return bool(error.retriable()) or error.code() in _PASSING_CODES
    return False


_PASSING_CODES = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN}


def _text(topic_id: Any) -> str | None:
    """A topic id as text (None, or all zeros, when the broker has none)."""
    if topic_id is None:
        return None
    text = str(topic_id)
    return None if text.strip("A=") == "" else text
