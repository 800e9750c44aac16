"""NenClient: one pooled httpx client per process, explicit timeouts, typed errors, retries."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
)

from nen_celery.domain import signing
from nen_celery.errors import ConfigurationError, NenAPIError, NenError, NenProtocolError
from nen_celery.nen.ratelimit import RateLimited, RateLimiter
from nen_celery.nen.retryable import classify_status, classify_transport, parse_retry_after
from nen_celery.nen.transport import ShardedTransport, environment_proxy
from nen_celery.settings import Settings

log = logging.getLogger("nen_celery.nen.client")

RUNS_PATH = "/runs"


@dataclass(frozen=True)
class Accepted:
    message_id: str
    workflow_id: str | None
    body: dict[str, Any]


@dataclass(frozen=True)
class RunRequest:
    workflow_id: str
    params: dict[str, Any]
    secure_params: dict[str, str] | None
    webhook_url: str | None

    def body(self, webhook_field: str) -> bytes:
        """Serialised once: these exact bytes are hashed, signed and sent."""
        data: dict[str, Any] = {"workflow_id": self.workflow_id, "workflow_params": self.params}
        if self.secure_params:
            data["secure_workflow_params"] = self.secure_params
        if self.webhook_url:
            data[webhook_field] = self.webhook_url
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


class AttemptHooks:
    """Called around each POST so the store knows whether a request may be on the wire."""

    def before_send(self) -> None:  # pragma: no cover - default no-op
        return None

    def not_sent(self) -> None:  # pragma: no cover - default no-op
        return None


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]


def _host(url: str) -> str:
    return urlsplit(url).netloc


def new_http_client(settings: Settings) -> httpx.Client:
    """The keep-alive pool a process's context holds (runtime/context.py, rebuilt with it after a
    fork or a settings change): explicit timeouts, every connection kept alive.

    Its transport is several small pools (nen/transport.py): httpcore's single pool costs
    CPU quadratic in its size and can close a connection a POST is using.
    """
    return httpx.Client(
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=settings.pool_timeout,
        ),
        transport=ShardedTransport(
            settings.http_max_connections,
            keepalive_expiry=settings.http_keepalive_expiry,
            proxy=environment_proxy(settings.api_url),
        ),
        headers={"user-agent": "nen-celery"},
    )


class NenClient:
    """Talks to Nen's API. Secrets come from Settings only, never from task arguments."""

    def __init__(
        self,
        settings: Settings,
        http: httpx.Client,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self._sleep = sleep
        self._clock = clock
        # the shared bucket when NEN_RATE_LIMIT is set (the context passes it; ratelimit.py)
        self.limiter = limiter

    def throttle(self) -> None:
        """Take a token from the shared bucket (raises RateLimited if it is far away)."""
        if self.limiter is not None:
            self.limiter.acquire()

    def _feedback(self, response: httpx.Response) -> None:
        """A 429 pauses the shared bucket, so every worker holds off, not only this one."""
        if response.status_code == 429 and self.limiter is not None:
            self.limiter.feedback(parse_retry_after(response.headers.get("retry-after"), self._clock()))

    def _url(self, path: str) -> str:
        return self.settings.api_url + path

    def _auth(self) -> dict[str, str]:
        self.settings.require("api_key")
        assert self.settings.api_key is not None
        return {"x-api-key": self.settings.api_key.get_secret_value()}

    def post_run_once(self, request: RunRequest, idempotency_key: str, *, throttle: bool = True) -> Accepted:
        """One POST /runs. Raises NenAPIError / NenTransportError / NenProtocolError / RateLimited."""
        if throttle:
            self.throttle()
        body = request.body(self.settings.webhook_field)
        headers = {
            **self._auth(),
            "content-type": "application/json",
            "idempotency-key": idempotency_key,
        }
        if self.settings.signing_key is not None:
            key = self.settings.signing_key.get_secret_value()
            headers.update(signing.signed_headers(key, "POST", RUNS_PATH, body, self._clock()))
        elif request.secure_params:
            self.settings.require("signing_key")
        try:
            response = self.http.post(self._url(RUNS_PATH), content=body, headers=headers)
        except httpx.TransportError as exc:
            raise classify_transport(exc, retry_read_timeout=self.settings.retry_unknown) from None
        self._feedback(response)
        if response.status_code in (200, 201, 202):
            data = _body(response)
            if not isinstance(data, dict) or not isinstance(data.get("messageId"), str):
                raise NenProtocolError(
                    f"Nen answered {response.status_code} without a messageId", response.status_code
                )
            return Accepted(data["messageId"], data.get("workflowId"), data)
        raise self._refusal(response, retry_ambiguous=self.settings.retry_unknown)

    def post_run(
        self,
        request: RunRequest,
        idempotency_key: str,
        *,
        deadline: float | None = None,
        hooks: AttemptHooks | None = None,
    ) -> Accepted:
        """POST /runs with exponential backoff + jitter while errors are retryable.

        Bounded by ``deadline`` seconds in total (default NEN_SUBMIT_DEADLINE); the last error is
        raised when the budget is spent, for the caller to re-schedule.
        """
        hooks = hooks or AttemptHooks()
        # Configuration problems surface before anything is marked as possibly sent.
        self._auth()
        if request.secure_params:
            self.settings.require("signing_key")
        budget = self.settings.submit_deadline if deadline is None else deadline

        def attempt() -> Accepted:
            self.throttle()  # before anything is marked as possibly sent
            hooks.before_send()
            try:
                return self.post_run_once(request, idempotency_key, throttle=False)
            except NenError as exc:
                if not exc.maybe_sent:
                    hooks.not_sent()
                raise

        retrying = Retrying(
            stop=stop_before_delay(budget),
            wait=self._backoff,
            # RateLimited goes back to the task, which re-queues itself instead of sleeping here
            retry=retry_if_exception(
                lambda e: isinstance(e, NenError) and e.retryable and not isinstance(e, RateLimited)
            ),
            reraise=True,
            sleep=self._sleep,
            before_sleep=self._log_retry,
        )
        return retrying(attempt)

    def _backoff(self, state: RetryCallState) -> float:
        """Exponential backoff plus up to one initial step of jitter, capped; at least Nen's
        Retry-After unless the shared rate limiter (a paused bucket) does the waiting."""
        initial, ceiling = self.settings.backoff_initial, self.settings.backoff_max
        exc = state.outcome.exception() if state.outcome else None
        exponential = initial * 2.0 ** (state.attempt_number - 1)
        delay: float = min(ceiling, exponential + random.uniform(0, initial))
        if isinstance(exc, NenAPIError) and exc.retry_after is not None and self.limiter is None:
            delay = max(delay, exc.retry_after)
        return delay

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "POST /runs to %s failed (attempt %d): %s; retrying in %.2fs",
            _host(self.settings.api_url),
            state.attempt_number,
            exc,
            state.next_action.sleep if state.next_action else 0.0,
        )

    def lookup_run(self, idempotency_key: str) -> dict[str, Any] | None:
        """Find a run by the Idempotency-Key it was sent with (NEN_LOOKUP_PATH); None on 404.

        Nen documents no such endpoint: this is off unless a deployment configures one.
        """
        if not self.settings.lookup_path:
            raise ConfigurationError("NEN_LOOKUP_PATH is not set")
        path = self.settings.lookup_path.format(idempotency_key=quote(idempotency_key, safe=""))
        return self._get_json(path, "lookup", missing_ok=True)

    def retrieve_run(self, message_id: str) -> dict[str, Any]:
        """The retrieval endpoint (path NEN_RETRIEVAL_PATH): a webhook-shaped status body."""
        path = self.settings.retrieval_path.format(message_id=quote(message_id, safe=""))
        data = self._get_json(path, "retrieval", missing_ok=False)
        assert data is not None
        return data

    def _get_json(self, path: str, what: str, *, missing_ok: bool) -> dict[str, Any] | None:
        """GET a JSON object from Nen (reads are safe to retry); None on 404 when missing_ok."""
        headers = self._auth()
        self.throttle()
        try:
            response = self.http.get(self._url(path), headers=headers)
        except httpx.TransportError as exc:
            raise classify_transport(exc, retry_read_timeout=True) from None
        self._feedback(response)
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code == 200:
            data = _body(response)
            if not isinstance(data, dict):
                raise NenProtocolError(f"{what} answer is not a JSON object", 200)
            return data
        raise self._refusal(response, retry_ambiguous=False)

    def _refusal(self, response: httpx.Response, *, retry_ambiguous: bool) -> NenAPIError:
        """The typed error for an answer that is not a success (the server's error body kept)."""
        return classify_status(
            response.status_code,
            _body(response),
            retryable_statuses=self.settings.retryable_statuses,
            retry_after=response.headers.get("retry-after"),
            now=self._clock(),
            retry_ambiguous=retry_ambiguous,
        )
