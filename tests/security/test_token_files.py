"""A Kubeflow target's token file (issue 19, row 2): read in a thread, a regular file
of bounded size only. A FIFO named as ``token_file`` used to block the event loop:
``/healthz``, the stream and the relay stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from driftline.schemas.monitors import KubeflowTarget
from driftline.store import DeliveryRow
from driftline.triggers.kubeflow import TOKEN_FILE_MAX_BYTES, KubeflowSender


def send_with(token_file: Path) -> tuple[bool, int, str | None]:
    """Sends a delivery whose target reads ``token_file`` while a ticker runs on the
    loop; whether it came back, how often the ticker ran, the delivery's error."""
    target = KubeflowTarget(
        type="kubeflow", endpoint="http://127.0.0.1:9", pipeline_id="p", token_file=token_file
    )
    delivery = DeliveryRow(
        id=1,
        trigger_id="trg_1",
        model_id="m",
        target_type="kubeflow",
        target_url=target.key,
        payload=json.dumps({}),
        attempts=0,
        target=None,
        tenant=None,
    )
    result: dict[str, object] = {}

    async def run() -> None:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        async with aiohttp.ClientSession() as session:
            sent = await KubeflowSender(session).send(target, delivery, datetime.now(UTC))
        await asyncio.sleep(0.2)
        ticker.cancel()
        result.update(ticks=ticks, error=sent.error)

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # blocked opening the FIFO: give it a writer to let it go
        with contextlib.suppress(OSError):
            os.close(os.open(token_file, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        return False, 0, None
    return True, int(result["ticks"]), result["error"]  # type: ignore[call-overload,return-value]


def test_a_fifo_as_token_file_fails_the_delivery_and_blocks_nothing(tmp_path: Path) -> None:
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    returned, ticks, error = send_with(fifo)
    assert returned, "the send blocked on the FIFO"
    assert ticks >= 10
    assert error is not None
    assert "not a regular file" in error


def test_a_huge_token_file_is_refused_unread(tmp_path: Path) -> None:
    huge = tmp_path / "token"
    with huge.open("wb") as out:
        out.truncate(TOKEN_FILE_MAX_BYTES * 1000)  # sparse: 64 MB that cost nothing
    returned, _, error = send_with(huge)
    assert returned
    assert error is not None
    assert "larger than" in error
