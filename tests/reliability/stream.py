"""A seeded stream of predictions with bad input, disorder and late events mixed in, and
the fate each row must meet: the ground truth of the reliability suite.

The fates are worked out here from the event schema and the watermark rule
(README, "Event time"), not by running driftline, so the suite checks driftline against
them. Fates: ``counted``, ``skipped`` (a model nobody monitors) and ``dead:<reason>``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from driftline.embedded.traffic import TrafficModel

MODEL = "fraud"
UNMONITORED = "not-monitored"
START = 1_700_000_040.0  # a pane boundary (a multiple of 60)
PANE_S = 60.0
LATENESS_S = 20.0
MINUTES = 14
PER_MINUTE = 160
#: Two drift episodes (1-minute windows; 2 drifted to open one, 2 clean to close it).
DRIFTED_MINUTES = {4, 5, 6, 10, 11}
#: Rows arrive up to this much after rows timed later (within the allowed lateness).
DISORDER_S = 15.0
#: Of those, this share arrives well after its window closed: late.
LATE_SHARE = 0.02
#: The closing event: far enough on to close every window before it.
CLOSER_TS = START + (MINUTES + 10) * PANE_S


@dataclass
class Message:
    """One Kafka message, and the fates its rows must meet."""

    value: bytes
    kind: str  # what it is, for the report and failure messages
    key: bytes | None = MODEL.encode()
    #: The event times of its valid rows, in row order: each is judged against the
    #: watermark. ``nan``: a row placed in the stream, given the newest time so far.
    candidates: list[float] = field(default_factory=list)
    #: The ``event_id`` of each candidate row.
    ids: list[str] = field(default_factory=list)
    fates: Counter[str] = field(default_factory=Counter)
    #: Makes ``value`` once its ``nan`` rows have their time.
    render: Callable[[float], bytes] | None = None


@dataclass
class Stream:
    messages: list[Message]

    @property
    def produced(self) -> int:
        """Rows produced (a message that is not JSON counts as one)."""
        return sum(sum(m.fates.values()) for m in self.messages)

    def expected(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for message in self.messages:
            total.update(message.fates)
        return total


def build(
    seed: int, poison: bool = True, disorder: bool = True, duplicates: bool = False
) -> Stream:
    """The good rows of ``MINUTES`` minutes (drifting twice), in a disordered arrival
    order with some late rows, in EventBatch and single-event messages, with every kind
    of bad input mixed in (``poison``), then one closing event. ``duplicates``: 5% of
    the messages are produced again a few messages later, and some batches repeat a row
    (for a monitor with ``window.deduplicate``)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for minute in range(MINUTES):
        low = START + minute * PANE_S
        ts = np.sort(rng.uniform(low, low + PANE_S, PER_MINUTE))
        # Around the window boundaries: exactly on one, and just before it.
        ts[0], ts[-1] = low, math.nextafter(low + PANE_S, -math.inf)
        model = TrafficModel(drifted=minute in DRIFTED_MINUTES)
        rows += model.rows(rng, PER_MINUTE, ts, minute * PER_MINUTE)
    arrival = np.array([row["ts"] for row in rows])
    if disorder:
        arrival = arrival + rng.uniform(0.0, DISORDER_S, len(rows))
        late = rng.random(len(rows)) < LATE_SHARE
        arrival[late] += rng.uniform(90.0, 240.0, int(late.sum()))
    rows = [rows[i] for i in np.argsort(arrival, kind="stable")]

    messages: list[Message] = []
    at = 0
    while at < len(rows):
        size = int(rng.choice([1, 1, 5, 20, 50]))
        chunk = rows[at : at + size]
        at += size
        if len(chunk) == 1 and rng.random() < 0.5:
            body: dict[str, Any] = {"model_id": MODEL, **chunk[0]}
            kind = "single event"
        else:
            body = {"model_id": MODEL, "model_version": "v1", "events": chunk}
            kind = "EventBatch"
        if duplicates and len(chunk) > 1 and rng.random() < 0.1:
            body["events"] = [*chunk, chunk[0]]  # a row twice in one batch
            chunk = body["events"]
        messages.append(
            Message(
                orjson.dumps(body),
                kind,
                candidates=[r["ts"] for r in chunk],
                ids=[r["event_id"] for r in chunk],
            )
        )
    if duplicates:
        for index in sorted(rng.choice(len(messages), len(messages) // 20, replace=False))[::-1]:
            original = messages[index]
            copy = Message(
                original.value,
                f"{original.kind} produced again",
                candidates=list(original.candidates),
                ids=list(original.ids),
            )
            messages.insert(min(len(messages), index + 1 + int(rng.integers(0, 10))), copy)
    if poison:
        for pill in poison_pills(rng):
            messages.insert(int(rng.integers(20, len(messages))), pill)
    closer = {"model_id": MODEL, "event_id": "closer", "ts": CLOSER_TS, "features": {}}
    messages.append(
        Message(orjson.dumps(closer), "closing event", candidates=[CLOSER_TS], ids=["closer"])
    )
    _judge(messages, duplicates)
    return Stream(messages)


def poison_pills(rng: np.random.Generator) -> list[Message]:
    """One message of every kind of bad input, each with the fates of its rows. Rows that
    are valid get their ``ts`` when they are placed (``candidates``)."""
    good = TrafficModel().rows(rng, 4, np.full(4, START), 10**6)
    names = iter(range(100))

    def row(i: int, **changes: Any) -> dict[str, Any]:
        return {**good[i], "event_id": f"pill-{next(names)}", **changes}

    far_future = time.time() + 365 * 86400
    single = {"model_id": MODEL, **row(0)}
    rfc3339 = "2023-11-14T22:15:00Z"
    mixed = [
        row(1),  # valid
        row(2, features={**good[2]["features"], "amount": "abc"}),
        {k: v for k, v in row(3).items() if k != "ts"},
        row(0, ts=far_future),
        row(3, ts=1.0),  # valid but ancient (1970): late, its window long closed
        row(2, ts=rfc3339),  # valid (RFC 3339)
    ]
    huge = {"model_id": MODEL, **row(1, features={**good[1]["features"], "blob": "x" * 700_000})}
    pills = [
        Message(b'{"model_id": "fraud", "events": [', "truncated JSON", fates=_dead("decode")),
        Message(b"\xff\xfe\xfd not utf-8 \x80", "non-UTF-8 bytes", fates=_dead("decode")),
        Message(b"", "empty message", fates=_dead("decode")),
        Message(b"[1, 2, 3]", "a JSON array", fates=_dead("schema")),
        Message(
            orjson.dumps(single).replace(b'"amount":', b'"amount":NaN,"x":'),
            "NaN literal",
            fates=_dead("decode"),
        ),
        Message(
            orjson.dumps(single).replace(b'"amount":', b'"amount":1e999,"x":'),
            "Infinity (1e999)",
            fates=_dead("decode"),
        ),
        Message(
            orjson.dumps({**single, "ts": 1.7e12}), "ts in milliseconds", fates=_dead("schema")
        ),
        Message(
            orjson.dumps({**single, "ts": "yesterday"}), "ts not a time", fates=_dead("schema")
        ),
        Message(
            orjson.dumps({k: v for k, v in single.items() if k != "event_id"}),
            "event_id missing",
            fates=_dead("schema"),
        ),
        Message(
            orjson.dumps({**single, "ts": far_future}),
            "a year in the future",
            fates=_dead("future"),
        ),
        # A batch with good rows and bad ones: only the bad rows go.
        Message(
            b"",
            "EventBatch of good and bad rows",
            candidates=[math.nan, 1.0, datetime.fromisoformat(rfc3339).timestamp()],
            ids=[mixed[0]["event_id"], mixed[4]["event_id"], mixed[5]["event_id"]],
            fates=Counter({"dead:feature_type": 1, "dead:schema": 1, "dead:future": 1}),
            render=lambda ts: orjson.dumps(
                {"model_id": MODEL, "events": [{**mixed[0], "ts": ts}, *mixed[1:]]}
            ),
        ),
        Message(
            orjson.dumps({"model_id": UNMONITORED, "events": [row(0), row(1), row(2)]}),
            "a model nobody monitors",
            key=UNMONITORED.encode(),
            fates=Counter({"skipped": 3}),
        ),
        # Huge, but under the broker's 1 MB: a valid row with a 700 KB unmonitored feature.
        Message(
            b"",
            "700 KB event",
            candidates=[math.nan],
            ids=[huge["event_id"]],
            render=lambda ts: orjson.dumps({**huge, "ts": ts}),
        ),
        Message(b"{" + b"x" * 700_000, "700 KB of garbage", fates=_dead("decode")),
    ]
    return pills


def _dead(reason: str, rows: int = 1) -> Counter[str]:
    return Counter({f"dead:{reason}": rows})


def _judge(messages: list[Message], deduplicate: bool) -> None:
    """Each candidate row is late if its pane ended at or before the watermark it meets
    (the newest event time before it, less the allowed lateness); else, with
    ``deduplicate``, a duplicate if a counted row had its id and that row's pane had not
    ended by then; else counted.

    A ``nan`` candidate is a valid row placed in the stream: it takes the newest event
    time so far (never late), and its message is rendered with it.
    """
    newest = -math.inf
    counted: dict[str, float] = {}  # id -> the end of the pane it was counted in
    for message in messages:
        for ts, event_id in zip(message.candidates, message.ids, strict=True):
            if math.isnan(ts):
                ts = newest if newest > -math.inf else START
                assert message.render is not None
                message.value = message.render(ts)
            pane_end = (math.floor(ts / PANE_S) + 1) * PANE_S
            watermark = newest - LATENESS_S
            if pane_end <= watermark:
                message.fates["dead:late"] += 1
            elif deduplicate and counted.get(event_id, -math.inf) > watermark:
                message.fates["duplicate"] += 1
            else:
                message.fates["counted"] += 1
                counted[event_id] = pane_end
            newest = max(newest, ts)
