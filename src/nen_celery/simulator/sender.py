"""The simulator's webhook sender: HTTP/1.1 POSTs over kept-alive asyncio connections (h11).

Why not httpx here: its async client cost ~1 ms of CPU per delivery (anyio streams, the pool's
locks, request and response models), a quarter of all the CPU of the lifecycle benchmark, where
the simulator stands in for a remote Nen and shares the machine with what is measured. This
sends the same request (h11 frames it, as under httpx) for ``http://`` callbacks; the
simulator keeps httpx for ``https://``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    import h11


class SendError(Exception):
    """The server closed the connection or answered something that is not HTTP/1.1."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection

    def close(self) -> None:
        self.writer.close()


class WebhookSender:
    """POSTs to ``http://`` URLs; idle connections are kept per host and port for reuse."""

    def __init__(self, timeout: float, max_idle: int) -> None:
        self.timeout = timeout
        self.max_idle = max(1, max_idle)
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    @staticmethod
    def handles(url: str) -> bool:
        return urlsplit(url).scheme == "http"

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """The answer's status code. Raises OSError, TimeoutError (after ``timeout``) or SendError;
        a kept-alive connection the server had closed is replaced once."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {parts.scheme}://{parts.hostname}")
        host, port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        request = [("Host", host_header), ("Content-Length", str(len(body))), *headers.items()]
        async with asyncio.timeout(self.timeout):
            reused = self._take(host, port)
            if reused is not None:
                try:
                    return await self._exchange(reused, (host, port), target, request, body)
                except (OSError, SendError):
                    pass  # closed by the server while idle: a fresh connection, once
            reader, writer = await asyncio.open_connection(host, port)
            fresh = _Connection(reader, writer, h11.Connection(our_role=h11.CLIENT))
            return await self._exchange(fresh, (host, port), target, request, body)

    def _take(self, host: str, port: int) -> _Connection | None:
        pool = self._idle.get((host, port))
        while pool:
            conn = pool.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        return None

    async def _exchange(
        self,
        conn: _Connection,
        key: tuple[str, int],
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> int:
        try:
            status = await self._roundtrip(conn, target, headers, body)
        except BaseException:
            conn.close()
            raise
        protocol = conn.protocol
        if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            protocol.start_next_cycle()
            pool = self._idle.setdefault(key, [])
            if len(pool) < self.max_idle:
                pool.append(conn)
                return status
        conn.close()
        return status

    @staticmethod
    async def _roundtrip(conn: _Connection, target: str, headers: list[tuple[str, str]], body: bytes) -> int:
        protocol = conn.protocol
        out = protocol.send(h11.Request(method="POST", target=target, headers=headers)) or b""
        out += protocol.send(h11.Data(data=body)) or b""
        out += protocol.send(h11.EndOfMessage()) or b""
        conn.writer.write(out)
        await conn.writer.drain()
        status: int | None = None
        while True:
            try:
                event = protocol.next_event()
            except h11.RemoteProtocolError as exc:  # e.g. closed before the answer
                raise SendError(str(exc)) from None
            if event is h11.NEED_DATA:
                protocol.receive_data(await conn.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                if status is None:
                    raise SendError("no response before the end of the message")
                return status
            elif isinstance(event, h11.ConnectionClosed):
                raise SendError("connection closed before the answer")

    def close(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()
