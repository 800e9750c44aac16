"""The ASGI receiver reads the body from the ASGI messages itself (web/asgi.py WebhookApp):
chunked bodies are read whole, an oversize one is refused once past the limit, a client that
goes away mid-body gets nothing queued."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import ClientDisconnect

from nen_celery.web.asgi import WebhookApp
from tests.conftest import Stack
from tests.helpers import snapshot
from tests.web_support import signed, webhook_body


def _chunks(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_chunked_body_is_read_whole(stack: Stack) -> None:
    body = webhook_body(f"m-{uuid.uuid4()}", "processing")  # not bound: parked, 202
    headers = {**signed(body), "content-type": "application/json"}
    response = httpx.post(stack.webhook_url, content=_chunks(body, 7), headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "parked"}


def test_an_undeclared_oversize_body_is_refused_and_changes_nothing(stack: Stack) -> None:
    big = b"x" * (1024 * 1024 + 1)
    stack.counter.wait_idle()
    before = snapshot(stack.redis, "*")
    published = sum(stack.counter.published.values())
    response = httpx.post(
        stack.webhook_url,
        content=_chunks(big, 64 * 1024),
        headers={**signed(big), "content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert snapshot(stack.redis, "*") == before
    assert sum(stack.counter.published.values()) == published


def _scope(body_length: int | None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if body_length is not None:
        headers.append((b"content-length", str(body_length).encode()))
    return {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/nen",
        "headers": headers,
        "query_string": b"",
    }


def test_reading_stops_past_the_limit_and_at_a_disconnect(stack: Stack) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def receiver(messages: list[dict[str, Any]]) -> tuple[Any, list[int]]:
        taken: list[int] = []

        async def receive() -> dict[str, Any]:
            taken.append(1)
            return messages.pop(0)

        return receive, taken

    chunk = {"type": "http.request", "body": b"x" * (600 * 1024), "more_body": True}
    receive, taken = receiver([dict(chunk), dict(chunk), dict(chunk), dict(chunk)])
    asyncio.run(WebhookApp()(_scope(None), receive, send))
    assert len(taken) == 2  # 1.2 MB read: past the 1 MiB limit, the rest is never asked for
    assert sent[0]["status"] == 413

    sent.clear()
    receive, taken = receiver(
        [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]
    )
    with pytest.raises(ClientDisconnect):
        asyncio.run(WebhookApp()(_scope(None), receive, send))
    assert sent == []  # nothing answered, nothing queued

    receive, taken = receiver([])
    asyncio.run(WebhookApp()(_scope(2 * 1024 * 1024), receive, send))
    assert taken == [] and sent[0]["status"] == 413  # declared too large: not read at all
