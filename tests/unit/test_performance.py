"""Performance accumulators: exact under any split into panes, equal to direct formulas."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.performance import Classification, Regression

CLASSES = ["fraud", "legit", "review"]


def direct_f1(labels: list[str], predictions: list[str], c: str) -> float:
    tp = sum(1 for y, p in zip(labels, predictions, strict=True) if y == c and p == c)
    fp = sum(1 for y, p in zip(labels, predictions, strict=True) if y != c and p == c)
    fn = sum(1 for y, p in zip(labels, predictions, strict=True) if y == c and p != c)
    if tp + fp == 0 or tp + fn == 0:
        return math.nan
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


pairs = st.lists(
    st.tuples(
        st.sampled_from(CLASSES),
        st.sampled_from(CLASSES),
        st.floats(min_value=0.0, max_value=1.0),
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(pairs, st.integers(min_value=0, max_value=200))
def test_classification_is_exact_under_any_split(
    rows: list[tuple[str, str, float]], cut: int
) -> None:
    labels = np.array([r[0] for r in rows], dtype=object)
    predictions = np.array([r[1] for r in rows], dtype=object)
    p = np.array([r[2] for r in rows])
    whole = Classification.of(CLASSES, labels, predictions, p)
    cut = min(cut, len(rows))
    parts = Classification.of(CLASSES, labels[:cut], predictions[:cut], p[:cut]) + (
        Classification.of(CLASSES, labels[cut:], predictions[cut:], p[cut:])
    )
    assert np.array_equal(whole.confusion, parts.confusion)
    assert math.isclose(whole.log_loss_sum, parts.log_loss_sum, rel_tol=1e-9, abs_tol=1e-9)
    assert whole.accuracy == np.mean(labels == predictions)
    for c, values in whole.per_class().items():
        expected = direct_f1(list(labels), list(predictions), c)
        assert (math.isnan(values["f1"]) and math.isnan(expected)) or math.isclose(
            values["f1"], expected
        )
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    assert whole.log_loss is not None
    assert math.isclose(whole.log_loss, float(-np.log(clipped).mean()), rel_tol=1e-9)
    assert Classification.from_state(whole.to_state()).to_state() == whole.to_state()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=-1e6, max_value=1e6), st.floats(min_value=-1e6, max_value=1e6)
        ),
        min_size=1,
        max_size=200,
    ),
    st.integers(min_value=0, max_value=200),
)
def test_regression_is_exact_under_any_split(rows: list[tuple[float, float]], cut: int) -> None:
    y = np.array([r[0] for r in rows])
    yhat = np.array([r[1] for r in rows])
    whole = Regression.of(y, yhat)
    cut = min(cut, len(rows))
    parts = Regression.of(y[:cut], yhat[:cut]) + Regression.of(y[cut:], yhat[cut:])
    assert parts.n == whole.n
    assert math.isclose(parts.mae, whole.mae, rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(whole.mae, float(np.abs(yhat - y).mean()), rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(
        whole.rmse, float(np.sqrt(((yhat - y) ** 2).mean())), rel_tol=1e-9, abs_tol=1e-6
    )
    assert Regression.from_state(whole.to_state()) == whole


def test_unknown_classes_and_missing_values_are_left_out() -> None:
    c = Classification.of(
        CLASSES,
        np.array(["fraud", "other", "legit"], dtype=object),
        np.array(["fraud", "fraud", "weird"], dtype=object),
        np.array([0.9, 0.1, np.nan]),
    )
    assert c.n == 1
    assert c.scored == 1
    r = Regression.of(np.array([1.0, np.nan]), np.array([2.0, 3.0]))
    assert (r.n, r.mae) == (1, 1.0)
    assert math.isnan(Regression().mae)
    assert math.isnan(Classification.empty(CLASSES).accuracy)
    assert Classification.empty(CLASSES).log_loss is None
