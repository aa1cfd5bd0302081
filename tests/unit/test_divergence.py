"""PSI and JS against direct numpy/scipy computations on the same bins."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from driftline.detectors.divergence import (
    DEFAULT_EPS,
    jensen_shannon_divergence,
    population_stability_index,
)

counts = st.lists(st.integers(0, 10_000), min_size=2, max_size=40).filter(lambda c: sum(c) > 0)


def pairs() -> st.SearchStrategy[tuple[list[int], list[int]]]:
    return st.integers(2, 40).flatmap(
        lambda k: st.tuples(
            st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(lambda c: sum(c) > 0),
            st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(lambda c: sum(c) > 0),
        )
    )


def floored(c: list[int]) -> np.ndarray:
    p = np.asarray(c, float) / sum(c)
    p = np.where(p < DEFAULT_EPS, DEFAULT_EPS, p)
    return p / p.sum()


@given(pairs())
@settings(max_examples=300)
def test_psi_matches_scipy_kl_sum(pair: tuple[list[int], list[int]]) -> None:
    current, reference = pair
    p, q = floored(current), floored(reference)
    # PSI is the symmetrised KL divergence: KL(p||q) + KL(q||p).
    expected = rel_entr(p, q).sum() + rel_entr(q, p).sum()
    assert population_stability_index(current, reference) == pytest.approx(expected, abs=1e-9)


@given(pairs())
@settings(max_examples=300)
def test_js_matches_scipy(pair: tuple[list[int], list[int]]) -> None:
    current, reference = pair
    expected = jensenshannon(current, reference, base=2) ** 2
    assert jensen_shannon_divergence(current, reference) == pytest.approx(expected, abs=1e-9)


@given(pairs())
def test_invariants(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    assert population_stability_index(a, a) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    assert population_stability_index(a, b) >= 0.0
    assert population_stability_index(a, b) == pytest.approx(population_stability_index(b, a))
    js = jensen_shannon_divergence(a, b)
    assert 0.0 <= js <= 1.0
    assert js == pytest.approx(jensen_shannon_divergence(b, a), abs=1e-12)


def test_known_values() -> None:
    # Hand-computed: (0.8-0.5)ln(1.6) + (0.2-0.5)ln(0.4)
    assert population_stability_index([80, 20], [50, 50]) == pytest.approx(
        0.3 * np.log(1.6) - 0.3 * np.log(0.4), abs=1e-12
    )
    assert jensen_shannon_divergence([1, 0], [0, 1]) == 1.0
    # Disjoint support with floor: large but finite.
    assert np.isfinite(population_stability_index([0, 100], [100, 0]))
