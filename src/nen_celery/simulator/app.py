"""The simulated Nen API as a Starlette app.

It is deliberately strict (it rejects what the real API is documented to reject, and a
little more) so that client bugs show up locally, and honest about timing: runs progress on
asyncio timers and webhooks go out over real HTTP, with retries, like Nen's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import json
import logging
import math
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
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nen_celery.signing import verify_request, webhook_signature
from nen_celery.simulator.config import SimulatorConfig

logger = logging.getLogger("nen_celery.simulator")

ACCEPTED = "accepted"  # internal only: reported as "processing" by GET /runs/{id}
PROCESSING = "processing"
SUCCESS = "success"
FAILED = "failed"

NO_IDEMPOTENCY_KEY = "<none>"
ALTERNATE_WEBHOOK_FIELD = "webhook_url"

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CONFIG_DELAYS = ("processing_delay", "terminal_delay")
_CONFIG_SETS = ("fail_workflows", "unknown_workflows")

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
    """All in-memory state of one simulator: runs, counters and the delivery tasks.

    Mutated on the server's event loop; read from other threads (``SimulatorServer.stats``),
    hence every access goes through one condition, which also lets callers wait for a change.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.changed = threading.Condition()
        self._runs: dict[str, Run] = {}
        self._posts = 0
        self._accepted = 0
        self._posts_by_key: dict[str, int] = {}
        self._webhooks_sent = 0
        self._webhooks_failed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

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
            "webhooks_sent": self._webhooks_sent,
            "webhooks_failed": self._webhooks_failed,
            "runs": {
                run.message_id: {
                    "workflow_id": run.workflow_id,
                    "status": run.status,
                    "idempotency_key": run.idempotency_key,
                }
                for run in self._runs.values()
            },
        }

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

    def record_post(self, idempotency_key: str) -> None:
        with self.changed:
            self._posts += 1
            self._posts_by_key[idempotency_key] = self._posts_by_key.get(idempotency_key, 0) + 1
            self.changed.notify_all()

    def run_payload(self, message_id: str) -> JSONDict | None:
        with self.changed:
            run = self._runs.get(message_id)
            return copy.deepcopy(run.payload) if run is not None else None

    # -- runs --------------------------------------------------------------

    def accept(self, request: RunRequest, idempotency_key: str) -> Run:
        """Store a new run and start its timeline on the running loop."""
        message_id = str(uuid.uuid4())
        run = Run(
            message_id=message_id,
            workflow_id=request.workflow_id,
            idempotency_key=idempotency_key,
            callback_url=request.callback_url,
            outcome=FAILED if request.workflow_id in self.config.fail_workflows else SUCCESS,
            secure_param_keys=request.secure_param_keys,
            status=ACCEPTED,
            payload={},
        )
        run.payload = self._payload(run, PROCESSING)
        with self.changed:
            self._runs[message_id] = run
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
        leaves once the processing one was delivered or given up, so it never overtakes it.
        """
        processing_delivery: asyncio.Task[None] | None = None
        try:
            await asyncio.sleep(self.config.processing_delay)
            body = self._transition(run, PROCESSING)
            if run.callback_url is not None:
                processing_delivery = self._spawn(self._deliver(run, PROCESSING, body))
            await asyncio.sleep(self.config.terminal_delay)
            body = self._transition(run, run.outcome)
            if processing_delivery is not None:
                await processing_delivery
            if run.callback_url is not None:
                await self._deliver(run, run.outcome, body)
        finally:
            if processing_delivery is not None and not processing_delivery.done():
                processing_delivery.cancel()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: a proxy from the environment must not intercept local callbacks.
            self._client = httpx.AsyncClient(timeout=self.config.delivery_timeout, trust_env=False)
        return self._client

    async def _deliver(self, run: Run, status: str, body: bytes) -> None:
        """POST one signed webhook, retrying with exponential backoff on non-2xx or I/O errors."""
        assert run.callback_url is not None
        url = run.callback_url
        headers = {
            "Content-Type": "application/json",
            "X-Hmac-Signature": webhook_signature(self.config.webhook_secret, body),
        }
        attempts = max(1, self.config.delivery_attempts)
        delay = self.config.delivery_backoff
        for attempt in range(1, attempts + 1):
            try:
                response = await self._http().post(url, content=body, headers=headers)
                outcome = str(response.status_code)
                delivered = response.is_success
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
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
                    self.changed.notify_all()
                return
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay *= 2
        logger.warning("webhook %s message=%s given up after %d attempts", status, run.message_id, attempts)
        with self.changed:
            self._webhooks_failed += 1
            self.changed.notify_all()

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reset(self) -> None:
        """Forget every run and counter; pending deliveries are cancelled first."""
        await self._cancel_tasks()
        with self.changed:
            self._runs.clear()
            self._posts = 0
            self._accepted = 0
            self._posts_by_key.clear()
            self._webhooks_sent = 0
            self._webhooks_failed = 0
            self.changed.notify_all()

    async def aclose(self) -> None:
        """Cancel pending deliveries and close the HTTP client (server shutdown)."""
        await self._cancel_tasks()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# -- request handling ------------------------------------------------------


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


def _config_view(config: SimulatorConfig) -> JSONDict:
    return {
        "processing_delay": config.processing_delay,
        "terminal_delay": config.terminal_delay,
        "fail_workflows": sorted(config.fail_workflows),
        "unknown_workflows": sorted(config.unknown_workflows),
    }


def apply_config_update(config: SimulatorConfig, update: Mapping[str, Any]) -> None:
    """Validate every key first, then apply all of them: a bad update changes nothing."""

    def invalid(message: str) -> ApiError:
        return ApiError(400, "invalid_config", message)

    unknown = sorted(set(update) - {*_CONFIG_DELAYS, *_CONFIG_SETS})
    if unknown:
        raise invalid(f"unknown key(s): {', '.join(unknown)}")
    delays: dict[str, float] = {}
    sets: dict[str, set[str]] = {}
    for key, value in update.items():
        if key in _CONFIG_DELAYS:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise invalid(f"{key} must be a non-negative number of seconds")
            delays[key] = float(value)
        else:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise invalid(f"{key} must be a list of workflow id strings")
            sets[key] = set(value)
    for key, number in delays.items():
        setattr(config, key, number)
    for key, ids in sets.items():
        setattr(config, key, ids)


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
            logger.info("%s %s -> %d (%.1f ms)", scope["method"], scope["path"], status, elapsed_ms)


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """Build the simulator app; its state is ``get_state(app)``."""
    config = config if config is not None else SimulatorConfig()
    state = SimulatorState(config)

    async def post_run(request: Request) -> Response:
        try:
            _check_api_key(request, config)
        except ApiError as exc:
            return exc.response()
        idempotency_key = request.headers.get("idempotency-key", NO_IDEMPOTENCY_KEY)
        state.record_post(idempotency_key)
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
        run = state.accept(run_request, idempotency_key)
        return JSONResponse(
            {
                "message": "Job accepted for processing.",
                "messageId": run.message_id,
                "workflowId": run.workflow_id,
            },
            status_code=202,
        )

    async def get_run(request: Request) -> Response:
        try:
            _check_api_key(request, config)
        except ApiError as exc:
            return exc.response()
        message_id = str(request.path_params["message_id"])
        payload = state.run_payload(message_id)
        if payload is None:
            return error_response(404, "run_not_found", f"no run with messageId {message_id}")
        return JSONResponse(payload)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def sim_stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def sim_config(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(_config_view(config))
        try:
            apply_config_update(config, parse_json_object(await request.body()))
        except ApiError as exc:
            return exc.response()
        return JSONResponse(_config_view(config))

    async def sim_reset(request: Request) -> Response:
        await state.reset()
        return JSONResponse({"status": "reset"})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        return JSONResponse(
            {"error": code, "message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
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

    app = Starlette(
        routes=[
            Route("/runs", post_run, methods=["POST"]),
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
