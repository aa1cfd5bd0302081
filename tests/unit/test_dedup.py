"""Duplicate events counted once (``window.deduplicate``): within a batch, across
batches and across a restart, whatever the batching; a duplicate of an event whose pane
has closed is late like any event for that pane."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.monitoring import Monitor
from driftline.schemas.events import EventRow
from driftline.schemas.monitors import MonitorSpec
from driftline.stream.dedup import id_hashes
from driftline.stream.processing import MonitorState
from tests.unit.helpers import assert_same_reports, make_monitor, make_rows

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def deduplicating(monitor: Monitor, on: bool = True) -> Monitor:
    spec = monitor.spec.model_dump()
    spec["window"]["deduplicate"] = on
    return Monitor(MonitorSpec.model_validate(spec), monitor.features, monitor.profile, 1)


@given(st.lists(st.text(max_size=12), max_size=20))
def test_an_id_hashes_the_same_in_any_batch(ids: list[str]) -> None:
    together = id_hashes(ids)
    assert [int(h) for h in together] == [int(id_hashes([i])[0]) for i in ids]
    assert len(set(together.tolist())) == len(set(ids))  # no collision among these


ROWS = make_rows(np.random.default_rng(3), 900, 0.0, per_second=2.0, jitter=20.0)


def with_duplicates(rng: np.random.Generator) -> tuple[list[EventRow], int]:
    """ROWS with 10% of them sent again 1-40 rows later (same id, same time), and the
    number of copies."""
    arrivals = [(float(i), row) for i, row in enumerate(ROWS)]
    copies = [
        (i + float(rng.integers(1, 40)) + 0.5, row)
        for i, row in enumerate(ROWS)
        if rng.random() < 0.1
    ]
    return [row for _, row in sorted(arrivals + copies, key=lambda a: a[0])], len(copies)


def run(state: MonitorState, rows: list[EventRow], cuts: list[int]) -> dict[str, Any]:
    accepted = duplicates = late = 0
    reports = []
    for lo, hi in itertools.pairwise([0, *sorted(set(cuts)), len(rows)]):
        result = state.process(rows[lo:hi], now=NOW)
        accepted += result.accepted
        duplicates += result.duplicates
        late += sum(r.reason == "late" for r in result.rejections)
        reports += result.reports
    return {"accepted": accepted, "duplicates": duplicates, "late": late, "reports": reports}


@given(st.lists(st.integers(0, 1000), max_size=10))
@settings(max_examples=30, deadline=None)
def test_duplicates_are_counted_once_whatever_the_batching(cuts: list[int]) -> None:
    monitor = deduplicating(make_monitor(lateness="30s"))
    rows, copies = with_duplicates(np.random.default_rng(5))
    whole = run(MonitorState(monitor), rows, [])
    split = run(MonitorState(monitor), rows, cuts)
    assert_same_reports(split["reports"], whole["reports"])
    assert (split["accepted"], split["duplicates"], split["late"]) == (
        whole["accepted"],
        whole["duplicates"],
        whole["late"],
    )
    # Every copy was dropped or late; the originals count as without copies.
    assert whole["duplicates"] + whole["late"] >= copies
    plain = run(MonitorState(monitor), ROWS, [])
    assert whole["accepted"] == plain["accepted"]
    assert_same_reports(whole["reports"], plain["reports"])


def test_without_the_setting_a_copy_counts_twice() -> None:
    rows, copies = with_duplicates(np.random.default_rng(5))
    assert copies > 0
    twice = run(MonitorState(make_monitor(lateness="30s")), rows, [])
    once = run(MonitorState(deduplicating(make_monitor(lateness="30s"))), rows, [])
    assert twice["duplicates"] == 0
    assert twice["accepted"] == once["accepted"] + once["duplicates"]


def test_the_ids_survive_a_restart_and_closed_panes_are_forgotten() -> None:
    monitor = deduplicating(make_monitor(panes=1, lateness="0s"))
    first = MonitorState(monitor)
    row = EventRow(event_id="a", ts=10.0, features={"x": 0.1, "c": "a"})
    assert first.process([row], now=NOW).accepted == 1
    restored = MonitorState(monitor)
    assert restored.restore(orjson.loads(orjson.dumps(first.to_state())))
    again = restored.process([row], now=NOW)
    assert (again.accepted, again.duplicates) == (0, 1)
    # The same id in a later pane, while the first is open: still the same event.
    moved = EventRow(event_id="a", ts=20.0, features={"x": 0.1, "c": "a"})
    assert restored.process([moved], now=NOW).duplicates == 1
    # Once its pane has closed, a copy is late, and the ids of the pane are gone.
    later = EventRow(event_id="b", ts=130.0, features={"x": 0.1, "c": "a"})
    assert restored.process([later], now=NOW).accepted == 1
    assert restored.seen is not None
    assert restored.seen.size == 1  # only b's pane is open
    copy = restored.process([row], now=NOW)
    assert (copy.accepted, copy.duplicates, [r.reason for r in copy.rejections]) == (
        0,
        0,
        ["late"],
    )
