"""The simulator's webhook sender against real sockets: keep-alive, a server that closes idle
connections, chunked and non-2xx answers, a silent server, nobody listening."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from nen_celery.simulator.sender import SendError, WebhookSender

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


def _answer(status: int, body: bytes = b"{}", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/webhooks/nen?nen_run=r-1"


async def _two_posts(handler: Handler, body: bytes, headers: dict[str, str]) -> list[int]:
    """Two POSTs through one sender."""
    server, url = await _serve(handler)
    sender = WebhookSender(timeout=5, max_idle=4)
    async with server:
        codes = [await sender.post(url, body, headers), await sender.post(url, body, headers)]
        sender.close()
    return codes


async def _one_post(handler: Handler, timeout: float = 5) -> int:
    server, url = await _serve(handler)
    async with server:
        return await WebhookSender(timeout=timeout, max_idle=1).post(url, b"{}", {})


def test_posts_reuse_one_connection_and_send_the_request_as_given() -> None:
    seen: list[tuple[int, str, dict[str, str], bytes]] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                line, headers, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            seen.append((connections, line, headers, body))
            writer.write(_answer(200 if len(seen) == 1 else 503))
            await writer.drain()
        writer.close()

    codes = asyncio.run(_two_posts(handler, b'{"a":1}', {"X-Hmac-Signature": "sha256=ab"}))
    assert codes == [200, 503]
    assert connections == 1
    assert [s[1] for s in seen] == ["POST /webhooks/nen?nen_run=r-1 HTTP/1.1"] * 2
    assert seen[0][2]["x-hmac-signature"] == "sha256=ab" and seen[0][3] == b'{"a":1}'
    assert seen[0][2]["host"].startswith("127.0.0.1:")


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(_answer(200))  # keep-alive by default in HTTP/1.1, then closes anyway
        await writer.drain()
        writer.close()

    # whether the sender saw the close before reusing the connection or only when the reused one
    # failed, the second POST goes out on a fresh connection
    assert asyncio.run(_two_posts(handler, b"{}", {})) == [200, 200]
    assert connections == 2


def test_chunked_answers_and_connection_close_are_read_to_the_end() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    assert asyncio.run(_one_post(handler)) == 202


def test_a_server_that_never_answers_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(30)

    with pytest.raises(TimeoutError):
        asyncio.run(_one_post(handler, timeout=0.2))


def test_a_closed_connection_without_an_answer_and_nobody_listening_are_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    with pytest.raises(SendError):
        asyncio.run(_one_post(handler))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        asyncio.run(WebhookSender(timeout=5, max_idle=1).post(f"http://127.0.0.1:{port}/", b"{}", {}))
    with pytest.raises(ValueError, match="not an http:// URL"):
        asyncio.run(WebhookSender(timeout=5, max_idle=1).post("https://example.invalid/", b"{}", {}))
