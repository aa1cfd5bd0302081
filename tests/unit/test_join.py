"""Labels joined to predictions: early, on time, late, duplicated, unknown; bounded; restorable."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.stream.join import LabelJoin


def test_labels_before_with_and_long_after_their_predictions() -> None:
    join = LabelJoin(horizon_s=100, max_pending=1000)
    # Before: the label waits for its prediction.
    assert join.add_labels([("early", 10.0, 1)]) == ([], [])
    (joined,) = join.add_predictions([("early", 9.0, 0.7)])
    assert (joined.event_id, joined.ts, joined.prediction, joined.label) == ("early", 9.0, 0.7, 1)
    # With: in the same stretch of event time.
    join.add_predictions([("on-time", 20.0, 0.2)])
    assert [j.event_id for j in join.add_labels([("on-time", 21.0, 0)])[0]] == ["on-time"]
    # Long after: the prediction expired; its label is refused as expired.
    join.add_predictions([("late", 30.0, 0.9)])
    join.add_predictions([("later", 500.0, 0.1)])  # event time moves past the horizon
    joined_late, refused = join.add_labels([("late", 31.0, 1)])
    assert joined_late == []
    assert [(u.event_id, u.reason) for u in refused] == [("late", "expired")]
    assert join.counts.expired_predictions == 1
    assert join.counts.joined == 2


def test_duplicates_and_unknown_ids() -> None:
    join = LabelJoin(horizon_s=100, max_pending=1000)
    join.add_predictions([("a", 0.0, "x")])
    joined, refused = join.add_labels([("a", 1.0, "y"), ("a", 2.0, "y")])
    assert len(joined) == 1
    assert [u.reason for u in refused] == ["duplicate"]
    assert join.add_predictions([("a", 3.0, "x")]) == []  # a joined prediction again: ignored
    assert join.add_labels([("a", 4.0, "y")])[1][0].reason == "duplicate"
    # A label whose prediction never comes is unknown once the predictions' event time
    # is a horizon past it (labels alone do not move event time on).
    assert join.add_labels([("ghost", 5.0, "y")], origins=[("labels", 0, 7)]) == ([], [])
    join.add_labels([("b", 500.0, "y")])
    assert join.expire_labels() == []
    join.add_predictions([("c", 200.0, "x")])
    refused = join.expire_labels()
    assert [(u.event_id, u.reason, u.origin) for u in refused] == [
        ("ghost", "unknown", ("labels", 0, 7))
    ]


def test_a_restart_with_pending_joins_loses_nothing() -> None:
    predictions = [(f"e{i}", float(i), i % 3) for i in range(300)]
    labels = [(f"e{i}", float(i) + 40, i % 2) for i in range(0, 300, 2)]
    labels += [(f"e{i}", float(i) - 5, i % 2) for i in range(301, 320)]  # early
    labels += [(f"e{i}", 330.0, 1) for i in range(301, 305)]  # duplicates of early labels

    def run(restart_at: int | None) -> tuple[list[tuple[str, object]], list[tuple[str, str]]]:
        join = LabelJoin(horizon_s=50, max_pending=10_000)
        joined, refused = [], []
        steps = [("p", p) for p in predictions] + [("l", label) for label in labels]
        steps.sort(key=lambda s: s[1][1])  # in event-time order, interleaved
        for n, (kind, row) in enumerate(steps):
            if n == restart_at:
                join = LabelJoin.from_state(json.loads(json.dumps(join.to_state())), 50, 10_000)
            if kind == "p":
                joined += join.add_predictions([row])
            else:
                ok, bad = join.add_labels([row])
                joined += ok
                refused += bad
            refused += join.expire_labels()
        return [(j.event_id, j.label) for j in joined], [(u.event_id, u.reason) for u in refused]

    uninterrupted = run(None)
    assert uninterrupted[0]  # something joined
    for restart_at in (1, 150, 333, 470):
        assert run(restart_at) == uninterrupted


def test_memory_stays_bounded_when_labels_never_come() -> None:
    join = LabelJoin(horizon_s=10**9, max_pending=50_000)  # nothing expires by time
    tracemalloc.start()
    try:
        for start in range(0, 1_000_000, 10_000):
            join.add_predictions((f"p{i}", float(i), 1) for i in range(start, start + 10_000))
            assert join.pending <= 50_000
            assert join.held <= 2 * 50_000  # waiting predictions, and ids of evicted ones
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert join.counts.evicted_predictions == 1_000_000 - 50_000
    # About 240 bytes per entry held (id string, tuple, dict slot): 1M would be ~240 MB.
    assert current < 100_000 * 400, current
    # A late label for an evicted prediction is refused as expired, not unknown.
    assert join.add_labels([("p949999", 1.0, 1)])[1][0].reason == "expired"


# Few ids and a tiny bound: joins, duplicates, expiry, eviction and ids coming back.
_IDS = st.sampled_from([f"e{i}" for i in range(6)])
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["prediction", "label", "expire"]),
        _IDS,
        st.floats(min_value=0, max_value=300, allow_nan=False),
    ),
    max_size=40,
)


def _apply(join: LabelJoin, ops: list[tuple[str, str, float]]) -> list[Any]:
    out: list[Any] = []
    for kind, event_id, ts in ops:
        if kind == "prediction":
            out.append(join.add_predictions([(event_id, ts, 0.5)]))
        elif kind == "label":
            out.append(join.add_labels([(event_id, ts, 1)], [event_id]))
        else:
            out.append(join.expire_labels())
    return out


@settings(max_examples=300, deadline=None)
@given(before=_OPS, during=_OPS, after=_OPS, bound=st.integers(1, 4))
def test_a_rolled_back_batch_leaves_the_join_exactly_as_it_was(
    before: list[tuple[str, str, float]],
    during: list[tuple[str, str, float]],
    after: list[tuple[str, str, float]],
    bound: int,
) -> None:
    """A failed batch is undone: order included, so what follows is as if it never came."""
    join, untouched = LabelJoin(60, bound), LabelJoin(60, bound)
    _apply(join, before)
    _apply(untouched, before)
    join.begin()
    _apply(join, during)
    join.rollback()
    assert join.to_state() == untouched.to_state()
    assert _apply(join, after) == _apply(untouched, after)
    assert join.to_state() == untouched.to_state()


@settings(max_examples=300, deadline=None)
@given(ops=_OPS, cut=st.integers(0, 40), bound=st.integers(1, 4))
def test_a_committed_batch_is_as_if_there_were_no_transaction(
    ops: list[tuple[str, str, float]], cut: int, bound: int
) -> None:
    join, plain = LabelJoin(60, bound), LabelJoin(60, bound)
    join.begin()
    assert _apply(join, ops[:cut]) == _apply(plain, ops[:cut])
    assert (join.waiting, join.held) == (plain.waiting, plain.held)  # hidden ones not counted
    join.commit()
    assert join.to_state() == plain.to_state()
    join.begin()
    assert _apply(join, ops[cut:]) == _apply(plain, ops[cut:])
    assert (join.waiting, join.held) == (plain.waiting, plain.held)
    join.commit()
    assert join.to_state() == plain.to_state()
