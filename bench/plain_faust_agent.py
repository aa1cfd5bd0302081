"""The baseline of bench/throughput.py: a plain Faust agent that decodes each event one
by one with ``json.loads`` (what a team would write first), counting rows.

    python bench/plain_faust_agent.py BOOTSTRAP TOPIC ROWS OUT [--take N]

Writes one JSON object to OUT: rows, seconds from the first message to the last row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import faust


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("rows", type=int)
    parser.add_argument("out")
    parser.add_argument("--take", type=int, default=0, help="stream.take(N) batches")
    args = parser.parse_args()
    app = faust.App(
        f"plain-{args.topic}-{os.getpid()}",
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        datadir=f"/tmp/plain-faust-{os.getpid()}",
    )
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    seen = {"rows": 0, "first": 0.0}

    def count(value: bytes) -> None:
        body: dict[str, Any] = json.loads(value)
        if not seen["first"]:
            seen["first"] = time.perf_counter()
        seen["rows"] += len(body["events"]) if "events" in body else 1
        if seen["rows"] >= args.rows:
            elapsed = time.perf_counter() - seen["first"]
            with open(args.out, "w") as out:
                json.dump({"rows": seen["rows"], "seconds": elapsed}, out)
            os._exit(0)

    if args.take:

        @app.agent(topic)
        async def batched(stream: Any) -> None:
            async for values in stream.take(args.take, within=0.05):
                for value in values:
                    count(value)

    else:

        @app.agent(topic)
        async def per_event(stream: Any) -> None:
            async for value in stream:
                count(value)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    asyncio.set_event_loop(asyncio.new_event_loop())
    app.main()


if __name__ == "__main__":
    main()
