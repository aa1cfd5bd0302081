"""Binning, moments and histograms: against numpy, merges, and state round-trips."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from driftline.detectors.binning import CategoricalBinning, NumericBinning, binning_from_state
from driftline.detectors.histogram import Histogram
from driftline.detectors.moments import Moments
from driftline.detectors.profile import FeatureProfile, ReferenceProfile
from driftline.schemas.monitors import FeatureSpec
from driftline.schemas.values import category_label

finite = st.floats(-1e6, 1e6, allow_nan=False)
values = arrays(np.float64, st.integers(0, 200), elements=st.one_of(finite, st.just(np.nan)))


def test_numeric_bins_match_numpy_digitize() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=5000)
    binning = NumericBinning.from_reference(reference, bins=10)
    assert binning.edges.size == 11
    np.testing.assert_allclose(binning.edges, np.quantile(reference, np.linspace(0, 1, 11)))
    current = np.concatenate([rng.normal(size=1000) * 1.5, [np.nan, np.inf, -np.inf]])
    got = binning.assign(current)
    inner = np.clip(np.digitize(current, binning.edges[1:-1]), 0, 9) + 2
    expected = np.where(
        current < binning.edges[0], 1, np.where(current > binning.edges[-1], 12, inner)
    )
    expected[np.isnan(current)] = 0
    np.testing.assert_array_equal(got, expected)
    # Reference quantile bins each hold about a tenth of the reference.
    counts = np.bincount(binning.assign(reference), minlength=binning.n_bins)
    assert counts[0] == counts[1] == counts[-1] == 0
    assert counts[2:-1].min() >= 499
    assert counts[2:-1].max() <= 501


def test_discrete_and_constant_numeric_features() -> None:
    binning = NumericBinning.from_reference(np.array([0.0] * 90 + [1.0] * 5 + [2.0] * 5), 10)
    assert binning.edges.tolist() == [0.0, 0.5, 1.5, 2.0]
    assert binning.assign(np.array([0.0, 1.0, 2.0, 3.0, -1.0])).tolist() == [2, 3, 4, 5, 1]
    # A shift between the discrete values is visible, bin by bin.
    reference = Histogram.observe(binning, np.array([0.0] * 90 + [1.0] * 5 + [2.0] * 5))
    assert reference.counts.tolist() == [0, 0, 90, 5, 5, 0]
    constant = NumericBinning.from_reference(np.full(10, 7.0), 10)
    assert constant.assign(np.array([6.0, 7.0, 8.0])).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="no finite values"):
        NumericBinning.from_reference(np.array([np.nan]), 10)


def test_categorical_bins_and_labels() -> None:
    binning = CategoricalBinning.from_reference(
        ["a"] * 5 + ["b"] * 3 + ["c"] * 1 + [None], max_categories=2
    )
    assert binning.categories == ("a", "b")
    assert binning.rare == ("c",)
    assert binning.labels() == ["missing", "a", "b", "other", "unseen"]
    assert binning.assign(["c", None, "b", "zz"]).tolist() == [3, 0, 2, 4]
    flags = CategoricalBinning.boolean()
    assert flags.assign(["true", "false", None, "maybe"]).tolist() == [2, 1, 0, 4]
    assert [category_label(v) for v in (False, 0, 1.0)] == ["false", "0", "1"]


def test_binning_state_round_trip() -> None:
    numeric = NumericBinning.from_reference(np.arange(50.0), 5)
    categorical = CategoricalBinning(("x", "y"))
    for binning in (numeric, categorical):
        restored = binning_from_state(binning.to_state())
        sample = np.array([1.0, 60.0]) if binning is numeric else ["y", "q"]
        assert restored.assign(sample).tolist() == binning.assign(sample).tolist()  # type: ignore[arg-type]


@given(values, values)
@settings(max_examples=200)
def test_moments_merge_equals_one_pass(a: np.ndarray, b: np.ndarray) -> None:
    merged = Moments.of(a) + Moments.of(b)
    union = np.concatenate([a, b])
    present = union[~np.isnan(union)]
    assert merged.count == present.size
    if present.size:
        scale = max(1.0, float(np.abs(present).max()))
        assert merged.mean == pytest.approx(present.mean(), abs=1e-9 * scale)
        assert merged.min == present.min()
        assert merged.max == present.max()
    if present.size > 1:
        assert merged.variance == pytest.approx(
            np.var(present, ddof=1), rel=1e-6, abs=1e-6 * scale**2
        )
    assert Moments.from_state(merged.to_state()) == merged


def test_moments_merge_is_associative() -> None:
    rng = np.random.default_rng(1)
    a, b, c = (Moments.of(rng.normal(size=n)) for n in (10, 20, 30))
    left, right = (a + b) + c, a + (b + c)
    assert left.count == right.count
    assert left.mean == pytest.approx(right.mean)
    assert left.m2 == pytest.approx(right.m2)


def test_histograms_add_up_and_profile_round_trips() -> None:
    rng = np.random.default_rng(2)
    columns = {
        "x": rng.normal(size=2000),
        "c": np.array(rng.choice(["u", "v", "w"], 2000), dtype=object),
    }
    specs = [FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="c", kind="categorical")]
    profile = ReferenceProfile.build(columns, specs)
    for feature in profile.features:
        column = columns[feature.name]
        halves = Histogram.observe(feature.binning, column[:700]) + Histogram.observe(
            feature.binning, column[700:]
        )
        whole = Histogram.observe(feature.binning, column)
        np.testing.assert_array_equal(halves.counts, whole.counts)
        assert feature.compare(whole) == (0.0, 0.0)
    restored = ReferenceProfile.from_state(profile.to_state())
    assert restored.fingerprint() == profile.fingerprint()
    assert FeatureProfile.from_state(profile.features[0].to_state()).name == "x"
    with pytest.raises(KeyError, match="no column"):
        ReferenceProfile.build({"x": columns["x"]}, specs)


edge_heavy = st.sampled_from([0.0, 1.0, 2.0, -1.0, np.inf, -np.inf, np.nan, 0.5, 3.0])


@given(
    st.lists(
        st.lists(st.one_of(finite, edge_heavy), min_size=0, max_size=60), min_size=3, max_size=3
    )
)
@settings(max_examples=200, deadline=None)
def test_batched_histograms_equal_the_per_value_path(rows: list[list[float]]) -> None:
    """The profile's sort-based histograms count exactly what assign() + bincount count."""
    rng = np.random.default_rng(0)
    references = {
        "continuous": rng.normal(size=500),
        "discrete": rng.integers(0, 3, 500).astype(float),  # edges at the values themselves
        "constant": np.full(50, 1.0),
    }
    specs = [FeatureSpec(name=name, kind="numeric", bins=5) for name in references]
    profile = ReferenceProfile.build(references, specs)
    n = min(len(r) for r in rows)
    columns = {
        name: np.asarray(r[:n], dtype=np.float64) for name, r in zip(references, rows, strict=True)
    }
    for feature, batched in zip(profile.features, profile.histograms(columns), strict=True):
        single = Histogram.observe(feature.binning, columns[feature.name])
        np.testing.assert_array_equal(batched.counts, single.counts)
        np.testing.assert_array_equal(batched.sketch, single.sketch)
        assert batched.moments.count == single.moments.count
        if single.moments.count:
            assert batched.moments.min == single.moments.min
            assert batched.moments.max == single.moments.max
