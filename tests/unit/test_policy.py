from datetime import UTC, datetime, timedelta

import pytest

from driftline.schemas.monitors import PolicySpec, SeveritySpec
from driftline.schemas.reports import DriftReport
from driftline.stream.processing import MonitorState
from driftline.triggers.policy import EpisodePolicy, trigger_id
from tests.unit.helpers import make_monitor

T = datetime(2024, 1, 1, tzinfo=UTC)
PANE = timedelta(minutes=1)


def report(drifted: bool, sufficient: bool = True, end: datetime = T) -> DriftReport:
    return DriftReport(
        model_id="m",
        model_version=None,
        reference_version=1,
        window_start=end - PANE,
        window_end=end,
        n=10,
        sufficient=sufficient,
        drifted=drifted,
        drifted_features=[],
        features=[],
    )


def fires(policy: EpisodePolicy, verdicts: str, start: int = 0) -> str:
    """``D`` drifted, ``c`` clean, ``s`` too small, a pane apart: ``F`` fired, ``S`` suppressed."""
    out = ""
    for i, verdict in enumerate(verdicts):
        decision = policy.observe(report(verdict == "D", verdict != "s", T + (start + i) * PANE))
        out += "." if decision is None else decision.status[0].upper()
    return out


def test_consecutive_windows_open_one_episode() -> None:
    policy = EpisodePolicy(PolicySpec(consecutive_windows=2, clean_windows_to_close=2))
    assert fires(policy, "DcDDDDDcDDcc" + "DD") == "...F........" + ".F"


def test_small_windows_change_nothing() -> None:
    policy = EpisodePolicy(PolicySpec(consecutive_windows=2, clean_windows_to_close=1))
    assert fires(policy, "DsDsss" + "c" + "DD") == "..F..." + "." + ".F"


def test_an_episode_inside_the_cooldown_is_suppressed_then_fires_if_it_outlasts_it() -> None:
    policy = EpisodePolicy(PolicySpec(clean_windows_to_close=1, cooldown="10m"))
    # Fired at pane 0; a new episode at pane 3 is inside the 10-minute cooldown.
    assert fires(policy, "DcDDD") == "F.S.."
    suppressed_episode = policy.episode_id
    # Still drifting at pane 10: the cooldown is over, the same episode fires (once).
    assert fires(policy, "DDDDDDD", start=5) == ".....F."
    assert policy.episode_id == suppressed_episode
    # Closed, and reopened well after: fires at once.
    assert fires(policy, "c" + "D", start=40) == ".F"


def test_a_suppressed_episode_that_ends_inside_the_cooldown_never_fires() -> None:
    policy = EpisodePolicy(PolicySpec(clean_windows_to_close=1, cooldown="1h"))
    assert fires(policy, "DcDcDcDc") == "F.S.S.S."


def test_episode_ids_name_the_opening_window() -> None:
    policy = EpisodePolicy(PolicySpec(consecutive_windows=2))
    decisions = [policy.observe(report(True, end=T + i * PANE)) for i in range(3)]
    assert decisions[0] is None
    assert decisions[1] is not None
    assert decisions[1].episode_id == trigger_id("m", T + PANE)
    assert decisions[1].episode_started_at == T + PANE
    assert decisions[2] is None


def test_state_round_trip() -> None:
    policy = EpisodePolicy(PolicySpec(consecutive_windows=3, cooldown="1h"))
    fires(policy, "DDDcccDD")
    restored = EpisodePolicy(PolicySpec(consecutive_windows=3, cooldown="1h"))
    restored.restore(policy.to_state())
    assert restored == policy
    assert fires(restored, "D", start=8) == "S"


def test_min_drifted_share_and_severity_levels() -> None:
    spec = PolicySpec(
        min_drifted_share=0.2,
        severities=[
            SeveritySpec(name="page", min_drifted_features=3, min_score_ratio=2.0),
            SeveritySpec(name="ticket"),
        ],
    )
    assert not spec.window_drifted(1, 10)
    assert spec.window_drifted(2, 10)
    assert spec.severity(3, 10, 2.5) == "page"
    assert spec.severity(3, 10, 1.5) == "ticket"  # every condition must hold
    assert spec.severity(2, 10, 9.0) == "ticket"
    assert PolicySpec().severity(1, 10, 1.2) == "warning"
    assert PolicySpec().severity(5, 10, 1.2) == "critical"
    assert PolicySpec().severity(1, 10, 3.5) == "critical"
    with pytest.raises(ValueError, match="at least 1 item"):
        PolicySpec(severities=[])


def test_the_payload_names_episode_severity_reference_and_ranked_features() -> None:
    from tests.unit.test_store import NOW, drifting_results

    _, (trigger,) = drifting_results()
    data = trigger.data
    assert data.status == "fired"
    assert data.source == "drift"
    assert data.episode_id == data.trigger_id  # it fired on the window that opened it
    assert data.episode_started_at == data.window_end
    assert data.severity in ("warning", "critical")
    monitor = make_monitor(panes=1, min_events=50)
    assert data.reference is not None
    assert data.reference.version == 1
    assert data.reference.fingerprint == monitor.fingerprint
    ratios = [f.score / f.threshold for f in data.drifted_features]
    assert ratios == sorted(ratios, reverse=True)
    assert min(ratios) > 1
    assert trigger.timestamp == NOW
    assert MonitorState(monitor).reference == data.reference
