"""A tenant's request bodies (issue 19, row 12): a JSON body past
DRIFTLINE_API_MAX_JSON_KB is refused with 413 as it arrives, by its declared length or
(chunked) by what has come, never read whole; a 200 MiB body used to be read into
memory (+500 MB) before a 400."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.integration.test_api import Api, running_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(kafka_bootstrap, tmp_path_factory.mktemp("limits"), "50", "200") as running:
        yield running


def answer(api: Api, path: str, headers: dict[str, str], send: bytes) -> tuple[int, dict]:
    """Sends ``headers`` and then only ``send`` of the body, and reads the answer."""
    url = urlparse(api.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as connection:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        connection.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + send)
        received = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            assert time.monotonic() < deadline, received
            data = connection.recv(65536)
            if not data:
                break
            received += data
    status = int(received.split(b" ", 2)[1])
    return status, json.loads(received.split(b"\r\n\r\n", 1)[1] or b"null")


def auth(api: Api) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.keys['a-write']}", "Content-Type": "application/json"}


@pytest.mark.parametrize("path", ["/v1/monitors", "/v1/alertmanager"])
def test_a_declared_length_past_the_limit_is_refused_before_the_body(api: Api, path: str) -> None:
    headers = {**auth(api), "Content-Length": str(200 * 2**20)}
    status, body = answer(api, path, headers, b'{"models": [')  # 12 bytes of 200 MiB
    assert status == 413
    assert "DRIFTLINE_API_MAX_JSON_KB" in body["detail"]


def test_a_chunked_body_past_the_limit_is_refused_as_it_arrives(api: Api) -> None:
    chunk = b"x" * 65536
    framed = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 17  # 1.06 MiB, no end
    headers = {**auth(api), "Transfer-Encoding": "chunked"}
    status, body = answer(api, "/v1/monitors", headers, framed)
    assert status == 413
    assert body["status"] == 413


def test_a_body_within_the_limit_is_read(api: Api, tmp_path: Path) -> None:
    status, _, body = api.call("POST", "/v1/monitors", "a-write", {"model_id": "x" * 2000})
    assert status == 400  # read and judged: an invalid spec, not a refused body
    assert "Body too large" not in json.dumps(body)
