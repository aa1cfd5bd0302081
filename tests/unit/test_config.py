from pathlib import Path

import pytest
import yaml

from driftline.exceptions import ConfigError
from driftline.schemas.monitors import load_monitors
from driftline.settings import load_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def monitor(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "model_id": "m",
        "reference": {"path": "ref.csv"},
        "window": {"duration": "5m", "panes": 5},
        "targets": [{"url": "http://127.0.0.1:9/hook", "secret": SECRET}],
    }
    return {**base, **overrides}


def write(tmp_path: Path, body: object) -> Path:
    path = tmp_path / "monitors.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_valid_config_resolves_paths_and_durations(tmp_path: Path) -> None:
    config = load_monitors(write(tmp_path, {"models": [monitor()]}))
    (spec,) = config.models
    assert spec.reference.path == tmp_path / "ref.csv"
    assert spec.window.duration == 300.0
    assert spec.window.pane_seconds == 60.0
    assert spec.thresholds.metric == "psi"
    assert spec.thresholds.value == 0.2
    assert spec.targets[0].signing_secrets == [SECRET]


def test_secret_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    target = {"url": "http://127.0.0.1:9/hook", "secret_env": "HOOK_SECRET"}
    config = load_monitors(write(tmp_path, {"models": [monitor(targets=[target])]}))
    assert config.models[0].targets[0].signing_secrets == [SECRET]
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"window": {"duration": "five minutes"}}, "models[0].window.duration", "not a duration"),
        ({"window": {"duration": "5s", "panes": 10}}, "models[0].window", "at least one second"),
        ({"reference": {}}, "models[0].reference", "exactly one of 'path'"),
        ({"thresholds": {"metrc": "psi"}}, "models[0].thresholds.metrc", "Extra inputs"),
        ({"thresholds": {"metric": "kl"}}, "models[0].thresholds.metric", "'psi' or 'js'"),
        (
            {"features": [{"name": "a", "kind": "numeric"}, {"name": "a", "kind": "numeric"}]},
            "models[0].features",
            "repeated: ['a']",
        ),
        (
            {"targets": [{"url": "http://x/", "secret_env": "DRIFTLINE_TEST_UNSET_VAR"}]},
            "models[0].targets[0]",
            "DRIFTLINE_TEST_UNSET_VAR is not set",
        ),
        (
            {"targets": [{"url": "http://x/", "secret": "whsec_***"}]},
            "models[0].targets[0]",
            "not a valid whsec_",
        ),
        ({"targets": [{"url": "not a url", "secret": SECRET}]}, "models[0].targets[0].url", "URL"),
    ],
)
def test_errors_name_the_field(
    tmp_path: Path, change: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_monitors(write(tmp_path, {"models": [monitor(**change)]}))
    assert f"{field}:" in str(caught.value)
    assert message in str(caught.value)
    assert str(tmp_path / "monitors.yaml") in str(caught.value)


def test_duplicate_models_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models: .*repeated: \['m'\]"):
        load_monitors(write(tmp_path, {"models": [monitor(), monitor()]}))
    with pytest.raises(ConfigError, match="not found; set DRIFTLINE_MONITORS_PATH"):
        load_monitors(tmp_path / "absent.yaml")


def test_settings_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_WEB_PORT", "seventy")
    with pytest.raises(ConfigError, match="DRIFTLINE_WEB_PORT"):
        load_settings()
    monkeypatch.setenv("DRIFTLINE_WEB_PORT", "7000")
    monkeypatch.setenv("DRIFTLINE_TOPIC_PREFIX", "bad prefix!")
    with pytest.raises(ConfigError, match="DRIFTLINE_TOPIC_PREFIX"):
        load_settings()


def test_the_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_WEBHOOK_SECRET", SECRET)
    example = Path(__file__).parents[2] / "examples" / "monitors.yaml"
    (spec,) = load_monitors(example).models
    assert spec.model_id == "fraud-detector"
    assert spec.window.pane_seconds == 60.0
    assert spec.window.allowed_lateness == 30.0
    assert [f.name for f in spec.features or []] == [
        "amount",
        "country",
        "is_returning",
        "tenure_days",
        "score",
    ]
    assert spec.thresholds.mode == "calibrated"
    assert spec.labels is not None
    assert (spec.labels.horizon, spec.labels.positive_class) == (30 * 86400.0, "fraud")
    assert spec.policy.performance is not None
    assert spec.thresholds.correction == "bonferroni"
    assert spec.segments is not None
    assert spec.segments.values == ["eu", "us"]
    assert spec.policy.consecutive_windows == 2


def test_snapshot_cadence_needs_a_time_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().snapshot_every_s == 1.0  # the default: by time
    monkeypatch.setenv("DRIFTLINE_SNAPSHOT_EVERY_EVENTS", "1000")
    monkeypatch.setenv("DRIFTLINE_SNAPSHOT_EVERY_S", "0")
    with pytest.raises(ConfigError, match="DRIFTLINE_SNAPSHOT_EVERY_S must be > 0 when"):
        load_settings()
    monkeypatch.setenv("DRIFTLINE_SNAPSHOT_EVERY_S", "2")
    assert load_settings().snapshot_every_events == 1000


def test_target_types_and_their_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = "whsec_" + "B" * 32
    monkeypatch.setenv("HOOK_SECRETS", f"{SECRET} {other}")
    targets = [
        {"url": "http://127.0.0.1:9/hook", "secret_env": "HOOK_SECRETS"},
        {"type": "webhook", "url": "http://127.0.0.1:9/b", "secret": [other, SECRET]},
        {"type": "kafka"},
        {"type": "kafka", "topic": "ml.retrain", "name": "bus"},
        {"type": "kubeflow", "endpoint": "http://kfp:8888", "pipeline_name": "retrain"},
    ]
    path = write(tmp_path, {"models": [monitor(targets=targets)]})
    hook, rotated, kafka, named, kfp = load_monitors(path, topic_prefix="prod").models[0].targets
    assert hook.type == "webhook"
    assert hook.signing_secrets == [SECRET, other]
    assert rotated.type == "webhook"
    assert rotated.signing_secrets == [other, SECRET]
    assert kafka.type == "kafka"
    assert (kafka.topic, kafka.key, kafka.label) == (
        "prod.retraining",
        "kafka:prod.retraining",
        "prod.retraining",
    )
    assert (named.key, named.label) == ("kafka:ml.retrain", "bus")
    assert kfp.type == "kubeflow"
    assert kfp.key == "http://kfp:8888/apis/v2beta1/runs#retrain"
    assert kfp.label == "kfp"


@pytest.mark.parametrize(
    ("target", "field", "message"),
    [
        ({"type": "kubeflow", "endpoint": "http://kfp"}, "models[0].targets[0]", "pipeline_id"),
        ({"type": "kafka", "topic": "bad topic"}, "models[0].targets[0].topic", "pattern"),
        ({"type": "sms", "to": "+1"}, "models[0].targets[0]", "webhook (the default), kubeflow"),
        ({"url": "http://x/", "secret": []}, "models[0].targets[0]", "at least one secret"),
        ({"url": "http://x/", "timeout_s": 86400}, "models[0].targets[0].timeout_s", "3600"),
        (
            {"url": "http://x/", "timeout_s": float("inf")},
            "models[0].targets[0].timeout_s",
            "finite",
        ),
        ({"type": "kafka", "max_attempts": 10**6}, "models[0].targets[0].max_attempts", "1000"),
    ],
)
def test_target_errors_name_the_field(
    tmp_path: Path, target: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_monitors(write(tmp_path, {"models": [monitor(targets=[target])]}))
    assert f"{field}:" in str(caught.value)
    assert message in str(caught.value)


CLASSIFY = {"task": "classification"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"policy": {"performance": {"metric": "f1"}}},
            "models[0]: policy.performance needs labels",
        ),
        (
            {"labels": CLASSIFY, "policy": {"performance": {"metric": "mae"}}},
            "policy.performance.metric mae is not a classification metric",
        ),
        (
            {"labels": CLASSIFY, "policy": {"performance": {"metric": "log_loss"}}},
            "log_loss needs labels.prediction: probability",
        ),
        (
            {"labels": {"task": "regression", "classes": ["a", "b"]}},
            "models[0].labels: classes and prediction: probability are for classification",
        ),
        (
            {"labels": {**CLASSIFY, "prediction": "probability", "classes": ["a", "b", "c"]}},
            "models[0].labels: prediction: probability needs exactly 2 classes",
        ),
        ({"labels": {**CLASSIFY, "horizon": "soon"}}, "models[0].labels.horizon: 'soon'"),
        (
            {"labels": CLASSIFY, "policy": {"performance": {"metric": "f1", "tolerance": -1}}},
            "models[0].policy.performance.tolerance",
        ),
    ],
)
def test_labels_errors_name_the_field(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_monitors(write(tmp_path, {"models": [monitor(**overrides)]}))
    assert message in str(caught.value)
