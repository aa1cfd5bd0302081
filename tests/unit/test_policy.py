from datetime import UTC, datetime

from driftline.schemas.monitors import PolicySpec
from driftline.schemas.reports import DriftReport
from driftline.triggers.policy import EpisodePolicy

T = datetime(2024, 1, 1, tzinfo=UTC)


def report(drifted: bool, sufficient: bool = True) -> DriftReport:
    return DriftReport(
        model_id="m",
        model_version=None,
        reference_version=1,
        window_start=T,
        window_end=T,
        n=10,
        sufficient=sufficient,
        drifted=drifted,
        drifted_features=[],
        features=[],
    )


def fires(policy: EpisodePolicy, verdicts: str) -> str:
    """``D`` drifted, ``c`` clean, ``s`` too small; returns ``F`` where it fired."""
    out = ""
    for verdict in verdicts:
        fired = policy.observe(report(verdict == "D", verdict != "s"))
        out += "F" if fired else "."
    return out


def test_consecutive_windows_open_one_episode() -> None:
    policy = EpisodePolicy(PolicySpec(consecutive_windows=2, clean_windows_to_close=2))
    assert fires(policy, "DcDDDDDcDDcc" + "DD") == "...F........" + ".F"


def test_small_windows_change_nothing() -> None:
    policy = EpisodePolicy(PolicySpec(consecutive_windows=2, clean_windows_to_close=1))
    assert fires(policy, "DsDsss" + "c" + "DD") == "..F..." + "." + ".F"


def test_state_round_trip() -> None:
    policy = EpisodePolicy(PolicySpec(consecutive_windows=3))
    fires(policy, "DD")
    restored = EpisodePolicy(PolicySpec(consecutive_windows=3))
    restored.restore(policy.to_state())
    assert fires(restored, "D") == "F"
