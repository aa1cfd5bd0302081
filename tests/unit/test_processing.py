import itertools
from datetime import UTC, datetime

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.schemas.events import EventRow
from driftline.stream.processing import MonitorState, ProcessResult
from tests.unit.helpers import assert_same_reports, make_monitor, make_rows

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def run(state: MonitorState, rows: list[EventRow], cuts: list[int]) -> ProcessResult:
    """Process ``rows`` in batches split at ``cuts``; merge the results."""
    merged = ProcessResult()
    edges = [0, *sorted(set(cuts)), len(rows)]
    for lo, hi in itertools.pairwise(edges):
        result = state.process(rows[lo:hi], now=NOW)
        merged.accepted += result.accepted
        merged.rejections += [
            r.__class__(r.position + lo, r.reason, r.message) for r in result.rejections
        ]
        merged.reports += result.reports
        merged.triggers += result.triggers
    return merged


ROWS = make_rows(np.random.default_rng(5), 1500, 0.0, per_second=2.0, jitter=40.0)


@given(st.lists(st.integers(0, len(ROWS)), max_size=12))
@settings(max_examples=40, deadline=None)
def test_reports_do_not_depend_on_batching(cuts: list[int]) -> None:
    monitor = make_monitor(lateness="30s")
    one_batch = run(MonitorState(monitor), ROWS, [])
    split = run(MonitorState(monitor), ROWS, cuts)
    assert_same_reports(split.reports, one_batch.reports)
    assert split.rejections == one_batch.rejections
    assert split.accepted == one_batch.accepted
    assert one_batch.reports
    assert any(r.reason == "late" for r in one_batch.rejections)


def test_window_counts_are_exact() -> None:
    state = MonitorState(make_monitor(panes=2))
    rows = make_rows(np.random.default_rng(1), 600, 0.0, per_second=1.0)  # 10 minutes, 60/pane
    result = state.process(rows, now=NOW)
    assert result.accepted == 600
    assert [r.n for r in result.reports] == [60] + [120] * 8
    for report in result.reports:
        start = report.window_start.timestamp()
        end = report.window_end.timestamp()
        assert report.n == sum(1 for row in rows if start <= row.ts < end)
        assert all(f.stats.count == report.n for f in report.features)


def test_bad_feature_types_and_late_events_are_rejected_with_reasons() -> None:
    state = MonitorState(make_monitor(panes=1))
    rows = [
        EventRow(event_id="ok", ts=10, features={"x": 1.0, "c": "a"}),
        EventRow(event_id="str", ts=11, features={"x": "1.0", "c": "a"}),
        EventRow(event_id="bool", ts=12, features={"x": True}),
        EventRow(event_id="next", ts=70, features={"x": None, "c": 3}),
        EventRow(event_id="late", ts=20, features={"x": 2.0}),
    ]
    result = state.process(rows, now=NOW)
    assert [(r.position, r.reason) for r in result.rejections] == [
        (1, "feature_type"),
        (2, "feature_type"),
        (4, "late"),
    ]
    assert "features.x: expected a number or null, got '1.0'" in result.rejections[0].message
    assert "1970-01-01T00:00:20+00:00" in result.rejections[2].message
    assert "watermark 1970-01-01T00:01:10+00:00" in result.rejections[2].message
    assert result.accepted == 2
    (report,) = result.reports
    assert report.n == 1
    assert not report.sufficient
    assert not report.drifted


def test_shift_is_detected_and_fires_once_per_episode() -> None:
    rng = np.random.default_rng(2)
    state = MonitorState(make_monitor(panes=1, min_events=50, consecutive=2, clean=2))
    minute, rate = 60.0, 1000 / 60  # 1,000 events per one-minute window
    clean = make_rows(rng, 6000, 0.0, per_second=rate)
    drifted = make_rows(rng, 6000, 6 * minute, per_second=rate, shift=1.0)
    back = make_rows(rng, 6000, 12 * minute, per_second=rate)
    again = make_rows(rng, 6000, 18 * minute, per_second=rate, shift=1.0)
    tail = make_rows(rng, 1, 25 * minute, per_second=1)
    result = state.process(clean + drifted + back + again + tail, model_version="v7", now=NOW)
    verdicts = [r.drifted for r in result.reports]
    assert verdicts == [False] * 6 + [True] * 6 + [False] * 6 + [True] * 6
    assert len(result.triggers) == 2  # two episodes, separated by clean windows
    first = result.triggers[0].data
    assert first.window_end == result.reports[7].window_end  # second drifted window
    assert first.consecutive_drifted_windows == 2
    assert first.model_version == "v7"
    assert first.trigger_id != result.triggers[1].data.trigger_id
    assert {f.name for f in first.drifted_features} == {"x", "c"}
    ranks = [f.score / f.threshold for f in first.drifted_features]
    assert ranks == sorted(ranks, reverse=True)


def test_a_restored_snapshot_continues_exactly() -> None:
    """Process half, snapshot through JSON, restore into a fresh state, process the rest."""
    import orjson

    monitor = make_monitor(lateness="30s")
    whole = MonitorState(monitor).process(ROWS, "v1", now=NOW)
    first = MonitorState(monitor)
    head = first.process(ROWS[:700], "v1", now=NOW)
    second = MonitorState(monitor)
    assert second.restore(orjson.loads(orjson.dumps(first.to_state())))
    tail = second.process(ROWS[700:], "v1", now=NOW)
    assert_same_reports(head.reports + tail.reports, whole.reports)
    assert second.last_report == whole.reports[-1]
    other = make_monitor(lateness="30s")
    stale = MonitorState(type(other)(other.spec, other.features, other.profile, 2))
    assert not stale.restore(first.to_state())  # another reference version: start afresh
