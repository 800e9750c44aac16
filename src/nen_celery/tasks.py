"""The Celery tasks. Each carries only ids in its message and is safe to run twice.

submit_run  -> POST /runs (retries inside a deadline, then re-schedules itself)
ingest_webhook -> applies one verified webhook; the first terminal status claims completion
complete_run -> dispatches the caller's on_complete / on_failure signature once
poll_run    -> no-webhook mode: follows the run through the retrieval endpoint
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from celery import Task
from celery.canvas import signature

from .client import AttemptHooks, StartRunRequest
from .config import ConfigurationError
from .context import get_context
from .errors import NenAPIError, NenError
from .status import WEBHOOK_STATUSES, Status, is_terminal
from .worker import app

log = logging.getLogger("nen_celery.tasks")

CALLBACK_NAMESPACE = uuid.UUID("5b0f8f61-63a5-4a51-9a39-2f4c8c1a7e10")


def callback_task_id(run_id: str, status: str) -> str:
    """Deterministic id of the user callback task, so a re-dispatch is recognisable."""
    return str(uuid.uuid5(CALLBACK_NAMESPACE, f"{run_id}:{status}"))


def _repr(run_id: str, **extra: Any) -> str:
    parts = [f"run_id={run_id!r}"] + [f"{k}={v!r}" for k, v in extra.items()]
    return "(" + ", ".join(parts) + ")"


def enqueue_submit(
    run_id: str, workflow_id: str, reschedule: int = 0, countdown: float | None = None
) -> None:
    submit_run.apply_async(
        args=(run_id,),
        kwargs={"reschedule": reschedule},
        countdown=countdown,
        argsrepr=_repr(run_id, workflow_id=workflow_id),
        kwargsrepr=repr({"reschedule": reschedule}),
    )


def enqueue_complete(run_id: str) -> None:
    complete_run.apply_async(args=(run_id,), argsrepr=_repr(run_id))


def _finish(run_id: str, status: Status, error: dict[str, Any], source: str) -> None:
    """End a run that Nen never started (rejected / submit_failed) and fire on_failure."""
    store = get_context().store
    verdict, now, completion = store.apply(run_id, status, source=source, payload=error, error=error)
    log.warning("run %s ended %s (%s): %s", run_id, now, verdict, error.get("message") or error.get("error"))
    if completion == "pending":
        enqueue_complete(run_id)


def apply_nen_status(run_id: str, body: dict[str, Any], source: str) -> tuple[str, str]:
    """Apply a webhook/retrieval body to the run; dispatch completion if still pending."""
    store = get_context().store
    status = str(body["status"])
    payload = body if is_terminal(status) else None
    verdict, now, completion = store.apply(run_id, status, source=source, payload=payload)
    if completion == "pending":
        enqueue_complete(run_id)
    return verdict, now


def bind_accepted(run_id: str, message_id: str, accepted: dict[str, Any]) -> str:
    """Bind the messageId, then replay webhooks that arrived before it (kept, not lost)."""
    ctx = get_context()
    status, parked = ctx.store.bind(run_id, message_id, accepted)
    for sealed in parked:
        body = json.loads(ctx.sealer.open(sealed))
        _, status = apply_nen_status(run_id, body, source="webhook:parked")
    if parked:
        ctx.store.drop_parked(message_id)
    return status


class _StoreHooks(AttemptHooks):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.store = get_context().store

    def before_send(self) -> None:
        if self.store.begin_post(self.run_id) < 0:
            raise RuntimeError(f"run {self.run_id} left 'queued' while being submitted")

    def not_sent(self) -> None:
        self.store.post_not_sent(self.run_id)


@app.task(name="nen_celery.submit_run", bind=True, max_retries=None)
def submit_run(self: Task, run_id: str, reschedule: int = 0) -> dict[str, Any]:
    ctx = get_context()
    settings, store = ctx.settings, ctx.store
    lease = settings.submit_deadline + settings.read_timeout + settings.connect_timeout + 30
    verdict, detail = store.claim_submit(run_id, lease, holder=str(self.request.id))
    if verdict == "missing":
        log.error("submit_run: run %s has no record (expired or never created)", run_id)
        return {"run_id": run_id, "status": "missing"}
    if verdict in ("done", "busy"):
        # busy: another task holds the submit lease; if its worker dies, its own message is
        # redelivered (late acks) and takes the lease back, so this duplicate can stop here.
        return {"run_id": run_id, "status": detail if verdict == "done" else "busy"}
    if verdict == "ambiguous":
        # A previous attempt may have reached Nen before its worker died: never resend blindly.
        error = {"type": "ambiguous", "message": "a previous POST /runs may have been received"}
        store.apply(run_id, Status.UNKNOWN, source="submit:redelivered", error=error)
        return {"run_id": run_id, "status": Status.UNKNOWN.value}

    data = store.raw(run_id)
    try:
        secure = store.secure_params(run_id)
        if data.get("has_secure") == "1" and secure is None:
            _finish(
                run_id,
                Status.SUBMIT_FAILED,
                {"type": "secure_params_missing", "message": "the run's encrypted secure params are gone"},
                "submit",
            )
            return {"run_id": run_id, "status": Status.SUBMIT_FAILED.value}
        request = StartRunRequest(
            workflow_id=data["workflow_id"],
            params=json.loads(data.get("params") or "{}"),
            secure_params=secure,
            webhook_url=settings.webhook_url,
        )
        accepted = ctx.client.start_run(request, idempotency_key=run_id, hooks=_StoreHooks(run_id))
    except (NenError, ConfigurationError) as exc:
        return _submit_error(self, run_id, data, reschedule, exc)

    status = bind_accepted(run_id, accepted.message_id, accepted.body)
    log.info("run %s accepted by Nen as message %s", run_id, accepted.message_id)
    if settings.webhook_url is None:
        poll_run.apply_async(args=(run_id,), countdown=settings.poll_interval, argsrepr=_repr(run_id))
    return {"run_id": run_id, "status": status, "message_id": accepted.message_id}


def _submit_error(
    task: Task, run_id: str, data: dict[str, str], reschedule: int, exc: Exception
) -> dict[str, Any]:
    ctx = get_context()
    settings, store = ctx.settings, ctx.store
    error = exc.to_dict() if isinstance(exc, NenError) else {"type": type(exc).__name__, "message": str(exc)}
    retryable = isinstance(exc, ConfigurationError) or (isinstance(exc, NenError) and exc.retryable)
    if retryable:
        if reschedule < settings.submit_reschedules:
            store.release_submit(run_id)
            delay = settings.reschedule_delay
            if isinstance(exc, NenAPIError) and exc.retry_after is not None:
                delay = min(60.0, max(delay, exc.retry_after))
            log.warning(
                "run %s: submit budget spent (%s); re-scheduling in %.0fs (%d/%d)",
                run_id,
                error.get("message"),
                delay,
                reschedule + 1,
                settings.submit_reschedules,
            )
            raise task.retry(kwargs={"reschedule": reschedule + 1}, countdown=delay, max_retries=None)
        _finish(run_id, Status.SUBMIT_FAILED, error, "submit:exhausted")
        return {"run_id": run_id, "status": Status.SUBMIT_FAILED.value}
    if isinstance(exc, NenError) and exc.maybe_sent:
        ctx.store.apply(run_id, Status.UNKNOWN, source="submit:ambiguous", error=error)
        log.error(
            "run %s: POST /runs fate unknown (%s); parked as unknown, not resent",
            run_id,
            error.get("message"),
        )
        return {"run_id": run_id, "status": Status.UNKNOWN.value}
    if isinstance(exc, NenAPIError) and 400 <= exc.status_code < 500:
        _finish(run_id, Status.REJECTED, error, f"nen:{exc.status_code}")
        return {"run_id": run_id, "status": Status.REJECTED.value}
    _finish(run_id, Status.SUBMIT_FAILED, error, "submit:error")
    return {"run_id": run_id, "status": Status.SUBMIT_FAILED.value}


def parse_webhook(raw: bytes) -> dict[str, Any]:
    """The webhook body as a dict with a str message_id and a known status, or ValueError."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError("body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("body is not a JSON object")
    if not isinstance(body.get("message_id"), str) or not body["message_id"]:
        raise ValueError("message_id missing or not a string")
    if body.get("status") not in WEBHOOK_STATUSES:
        raise ValueError(f"status must be one of {sorted(s.value for s in WEBHOOK_STATUSES)}")
    return body


@app.task(name="nen_celery.ingest_webhook", bind=True, max_retries=None)
def ingest_webhook(self: Task, sealed_body: str) -> dict[str, Any]:
    ctx = get_context()
    body = parse_webhook(ctx.sealer.open(sealed_body))
    message_id, status = body["message_id"], body["status"]
    run_id = ctx.store.find_or_park(message_id, sealed_body)
    if run_id is None:
        log.info("webhook %s for message %s parked: messageId not bound yet", status, message_id)
        return {"message_id": message_id, "status": status, "verdict": "parked"}
    verdict, now = apply_nen_status(run_id, body, source="webhook")
    log.info("run %s webhook %s: %s (now %s)", run_id, status, verdict, now)
    return {"run_id": run_id, "message_id": message_id, "verdict": verdict, "status": now}


@app.task(name="nen_celery.complete_run", bind=True, max_retries=None)
def complete_run(self: Task, run_id: str) -> dict[str, Any]:
    ctx = get_context()
    holder = str(self.request.id)
    verdict, _ = ctx.store.claim_completion(run_id, holder)
    if verdict != "claimed":
        # busy: another complete_run holds the claim; its message is redelivered if it dies.
        return {"run_id": run_id, "verdict": verdict}
    run = ctx.store.get(run_id)
    assert run is not None
    on_complete, on_failure = ctx.store.callbacks(run_id)
    sig = on_complete if run.status == Status.SUCCESS else on_failure
    task_id = ""
    if sig is not None:
        task_id = callback_task_id(run_id, run.status)
        try:
            signature(sig, app=app).apply_async(
                args=(run.to_dict(),), task_id=task_id, argsrepr=_repr(run_id, status=run.status)
            )
        except Exception as exc:
            ctx.store.release_completion(run_id, holder)
            log.error("run %s: callback not dispatched (%s); retrying", run_id, type(exc).__name__)
            raise self.retry(countdown=1.0, max_retries=None) from exc
    ctx.store.finish_completion(run_id, task_id)
    log.info("run %s completed %s; callback %s", run_id, run.status, sig["task"] if sig else None)
    return {"run_id": run_id, "status": run.status, "callback_task_id": task_id}


@app.task(name="nen_celery.poll_run", bind=True, max_retries=None)
def poll_run(self: Task, run_id: str) -> dict[str, Any]:
    """No-webhook mode: ask the retrieval endpoint until the run is terminal."""
    ctx = get_context()
    data = ctx.store.raw(run_id)
    if not data or is_terminal(data["status"]) or not data.get("message_id"):
        return {"run_id": run_id, "status": data.get("status") if data else "missing"}
    countdown = ctx.settings.poll_interval
    try:
        body = ctx.client.get_run(data["message_id"])
    except NenError as exc:
        log.warning("run %s: retrieval failed: %s", run_id, exc)
        if isinstance(exc, NenAPIError) and exc.retry_after is not None:
            countdown = min(60.0, max(countdown, exc.retry_after))
    else:
        if body.get("status") in WEBHOOK_STATUSES:
            body.setdefault("message_id", data["message_id"])
            _, now = apply_nen_status(run_id, body, source="poll")
            if is_terminal(now):
                return {"run_id": run_id, "status": now}
    if time.time() - float(data["created_at"]) > ctx.settings.retention_seconds:
        log.error("run %s: gave up polling after the retention period", run_id)
        return {"run_id": run_id, "status": data["status"]}
    raise self.retry(countdown=countdown, max_retries=None)
