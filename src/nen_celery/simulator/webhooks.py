"""Delivering one webhook copy as Nen would: signed, retried with exponential backoff, and at most
``delivery_concurrency`` in flight (the rest queue, as behind a real sender's worker pool).

Plain ``http://`` callbacks go through the lean ``WebhookSender``, ``https://`` ones through httpx.
"""

from __future__ import annotations

import asyncio
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from nen_celery.domain.signing import webhook_signature
from nen_celery.simulator.config import SimulatorConfig
from nen_celery.simulator.log import logger
from nen_celery.simulator.runs import Run
from nen_celery.simulator.sender import SendError, WebhookSender


class DeliveryLedger(Protocol):
    """Where deliveries are counted (``SimulatorState``), without this module importing it."""

    def count(self, name: str) -> None: ...

    def record_delivered(self, message_id: str, status: str) -> None: ...


def redact_url(url: str) -> str:
    """scheme://host/path only: query strings may carry tokens and must not reach logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class WebhookDelivery:
    """The delivery attempts of webhooks, and the HTTP clients they share (made on first use)."""

    def __init__(self, config: SimulatorConfig, ledger: DeliveryLedger) -> None:
        self.config = config
        self._ledger = ledger
        self._client: httpx.AsyncClient | None = None
        self._sender: WebhookSender | None = None
        self._slots: asyncio.Semaphore | None = None

    async def deliver(self, run: Run, status: str, body: bytes) -> None:
        """POST one signed webhook, retrying with exponential backoff on non-2xx or I/O errors."""
        assert run.callback_url is not None
        url = run.callback_url
        headers = {
            "Content-Type": "application/json",
            "X-Hmac-Signature": webhook_signature(self.config.webhook_secret, body),
        }
        if self.config.webhook_delay > 0:
            await asyncio.sleep(self.config.webhook_delay)
        attempts = max(1, self.config.delivery_attempts)
        delay = self.config.delivery_backoff
        for attempt in range(1, attempts + 1):
            self._ledger.count("webhooks_attempted")
            delivered, outcome = await self._attempt(url, body, headers)
            logger.info(
                "webhook %s message=%s -> %s %s (attempt %d/%d)",
                status,
                run.message_id,
                redact_url(url),
                outcome,
                attempt,
                attempts,
            )
            if delivered:
                self._ledger.record_delivered(run.message_id, status)
                return
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.delivery_backoff_max)
        logger.warning("webhook %s message=%s given up after %d attempts", status, run.message_id, attempts)
        self._ledger.count("webhooks_failed")

    async def _attempt(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[bool, str]:
        """(delivered, what to log): a 2xx delivers; the status code or the error's name is logged."""
        try:
            async with self._delivery_slots():  # queued behind earlier deliveries, not failed
                code = await self._post(url, body, headers)
        except (httpx.HTTPError, httpx.InvalidURL, OSError, SendError) as exc:
            return False, type(exc).__name__
        return 200 <= code < 300, str(code)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: a proxy from the environment must not intercept local callbacks.
            # One connection per delivery slot: a delivery never waits on the pool itself.
            slots = max(1, self.config.delivery_concurrency)
            self._client = httpx.AsyncClient(
                timeout=self.config.delivery_timeout,
                trust_env=False,
                limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots),
            )
        return self._client

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """One delivery attempt's status code: plain http:// through the lean sender, else httpx."""
        if WebhookSender.handles(url):
            if self._sender is None:
                self._sender = WebhookSender(self.config.delivery_timeout, self.config.delivery_concurrency)
            return await self._sender.post(url, body, headers)
        response = await self._http().post(url, content=body, headers=headers)
        return response.status_code

    def _delivery_slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(1, self.config.delivery_concurrency))
        return self._slots

    async def aclose(self) -> None:
        """Close the HTTP clients (server shutdown); in-flight deliveries must be cancelled first."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None
