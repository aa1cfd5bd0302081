"""A TCP proxy that can cut a service off (drop every connection, refuse new ones), and
terminate TLS in front of it (a broker reached only through TLS)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from types import TracebackType
from typing import Self


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` and ``restore()`` the link.

    It accepts on a socket of its own rather than through ``asyncio.Server``: in Python
    3.11 a connection accepted just before the server closes makes a transport that
    fails half-built and is collected unclosed (an unraisable warning in some later test).
    """

    def __init__(
        self, target_host: str, target_port: int, tls: ssl.SSLContext | None = None
    ) -> None:
        self.target = (target_host, target_port)
        self._tls = tls
        self._down = False
        self._writers: set[asyncio.StreamWriter] = set()
        # Every connection, to end at stop: its socket, and its transports (a closed one
        # may still wait for its buffer, a TLS handshake under way has no writer yet).
        self._sockets: list[socket.socket] = []
        self._seen: list[asyncio.BaseTransport] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._begin(), self._loop).result(10)
        return self

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_down(True), self._loop).result(10)

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_down(False), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            await self._set_down(True)
            self._loop.remove_reader(self._listener)
            self._listener.close()
            self._end_all()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if others:
                _, pending = await asyncio.wait(others, timeout=2)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            self._end_all()  # connections to the target made meanwhile
            await asyncio.sleep(0.1)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _end_all(self) -> None:
        for transport in self._seen:
            transport.abort()  # type: ignore[attr-defined]
        for connection in self._sockets:
            connection.close()

    async def _set_down(self, down: bool) -> None:
        self._down = down
        if down:
            for writer in list(self._writers):
                writer.close()
            self._writers.clear()

    async def _begin(self) -> None:
        # Accepted in the loop's own callback, each socket is known at once (a task
        # awaiting sock_accept, cancelled at stop, could lose one accepted meanwhile).
        self._loop.add_reader(self._listener, self._take)

    def _take(self) -> None:
        try:
            connection, _ = self._listener.accept()
        except BlockingIOError:
            return
        self._sockets.append(connection)
        task = self._loop.create_task(self._connected(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connected(self, connection: socket.socket) -> None:
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader, self._accept)
        try:  # the TLS handshake, if any, is made here (the server's side)
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: protocol, connection, ssl=self._tls
            )
        except (ssl.SSLError, ConnectionError, OSError):
            connection.close()
            return
        self._seen.append(transport)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = await self._open(writer)
        if target is not None:
            target_reader, target_writer = target
            await asyncio.gather(
                self._pipe(reader, target_writer), self._pipe(target_reader, writer)
            )

    async def _open(
        self, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The connection to the target of a new client's; None (the client's
        connection closed) when the proxy is down or the target cannot be reached."""
        if self._down:
            writer.close()
            return None
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except (ConnectionError, OSError):
            writer.close()
            return None
        self._seen.append(target_writer.transport)
        if self._down:  # cut meanwhile
            writer.close()
            target_writer.close()
            return None
        self._writers.update((writer, target_writer))
        return target_reader, target_writer

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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
