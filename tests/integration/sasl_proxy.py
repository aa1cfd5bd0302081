"""A SASL-terminating proxy: a Kafka listener that authenticates its clients (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512, as a Kafka broker does: SaslHandshake v1, then
SaslAuthenticate v0/v1) before it forwards their bytes to the embedded broker.

The embedded broker (tansu 0.6) authenticates with ``--authentication``, but only SCRAM,
and its users are created through AlterUserScramCredentials, which itself needs an
authenticated connection: on the memory storage it runs on there is no first user. So
the tests put this proxy in front of it, as the TLS tests put a TLS-terminating one.
"""

from __future__ import annotations

import asyncio
import ssl
import struct

from scramp import ScramException, ScramMechanism

from tests.integration.tcp_proxy import TcpProxy

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class SaslProxy(TcpProxy):
    """Forwards 127.0.0.1:<port> to ``target`` for clients that authenticate as one of
    ``users`` (name: password); ``failures`` counts the refused attempts."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        users: dict[str, str],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(target_host, target_port, tls=tls)
        self._scram = {name: ScramMechanism(name) for name in MECHANISMS[1:]}
        self._stored = {
            (name, user): mechanism.make_auth_info(password, iteration_count=4096)
            for name, mechanism in self._scram.items()
            for user, password in users.items()
        }
        self._users = dict(users)
        self.failures = 0
        self.authenticated: list[tuple[str, str]] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = await self._open(writer)
        if target is None:
            return
        target_reader, target_writer = target
        try:
            passed = await self._authenticate(reader, writer, target_reader, target_writer)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            passed = False
        if not passed:
            writer.close()
            target_writer.close()
            return
        await asyncio.gather(self._pipe(reader, target_writer), self._pipe(target_reader, writer))

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target_reader: asyncio.StreamReader,
        target_writer: asyncio.StreamWriter,
    ) -> bool:
        """Runs the SASL exchange; True once the client is who it says it is."""
        mechanism: str | None = None
        scram = None
        user = ""
        while True:
            frame = await _read_frame(reader)
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            (client_id_length,) = struct.unpack(">h", frame[8:10])
            body = frame[10 + max(client_id_length, 0) :]
            if api_key == API_VERSIONS:  # the broker's own answer
                target_writer.write(struct.pack(">i", len(frame)) + frame)
                await target_writer.drain()
                answer = await _read_frame(target_reader)
                writer.write(struct.pack(">i", len(answer)) + answer)
            elif api_key == SASL_HANDSHAKE and version >= 1 and mechanism is None:
                (length,) = struct.unpack(">h", body[:2])
                asked = body[2 : 2 + length].decode()
                known = asked in MECHANISMS
                mechanism = asked if known else None
                error = 0 if known else UNSUPPORTED_SASL_MECHANISM
                listed = b"".join(_string(name) for name in MECHANISMS)
                _answer(writer, correlation, struct.pack(">hi", error, len(MECHANISMS)) + listed)
            elif api_key == SASL_AUTHENTICATE and mechanism is not None and version <= 1:
                (length,) = struct.unpack(">i", body[:4])
                token = body[4 : 4 + length]
                if mechanism == "PLAIN":
                    _, user, password = token.decode().split("\0")
                    if self._users.get(user) != password:
                        return await self._refuse(writer, correlation, version, mechanism)
                    self._authenticate_as(user, mechanism, writer, correlation, version, b"")
                    await writer.drain()
                    return True
                if scram is None:
                    scram = self._scram[mechanism].make_server(
                        lambda user, name=mechanism: self._stored[(name, user)]
                    )
                    first = token.decode()
                    user = dict(
                        part.split("=", 1) for part in first.split(",")[2:] if "=" in part
                    ).get("n", "")
                    try:
                        scram.set_client_first(first)
                    except (ScramException, KeyError):
                        return await self._refuse(writer, correlation, version, mechanism)
                    _authenticated(writer, correlation, version, scram.get_server_first().encode())
                else:
                    try:
                        scram.set_client_final(token.decode())
                    except ScramException:
                        return await self._refuse(writer, correlation, version, mechanism)
                    final = scram.get_server_final().encode()
                    self._authenticate_as(user, mechanism, writer, correlation, version, final)
                    await writer.drain()
                    return True
            else:  # a request before authentication: a SASL listener closes the connection
                return False
            await writer.drain()

    def _authenticate_as(
        self,
        user: str,
        mechanism: str,
        writer: asyncio.StreamWriter,
        correlation: int,
        version: int,
        token: bytes,
    ) -> None:
        self.authenticated.append((user, mechanism))
        _authenticated(writer, correlation, version, token)

    async def _refuse(
        self, writer: asyncio.StreamWriter, correlation: int, version: int, mechanism: str
    ) -> bool:
        self.failures += 1
        message = (
            "Authentication failed during authentication due to invalid credentials "
            f"with SASL mechanism {mechanism}"
        )
        body = struct.pack(">h", SASL_AUTHENTICATION_FAILED) + _string(message) + _bytes(b"")
        if version >= 1:
            body += struct.pack(">q", 0)
        _answer(writer, correlation, body)
        await writer.drain()
        return False


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def _bytes(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


def _answer(writer: asyncio.StreamWriter, correlation: int, body: bytes) -> None:
    frame = struct.pack(">i", correlation) + body
    writer.write(struct.pack(">i", len(frame)) + frame)


def _authenticated(
    writer: asyncio.StreamWriter, correlation: int, version: int, token: bytes
) -> None:
    body = struct.pack(">hh", 0, -1) + _bytes(token)  # no error, a null message
    if version >= 1:
        body += struct.pack(">q", 0)  # the session does not expire
    _answer(writer, correlation, body)
