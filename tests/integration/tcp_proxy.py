"""A TCP proxy that can cut a service off (drop every connection, refuse new ones), and
terminate TLS in front of it (a broker reached only through TLS)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from types import TracebackType


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` and ``restore()`` the link."""

    def __init__(
        self, target_host: str, target_port: int, tls: ssl.SSLContext | None = None
    ) -> None:
        self.target = (target_host, target_port)
        self._tls = tls
        self.port = 0
        self._down = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self._tls), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_down(True), self._loop).result(10)

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_down(False), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            await self._set_down(True)
            if self._server is not None:
                self._server.close()
            # Connections still open (a TLS handshake that failed is closing): let them end.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await asyncio.sleep(0.2)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _set_down(self, down: bool) -> None:
        self._down = down
        if down:
            for writer in list(self._writers):
                writer.close()
            self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.close()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, target_writer))
        await asyncio.gather(self._pipe(reader, target_writer), self._pipe(target_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
