"""A tenant's detector parameters (issue 19, row 3): whatever a monitor's
``labels.concept.params`` holds is either refused naming the field, or builds a river
detector that runs. ``{"bogus": 1}`` used to be accepted, then crash the worker at
every start."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from driftline.detectors.concept import DEFAULTS, ConceptDriftDetector
from driftline.schemas.monitors import AdwinParams, ConceptSpec, PageHinkleyParams

NAMES = [
    *("delta", "clock", "max_buckets", "min_window_length", "grace_period"),
    *("min_instances", "threshold", "alpha", "mode", "bogus"),
]
VALUES = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["up", "both", "0.01", "1e-5", "nan"]),
)


@pytest.mark.parametrize(
    ("detector", "params", "field"),
    [
        ("adwin", {"bogus": 1}, "params.bogus"),
        ("adwin", {"delta": 0}, "params.delta"),
        ("adwin", {"delta": "nan"}, "params.delta"),
        ("adwin", {"clock": 0}, "params.clock"),
        ("adwin", {"max_buckets": 10**9}, "params.max_buckets"),
        ("page_hinkley", {"threshold": -1}, "params.threshold"),
        ("page_hinkley", {"alpha": 2}, "params.alpha"),
        ("page_hinkley", {"clock": 1}, "params.clock"),
    ],
)
def test_parameters_river_would_refuse_are_refused_naming_the_field(
    detector: str, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        ConceptSpec(detector=detector, params=params)  # type: ignore[arg-type]
    assert field in str(refused.value)


@settings(max_examples=300, deadline=None)
@given(
    detector=st.sampled_from(["adwin", "page_hinkley"]),
    params=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=4),
)
def test_accepted_parameters_build_a_detector_that_runs(
    detector: str, params: dict[str, Any]
) -> None:
    try:
        spec = ConceptSpec(detector=detector, params=params)  # type: ignore[arg-type]
    except ValidationError as refused:
        said = str(refused)
        spec = None
    if spec is None:
        assert "params" in said
        return
    built = ConceptDriftDetector(spec.detector, spec.river_params)
    built.update([0.0, 1.0] * 50)
    ConceptDriftDetector.from_state(built.to_state()).update([1.0] * 10)


def test_a_monitor_stored_before_the_check_answers_409_not_500() -> None:
    """A monitor stored with parameters refused today does not run (the registry logs
    and skips it); building or activating its references says why."""
    from types import SimpleNamespace

    from driftline.stream.web import Problem, _stored_labels

    labels = {"task": "classification", "concept": {"params": {"bogus": 1}}}
    stored = SimpleNamespace(spec={"labels": labels})
    with pytest.raises(Problem) as answered:
        _stored_labels(stored)
    assert answered.value.status == 409
    assert answered.value.detail.startswith("labels.concept: params.bogus: ")


def test_the_documented_defaults_are_the_detectors_own() -> None:
    """The parameter models' defaults (in the OpenAPI schema) are those the detector
    uses when a parameter is not given."""
    for kind, model in (("adwin", AdwinParams), ("page_hinkley", PageHinkleyParams)):
        documented = model().model_dump()
        assert {k: documented[k] for k in DEFAULTS[kind]} == DEFAULTS[kind]
