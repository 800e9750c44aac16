"""The simulated Nen API as a Starlette app.

It is deliberately strict (it rejects what the real API is documented to reject, and a
little more) so that client bugs show up locally, and honest about timing: runs progress on
asyncio timers and webhooks go out over real HTTP, with retries, like Nen's would.

Fault injection (``SimulatorConfig`` fields from ``seed`` on, all off by default) makes it
misbehave on purpose: error bursts, latency, garbled or missing 202s, duplicated, dropped,
reordered, late or missing webhooks, and two optional idempotency features Nen does not document.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import json
import logging
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import httpx

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nen_celery.domain.signing import verify_request, webhook_signature
from nen_celery.simulator.config import FAULT_FIELDS, PlannedError, SimulatorConfig
from nen_celery.simulator.control import InvalidConfig, config_view, parse_config_update
from nen_celery.simulator.sender import SendError, WebhookSender

logger = logging.getLogger("nen_celery.simulator")

ACCEPTED = "accepted"  # internal only: reported as "processing" by GET /runs/{id}
PROCESSING = "processing"
SUCCESS = "success"
FAILED = "failed"

NO_IDEMPOTENCY_KEY = "<none>"
ALTERNATE_WEBHOOK_FIELD = "webhook_url"

#: Body of the 202 that ``bad_accept_body`` sends instead of JSON.
BAD_ACCEPT_BODY = "accepted"

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Private scope keys: the server transport of the request (so a fault can drop the connection),
# and, for the access log, the marks that we dropped it or that the client left during a delay.
_TRANSPORT_KEY = "nen_sim.transport"
_DROPPED_KEY = "nen_sim.dropped"
_CLIENT_GONE_KEY = "nen_sim.client_gone"

JSONDict = dict[str, Any]


class ApiError(Exception):
    """An error answer in Nen's shape: ``{"error": <code>, "message": <detail>}``."""

    def __init__(self, status_code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message

    def response(self) -> JSONResponse:
        return error_response(self.status_code, self.error, self.message)


def error_response(status_code: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status_code)


@dataclass
class Run:
    """One accepted run. Holds no secure param values, only their key names."""

    message_id: str
    workflow_id: str
    idempotency_key: str
    callback_url: str | None
    outcome: str
    secure_param_keys: tuple[str, ...]
    status: str
    payload: JSONDict
    never_terminal: bool = False


@dataclass(frozen=True)
class RunRequest:
    """A validated ``POST /runs`` body, minus the secure values."""

    workflow_id: str
    callback_url: str | None
    has_secure_params: bool
    secure_param_keys: tuple[str, ...]


def _redact_url(url: str) -> str:
    """scheme://host/path only: query strings may carry tokens and must not reach logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # 1e999 parses to inf, which is not a JSON number
    return isinstance(value, str | int | bool)


def validate_run_body(body: Mapping[str, Any], config: SimulatorConfig) -> RunRequest:
    """Check a parsed ``POST /runs`` body; raise ApiError(422) naming the first bad field."""

    def invalid(message: str) -> ApiError:
        return ApiError(422, "invalid_request", message)

    workflow_id = body.get("workflow_id")
    if "workflow_id" not in body:
        raise invalid("workflow_id is required")
    if not isinstance(workflow_id, str) or not _UUID_RE.match(workflow_id):
        raise invalid("workflow_id must be a UUID string")

    params = body.get("workflow_params", {})
    if not isinstance(params, dict):
        raise invalid("workflow_params must be an object")
    for key, value in params.items():
        if not _is_scalar(value):
            raise invalid(
                f"workflow_params.{key} must be a string, number or boolean, not {type(value).__name__}"
            )

    has_secure = "secure_workflow_params" in body
    secure = body.get("secure_workflow_params", {})
    if not isinstance(secure, dict):
        raise invalid("secure_workflow_params must be an object")
    for key, value in secure.items():
        if not isinstance(value, str):
            # Name the key, never echo the value: it is a secret.
            raise invalid(f"secure_workflow_params.{key} must be a string")

    callback_fields = [config.webhook_field]
    if config.webhook_field != ALTERNATE_WEBHOOK_FIELD:
        callback_fields.append(ALTERNATE_WEBHOOK_FIELD)
    callback_url: str | None = None
    for field_name in callback_fields:
        if field_name not in body:
            continue
        value = body[field_name]
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid(f"{field_name} must be an http(s) URL")
        if callback_url is None:
            callback_url = value

    allowed = {"workflow_id", "workflow_params", "secure_workflow_params", *callback_fields}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(unknown)}")

    return RunRequest(
        workflow_id=workflow_id,
        callback_url=callback_url,
        has_secure_params=has_secure,
        secure_param_keys=tuple(sorted(secure)),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(raw: bytes) -> JSONDict:
    """Strict JSON (no NaN/Infinity) that must be an object; raise ApiError(400) otherwise."""
    try:
        parsed = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return parsed


class SimulatorState:
    """All in-memory state of one simulator: runs, counters, fault plans and the delivery tasks.

    Mutated on the server's event loop; read from other threads (``SimulatorServer.stats``),
    hence every access goes through one condition, which also lets callers wait for a change.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.changed = threading.Condition()
        # What POST /_sim/reset puts the fault settings back to: the values we were started with.
        self._fault_defaults = {name: copy.deepcopy(getattr(config, name)) for name in FAULT_FIELDS}
        self._runs: dict[str, Run] = {}
        self._runs_by_key: dict[str, str] = {}  # Idempotency-Key -> messageId of its first run
        self._posts = 0
        self._accepted = 0
        self._posts_by_key: dict[str, int] = {}
        self._post_times: list[float] = []  # arrival (Unix time) of every POST /runs
        self._replays = 0
        self._errors_injected = 0
        self._dropped_connections = 0
        self._bad_accept_bodies = 0
        self._webhooks_attempted = 0
        self._webhooks_sent = 0
        self._webhooks_failed = 0
        self._webhooks_dropped = 0
        self._deliveries: dict[str, list[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._sender: WebhookSender | None = None
        self._slots: asyncio.Semaphore | None = None
        self._rng_seed = config.seed
        self._rng = random.Random(config.seed)
        self._wake: asyncio.Event | None = None

    # -- stats -------------------------------------------------------------

    def stats(self) -> JSONDict:
        """A snapshot, safe to keep and to read from any thread."""
        with self.changed:
            return self._stats_locked()

    def _stats_locked(self) -> JSONDict:
        return {
            "posts": self._posts,
            "accepted": self._accepted,
            "posts_by_idempotency_key": dict(self._posts_by_key),
            "post_times": list(self._post_times),
            "idempotent_replays": self._replays,
            "errors_injected": self._errors_injected,
            "dropped_connections": self._dropped_connections,
            "bad_accept_bodies": self._bad_accept_bodies,
            "webhooks_attempted": self._webhooks_attempted,
            "webhooks_sent": self._webhooks_sent,
            "webhooks_failed": self._webhooks_failed,
            "webhooks_dropped": self._webhooks_dropped,
            "deliveries": {message_id: list(sent) for message_id, sent in self._deliveries.items()},
            "runs": {
                run.message_id: {
                    "workflow_id": run.workflow_id,
                    "status": run.status,
                    "idempotency_key": run.idempotency_key,
                    "posts": self._run_posts(run),
                }
                for run in self._runs.values()
            },
        }

    def _run_posts(self, run: Run) -> int:
        """POSTs that carried the run's Idempotency-Key (1 for a run created without one)."""
        if run.idempotency_key == NO_IDEMPOTENCY_KEY:
            return 1
        return self._posts_by_key.get(run.idempotency_key, 0)

    def wait_for(self, predicate: Callable[[JSONDict], bool], timeout: float) -> JSONDict:
        """Block until ``predicate(stats)`` holds; return those stats. TimeoutError past the deadline."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                snapshot = self._stats_locked()
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"simulator stats did not reach the condition in {timeout}s: {snapshot}"
                    )
                self.changed.wait(remaining)

    def _count(self, counter: str) -> None:
        with self.changed:
            setattr(self, counter, getattr(self, counter) + 1)
            self.changed.notify_all()

    def record_post(self, idempotency_key: str) -> None:
        with self.changed:
            self._posts += 1
            self._posts_by_key[idempotency_key] = self._posts_by_key.get(idempotency_key, 0) + 1
            self._post_times.append(time.time())
            self.changed.notify_all()

    def record_replay(self) -> None:
        self._count("_replays")

    def run_payload(self, message_id: str) -> JSONDict | None:
        with self.changed:
            run = self._runs.get(message_id)
            return copy.deepcopy(run.payload) if run is not None else None

    def run_for_key(self, idempotency_key: str) -> Run | None:
        """The first run created by a POST carrying ``idempotency_key``, if any."""
        with self.changed:
            message_id = self._runs_by_key.get(idempotency_key)
            return self._runs.get(message_id) if message_id is not None else None

    # -- faults (decided on the event loop) ----------------------------------

    def reseed(self) -> None:
        """Restart the fault RNG from ``config.seed``."""
        self._rng_seed = self.config.seed
        self._rng = random.Random(self._rng_seed)

    def _chance(self, probability: float) -> bool:
        """True with ``probability``; draws from the RNG only when the fault is on."""
        if probability <= 0:
            return False
        if self.config.seed != self._rng_seed:  # seed changed by attribute, not via /_sim/config
            self.reseed()
        return self._rng.random() < probability

    def take_post_error(self) -> PlannedError | None:
        """The error this POST gets: the next planned one, else maybe a random one; None: no error."""
        config = self.config
        planned: PlannedError | None = None
        if config.post_errors:
            # Rebind rather than pop: a copy of the config (tests keep one) must not see it shrink.
            planned, config.post_errors = config.post_errors[0], config.post_errors[1:]
        elif self._chance(config.post_error_rate):
            planned = PlannedError(config.post_error_status)
        if planned is not None:
            self._count("_errors_injected")
        return planned

    def take_drop(self) -> bool:
        """Whether this accepting POST loses its connection instead of an answer."""
        if self.config.drop_after_accept <= 0:
            return False
        self.config.drop_after_accept -= 1
        self._count("_dropped_connections")
        return True

    def take_error_after_accept(self) -> int | None:
        """The gateway error this accepting POST gets instead of its 202, if one is planned."""
        planned = self.config.error_after_accept
        if not planned:
            return None
        # Rebind rather than pop: a copy of the config (tests keep one) must not see it shrink.
        status, self.config.error_after_accept = planned[0], planned[1:]
        self._count("_errors_injected")
        return status

    def take_bad_body(self) -> bool:
        """Whether this accepting POST gets a non-JSON 202 body."""
        value = self.config.bad_accept_body
        if isinstance(value, bool):
            hit = value
        elif value > 0:
            self.config.bad_accept_body = value - 1
            hit = True
        else:
            hit = False
        if hit:
            self._count("_bad_accept_bodies")
        return hit

    def _wake_event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    async def pause(self, seconds: float, request: Request) -> None:
        """Injected latency: wait ``seconds``, less if the client hangs up or the simulator is reset.

        Cutting the wait short changes nothing the client could see (nobody reads the answer any
        more), and keeps resets and shutdowns from waiting on a slow answer.
        """
        if seconds <= 0:
            return
        hangup = asyncio.ensure_future(_until_disconnected(request))
        waiters = {asyncio.ensure_future(self._wake_event().wait()), hangup}
        try:
            done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            if hangup in done:
                request.scope[_CLIENT_GONE_KEY] = True
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    # -- runs --------------------------------------------------------------

    def accept(self, request: RunRequest, idempotency_key: str) -> Run:
        """Store a new run and start its timeline on the running loop."""
        message_id = str(uuid.uuid4())
        never_terminal = self.config.never_terminal
        run = Run(
            message_id=message_id,
            workflow_id=request.workflow_id,
            idempotency_key=idempotency_key,
            callback_url=request.callback_url,
            outcome=FAILED if request.workflow_id in self.config.fail_workflows else SUCCESS,
            secure_param_keys=request.secure_param_keys,
            status=ACCEPTED,
            payload={},
            never_terminal=(
                never_terminal if isinstance(never_terminal, bool) else request.workflow_id in never_terminal
            ),
        )
        run.payload = self._payload(run, PROCESSING)
        with self.changed:
            self._runs[message_id] = run
            self._deliveries[message_id] = []
            if idempotency_key != NO_IDEMPOTENCY_KEY:
                self._runs_by_key.setdefault(idempotency_key, message_id)
            self._accepted += 1
            self.changed.notify_all()
        self._spawn(self._drive(run))
        return run

    def _payload(self, run: Run, status: str) -> JSONDict:
        ttl = self.config.result_ttl
        payload: JSONDict = {
            "workflow_id": run.workflow_id,
            "message_id": run.message_id,
            "status": status,
            "expires_at": int(time.time()) + ttl,
        }
        if status == SUCCESS:
            signature = secrets.token_hex(32)
            url = (
                f"https://files.sim.invalid/{run.message_id}/output.json"
                f"?X-Amz-Signature={signature}&X-Amz-Expires={ttl}"
            )
            payload["result"] = {"files": [{"name": "output.json", "url": url}]}
        elif status == FAILED:
            payload["error"] = {"code": "workflow_failed", "message": "simulated failure"}
        return payload

    def _transition(self, run: Run, status: str) -> bytes:
        """Move ``run`` to ``status``; return the webhook body, serialised once."""
        payload = self._payload(run, status)
        with self.changed:
            run.status = status
            run.payload = payload
            self.changed.notify_all()
        return json.dumps(payload, separators=(",", ":")).encode()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drive(self, run: Run) -> None:
        """processing after processing_delay, terminal after terminal_delay more.

        The state follows the timers whatever the receiver does; the terminal webhook only
        leaves once the processing one was delivered or given up, so it never overtakes it,
        unless ``webhook_reorder`` holds the processing webhook back until the terminal one is done.
        A ``never_terminal`` run stops after ``processing``.
        """
        processing: list[asyncio.Task[None]] = []
        try:
            await asyncio.sleep(self.config.processing_delay)
            processing_body = self._transition(run, PROCESSING)
            reorder = self.config.webhook_reorder
            if not reorder:
                processing = self._send_webhook(run, PROCESSING, processing_body)
            if run.never_terminal:
                if reorder:
                    processing = self._send_webhook(run, PROCESSING, processing_body)
                await asyncio.gather(*processing)
                return
            await asyncio.sleep(self.config.terminal_delay)
            body = self._transition(run, run.outcome)
            await asyncio.gather(*processing)
            await asyncio.gather(*self._send_webhook(run, run.outcome, body))
            if reorder:
                processing = self._send_webhook(run, PROCESSING, processing_body)
                await asyncio.gather(*processing)
        finally:
            for task in processing:
                task.cancel()

    def _send_webhook(self, run: Run, status: str, body: bytes) -> list[asyncio.Task[None]]:
        """Start the deliveries of one webhook: the original plus ``webhook_duplicates`` copies,
        concurrently, minus those ``webhook_drop`` / ``webhook_drop_rate`` swallow."""
        if run.callback_url is None:
            return []
        copies = 1 + self.config.webhook_duplicates
        if status in self.config.webhook_drop:
            kept = 0
        else:
            kept = sum(not self._chance(self.config.webhook_drop_rate) for _ in range(copies))
        if kept < copies:
            logger.info(
                "webhook %s message=%s: %d of %d dropped", status, run.message_id, copies - kept, copies
            )
            with self.changed:
                self._webhooks_dropped += copies - kept
                self.changed.notify_all()
        return [self._spawn(self._deliver(run, status, body)) for _ in range(kept)]

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

    async def _deliver(self, run: Run, status: str, body: bytes) -> None:
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
            self._count("_webhooks_attempted")
            try:
                async with self._delivery_slots():  # queued behind earlier deliveries, not failed
                    code = await self._post(url, body, headers)
                outcome = str(code)
                delivered = 200 <= code < 300
            except (httpx.HTTPError, httpx.InvalidURL, OSError, SendError) as exc:
                outcome = type(exc).__name__
                delivered = False
            logger.info(
                "webhook %s message=%s -> %s %s (attempt %d/%d)",
                status,
                run.message_id,
                _redact_url(url),
                outcome,
                attempt,
                attempts,
            )
            if delivered:
                with self.changed:
                    self._webhooks_sent += 1
                    self._deliveries.setdefault(run.message_id, []).append(status)
                    self.changed.notify_all()
                return
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.delivery_backoff_max)
        logger.warning("webhook %s message=%s given up after %d attempts", status, run.message_id, attempts)
        self._count("_webhooks_failed")

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reset(self) -> None:
        """Forget every run and counter, and put the fault settings back to their start values.

        Pending deliveries are cancelled first; answers held back by injected latency go out now.
        """
        await self._cancel_tasks()
        if self._wake is not None:
            self._wake.set()
            self._wake = None
        for name, value in self._fault_defaults.items():
            setattr(self.config, name, copy.deepcopy(value))
        self.reseed()
        with self.changed:
            self._runs.clear()
            self._runs_by_key.clear()
            self._posts = 0
            self._accepted = 0
            self._posts_by_key.clear()
            self._post_times.clear()
            self._replays = 0
            self._errors_injected = 0
            self._dropped_connections = 0
            self._bad_accept_bodies = 0
            self._webhooks_attempted = 0
            self._webhooks_sent = 0
            self._webhooks_failed = 0
            self._webhooks_dropped = 0
            self._deliveries.clear()
            self.changed.notify_all()

    async def aclose(self) -> None:
        """Cancel pending deliveries and close the HTTP client (server shutdown)."""
        await self._cancel_tasks()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None


# -- request handling ------------------------------------------------------


async def _until_disconnected(request: Request) -> None:
    """Return once the client is gone (call only after the body was read, or for bodiless requests)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _drop_connection(request: Request) -> None:
    """Close the connection without a byte of answer: the client sees the server hang up.

    The transport is the one uvicorn handed the app (see ``_SimulatorApp``). After closing it we
    wait until the server noticed, so it neither answers nor reports a missing response.
    """
    transport = request.scope.get(_TRANSPORT_KEY)
    if transport is None:
        raise RuntimeError("drop_after_accept needs a server that exposes its transport (uvicorn)")
    request.scope[_DROPPED_KEY] = True
    transport.close()
    await _until_disconnected(request)


class _NoResponse(Response):
    """Sends nothing (the connection was dropped on purpose)."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return


def _check_api_key(request: Request, config: SimulatorConfig) -> None:
    presented = request.headers.get("x-api-key")
    if presented is None:
        raise ApiError(401, "unauthorized", "missing x-api-key header")
    if not hmac.compare_digest(presented.encode(), config.api_key.encode()):
        raise ApiError(401, "unauthorized", "invalid x-api-key")


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _discard_body(request: Request) -> None:
    async for _chunk in request.stream():
        pass


def _reason_code(status: int) -> str:
    """``service_unavailable`` for 503: the snake_cased reason phrase."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "error"
    return phrase.lower().replace(" ", "_").replace("-", "_")


def _planned_error_response(planned: PlannedError) -> JSONResponse:
    response = error_response(
        planned.status,
        planned.error if planned.error is not None else _reason_code(planned.status),
        planned.message if planned.message is not None else f"simulated error {planned.status}",
    )
    if planned.retry_after is not None:
        response.headers["Retry-After"] = str(planned.retry_after)
    return response


def _accepted_body(run: Run) -> JSONDict:
    return {
        "message": "Job accepted for processing.",
        "messageId": run.message_id,
        "workflowId": run.workflow_id,
    }


def apply_config_update(config: SimulatorConfig, update: Mapping[str, Any]) -> None:
    """Validate every key first, then apply all of them: a bad update changes nothing."""
    try:
        values = parse_config_update(update)
    except InvalidConfig as exc:
        raise ApiError(400, "invalid_config", str(exc)) from None
    for key, value in values.items():
        setattr(config, key, value)


class _AccessLog:
    """One INFO line per request: method, path (never the query string), status, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            if scope.get(_DROPPED_KEY):
                outcome = "dropped"
            elif scope.get(_CLIENT_GONE_KEY):
                outcome = f"{status} (client gone)"
            else:
                outcome = str(status)
            logger.info("%s %s -> %s (%.1f ms)", scope["method"], scope["path"], outcome, elapsed_ms)


class _SimulatorApp(Starlette):
    """Starlette, plus: the server transport of each request goes into its scope.

    uvicorn calls the app with ``send`` bound to its request cycle, which holds the transport; only
    here, before any middleware wraps ``send``, can ``drop_after_accept`` reach it.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            # asyncio's transports or uvloop's (which do not subclass asyncio.BaseTransport)
            if all(callable(getattr(transport, name, None)) for name in ("close", "is_closing")):
                scope[_TRANSPORT_KEY] = transport
        await super().__call__(scope, receive, send)


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """Build the simulator app; its state is ``get_state(app)``."""
    config = config if config is not None else SimulatorConfig()
    state = SimulatorState(config)

    async def answer_post(request: Request, idempotency_key: str) -> Response | None:
        """The answer to an authenticated POST /runs; None: drop the connection instead."""
        planned = state.take_post_error()
        if planned is not None:
            await _discard_body(request)
            logger.info("injected error %d on POST /runs", planned.status)
            return _planned_error_response(planned)
        try:
            raw = await _read_body(request, config.max_body_bytes)
            run_request = validate_run_body(parse_json_object(raw), config)
            signature = request.headers.get("x-signature")
            if run_request.has_secure_params and signature is None:
                raise ApiError(
                    403,
                    "hmac_required_for_secure_params",
                    "secure_workflow_params require x-timestamp and x-signature headers",
                )
            if signature is not None:
                timestamp = request.headers.get("x-timestamp")
                if timestamp is None:
                    raise ApiError(401, "invalid_signature", "missing x-timestamp header")
                reason = verify_request(
                    config.signing_key,
                    "POST",
                    "/runs",
                    timestamp,
                    signature,
                    raw,
                    time.time(),
                    config.timestamp_tolerance,
                )
                if reason is not None:
                    raise ApiError(401, "invalid_signature", reason)
            if run_request.workflow_id in config.unknown_workflows:
                raise ApiError(
                    404, "workflow_not_found", f"workflow {run_request.workflow_id} does not exist"
                )
        except ApiError as exc:
            return exc.response()
        run: Run | None = None
        if config.honour_idempotency_key and idempotency_key != NO_IDEMPOTENCY_KEY:
            run = state.run_for_key(idempotency_key)
            if run is not None:
                state.record_replay()
                logger.info("idempotent replay of message=%s", run.message_id)
        if run is None:
            run = state.accept(run_request, idempotency_key)
        if state.take_drop():
            logger.info("dropping the connection after accepting message=%s", run.message_id)
            return None
        gateway = state.take_error_after_accept()
        if gateway is not None:
            logger.info("answering %d after accepting message=%s", gateway, run.message_id)
            return HTMLResponse(f"<html><body><h1>{gateway} Bad Gateway</h1></body></html>", gateway)
        if state.take_bad_body():
            return PlainTextResponse(BAD_ACCEPT_BODY, status_code=202)
        return JSONResponse(_accepted_body(run), status_code=202)

    async def post_run(request: Request) -> Response:
        try:
            _check_api_key(request, config)
        except ApiError as exc:
            return exc.response()
        idempotency_key = request.headers.get("idempotency-key", NO_IDEMPOTENCY_KEY)
        state.record_post(idempotency_key)
        response = await answer_post(request, idempotency_key)
        # Injected latency comes after the work: the run already exists while the client waits.
        await state.pause(config.post_latency, request)
        if response is None:
            await _drop_connection(request)
            return _NoResponse()
        return response

    async def get_run(request: Request) -> Response:
        try:
            _check_api_key(request, config)
        except ApiError as exc:
            return exc.response()
        message_id = str(request.path_params["message_id"])
        payload = state.run_payload(message_id)
        await state.pause(config.get_latency, request)
        if payload is None:
            return error_response(404, "run_not_found", f"no run with messageId {message_id}")
        return JSONResponse(payload)

    async def lookup_run(request: Request) -> Response:
        if not config.lookup_by_idempotency_key:
            raise HTTPException(405, headers={"Allow": "POST"})  # exactly what it was without the route
        try:
            _check_api_key(request, config)
        except ApiError as exc:
            return exc.response()
        key = request.query_params.get("idempotency_key")
        if not key:
            return error_response(400, "invalid_request", "idempotency_key query parameter is required")
        run = state.run_for_key(key)
        payload = state.run_payload(run.message_id) if run is not None else None
        await state.pause(config.get_latency, request)
        if payload is None:
            return error_response(404, "run_not_found", "no run was created with that Idempotency-Key")
        return JSONResponse(payload)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def sim_stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def sim_config(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(config_view(config))
        try:
            update = parse_json_object(await request.body())
            apply_config_update(config, update)
        except ApiError as exc:
            return exc.response()
        if "seed" in update:
            state.reseed()
        return JSONResponse(config_view(config))

    async def sim_reset(request: Request) -> Response:
        await state.reset()
        return JSONResponse({"status": "reset"})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": _reason_code(exc.status_code), "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the simulator failed; see its log")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.aclose()

    app = _SimulatorApp(
        routes=[
            Route("/runs", post_run, methods=["POST"]),
            Route("/runs", lookup_run, methods=["GET"]),
            Route("/runs/{message_id}", get_run, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/_sim/stats", sim_stats, methods=["GET"]),
            Route("/_sim/config", sim_config, methods=["GET", "POST"]),
            Route("/_sim/reset", sim_reset, methods=["POST"]),
        ],
        middleware=[Middleware(_AccessLog)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.simulator = state
    return app


def get_state(app: Starlette) -> SimulatorState:
    """The SimulatorState behind an app made by ``create_app``."""
    state = app.state.simulator
    if not isinstance(state, SimulatorState):
        raise TypeError("app was not built by nen_celery.simulator.create_app")
    return state
