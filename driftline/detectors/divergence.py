"""Divergences between a window's bin counts and the reference's.

PSI uses probabilities floored at ``eps`` (an empty bin would make it infinite);
Jensen-Shannon needs no floor and uses the raw probabilities, in bits, so it is in [0, 1].
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Floor of a bin probability inside PSI (the value Evidently and most PSI tables use).
DEFAULT_EPS = 1e-4

FloatArray = npt.NDArray[np.float64]


def probabilities(counts: npt.ArrayLike) -> FloatArray:
    """Counts as probabilities; all zeros stays all zeros.

    >>> probabilities([1, 3]).tolist()
    [0.25, 0.75]
    """
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total > 0 else array


def floored_probabilities(counts: npt.ArrayLike, eps: float = DEFAULT_EPS) -> FloatArray:
    """Probabilities with every bin at least ``eps``, renormalised to sum to one.

    >>> floored_probabilities([0, 10], eps=0.01).round(4).tolist()
    [0.0099, 0.9901]
    """
    p = np.maximum(probabilities(counts), eps)
    return np.asarray(p / p.sum(), dtype=np.float64)


def population_stability_index(
    current: npt.ArrayLike, reference: npt.ArrayLike, eps: float = DEFAULT_EPS
) -> float:
    """PSI = sum((p - q) * ln(p / q)) over floored probabilities of two count vectors.

    Symmetric, zero for identical distributions; 0.1 is "some", 0.25 "major" shift
    by the classic rule of thumb, which ignores the sample size (see calibration).

    >>> population_stability_index([50, 50], [50, 50])
    0.0
    >>> round(population_stability_index([80, 20], [50, 50]), 4)
    0.4159
    """
    return float(psi_rows(np.atleast_2d(np.asarray(current, dtype=np.float64)), reference, eps)[0])


def jensen_shannon_divergence(current: npt.ArrayLike, reference: npt.ArrayLike) -> float:
    """Jensen-Shannon divergence in bits (base 2) of two count vectors, in [0, 1].

    This is the divergence, the square of SciPy's ``jensenshannon`` distance.

    >>> jensen_shannon_divergence([1, 0], [0, 1])
    1.0
    >>> jensen_shannon_divergence([3, 1], [3, 1])
    0.0
    """
    return float(js_rows(np.atleast_2d(np.asarray(current, dtype=np.float64)), reference)[0])


def psi_rows(current: FloatArray, reference: npt.ArrayLike, eps: float = DEFAULT_EPS) -> FloatArray:
    """PSI of each row of ``current`` (counts, one window per row) against ``reference``."""
    return psi_of(current, floored_probabilities(reference, eps), eps)


def js_rows(current: FloatArray, reference: npt.ArrayLike) -> FloatArray:
    """Jensen-Shannon divergence (bits) of each row of ``current`` against ``reference``."""
    return js_of(current, probabilities(reference))


def psi_of(
    current: FloatArray, floored_reference: FloatArray, eps: float = DEFAULT_EPS
) -> FloatArray:
    """PSI of each row of counts against floored reference probabilities (broadcast)."""
    p = np.maximum(_row_probabilities(current), eps)
    p /= p.sum(axis=-1, keepdims=True)
    q = floored_reference
    return np.asarray(np.sum((p - q) * np.log(p / q), axis=-1), dtype=np.float64)


def js_of(current: FloatArray, reference: FloatArray) -> FloatArray:
    """JS divergence (bits) of each row of counts against reference probabilities (broadcast)."""
    p = _row_probabilities(current)
    q = np.broadcast_to(reference, p.shape)
    m = 0.5 * (p + q)
    safe_m = np.where(m > 0, m, 1.0)
    kl_p = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0) / safe_m), 0.0).sum(axis=-1)
    kl_q = np.where(q > 0, q * np.log2(np.where(q > 0, q, 1.0) / safe_m), 0.0).sum(axis=-1)
    return np.asarray(np.maximum(0.0, 0.5 * (kl_p + kl_q)), dtype=np.float64)


def _row_probabilities(counts: FloatArray) -> FloatArray:
    totals = counts.sum(axis=-1, keepdims=True)
    out = np.zeros(counts.shape, dtype=np.float64)
    np.divide(counts, totals, out=out, where=totals > 0)
    return out
