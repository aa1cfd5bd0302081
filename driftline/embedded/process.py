"""A ``driftline worker`` in its own process, as the demo and the integration tests run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from driftline.embedded.broker import free_port, stop_process


class WorkerProcess:
    """Start ``python -m driftline worker`` with ``settings`` (DRIFTLINE_* without the prefix).

    Other DRIFTLINE_* variables of this process are not inherited, so the worker
    sees exactly what it is given. Output goes to ``log_path``.
    """

    def __init__(
        self, settings: dict[str, str], log_path: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.web_port = int(settings.get("WEB_PORT") or free_port())
        self.settings = {**settings, "WEB_PORT": str(self.web_port)}
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def start(self, ready_within_s: float = 60.0) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
        env.update({f"DRIFTLINE_{key}": value for key, value in self.settings.items()})
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "driftline", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_healthy(ready_within_s)
        return self

    def _wait_healthy(self, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise RuntimeError(
                    f"the worker exited with code {self.returncode}; log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.api}/healthz", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the worker was not healthy within {within_s}s; log:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, within_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``within_s``; returns the exit code."""
        return None if self._process is None else stop_process(self._process, within_s)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (the crash tests use this)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
