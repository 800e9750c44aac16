"""The Celery tasks. Each carries only ids in its message and is safe to run twice.

submit_run     -> POST /runs (retries inside a deadline, then re-schedules itself)
ingest_webhook -> applies one verified webhook; the first terminal status claims completion
complete_run   -> dispatches the caller's on_complete / on_failure signature once
poll_run       -> asks the retrieval endpoint once (queued by the reconcile sweep)
lookup_run     -> resolves an `unknown` run by its Idempotency-Key (NEN_LOOKUP_PATH)
reconcile_runs -> the beat sweep over due timers (see reconcile.py)

Plain functions: ``celery.install.register`` makes them tasks of the app nen is installed in (the
user's, or the ready-made one), so importing this module creates no Celery app. Everything
published from here goes through ``runtime.app.current()``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from typing import Any

import redis
from celery import Task
from celery.canvas import signature
from celery.utils.saferepr import saferepr
from kombu.exceptions import OperationalError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from nen_celery.domain.hints import url_with_run
from nen_celery.domain.status import WEBHOOK_STATUSES, Status, is_terminal
from nen_celery.errors import ConfigurationError, NenAPIError, NenError, redacting
from nen_celery.fastpath import direct_publish
from nen_celery.fastpath.direct_publish import DirectPublisher, Outgoing
from nen_celery.lifecycle import reconcile
from nen_celery.lifecycle.webhook import RECEIVED_AT_HEADER, log_hinted, parse_webhook
from nen_celery.logs import runlog
from nen_celery.nen.client import AttemptHooks, StartRunRequest
from nen_celery.nen.ratelimit import RateLimited
from nen_celery.runtime import metrics
from nen_celery.runtime.app import CALLBACK_HEADER, current, nen_task, ready_made, request_header
from nen_celery.runtime.context import get_context, per_context
from nen_celery.runtime.faults import failpoint
from nen_celery.store.runs import callbacks

log = logging.getLogger("nen_celery.celery.tasks")

# Run-state Redis unreachable or still loading after a restart: retry the task through Celery
# (backoff capped at 30 s). If the broker is down too, the unacked message comes back after
# the visibility timeout instead.
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
RETRY_ON_REDIS: dict[str, Any] = {
    "autoretry_for": REDIS_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": None,
}

CALLBACK_NAMESPACE = uuid.UUID("5b0f8f61-63a5-4a51-9a39-2f4c8c1a7e10")


def callback_task_id(run_id: str, status: str, attempt: int = 0) -> str:
    """Deterministic id of the user callback task of one attempt (redrive), so a re-dispatch
    after a crash carries the same id; each redrive attempt's callback has an id of its own."""
    name = f"{run_id}:{status}" if not attempt else f"{run_id}:{status}:{attempt}"
    return str(uuid.uuid5(CALLBACK_NAMESPACE, name))


def _repr(run_id: str, **extra: Any) -> str:
    parts = [f"run_id={run_id!r}"] + [f"{k}={v!r}" for k, v in extra.items()]
    return "(" + ", ".join(parts) + ")"


def enqueue_submit(
    run_id: str, workflow_id: str, reschedule: int = 0, countdown: float | None = None
) -> None:
    """Queue submit_run through apply_async. With NEN_DIRECT_PUBLISH (opt-in), from the app
    (start_run, no countdown) with one LPUSH where the broker allows (direct_publish.py: the
    message apply_async would write; start_run's p50 went 1.21 -> 0.41 ms); inside a task
    always through apply_async, which links the message to its parent task."""
    kwargs = {"reschedule": reschedule}
    argsrepr = _repr(run_id, workflow_id=workflow_id)
    publisher = _submit_publisher() if countdown is None and current().current_worker_task is None else None
    if publisher is not None:
        try:
            publisher.publish(Outgoing((run_id,), kwargs, argsrepr, repr(kwargs), {}))
        except (redis.RedisError, OSError) as exc:
            # what apply_async raises when the broker cannot take a message
            raise OperationalError(f"submit_run not queued: {type(exc).__name__}: {exc}") from exc
        return
    nen_task("submit_run").apply_async(
        args=(run_id,), kwargs=kwargs, countdown=countdown, argsrepr=argsrepr, kwargsrepr=repr(kwargs)
    )


def _submit_publisher() -> DirectPublisher | None:
    """This process's submit_run publisher, or None: apply_async (NEN_DIRECT_PUBLISH off, the
    default; celery/kombu outside the tested range, a failed self-check, or a broker / task
    configuration the direct path cannot reproduce)."""
    ctx = get_context()
    return direct_publish.cached_for_task(ctx, nen_task("submit_run"), ctx.settings.direct_publish)


def enqueue_complete(run_id: str, received_at: str | None = None) -> None:
    """``received_at``: when the receiver got the terminal webhook (for the latency metric)."""
    headers = {RECEIVED_AT_HEADER: received_at} if received_at else None
    nen_task("complete_run").apply_async(args=(run_id,), argsrepr=_repr(run_id), headers=headers)


def _finish(run_id: str, status: Status, error: dict[str, Any], source: str) -> str:
    """End a run with an error of ours (rejected, submit_failed, timeouts) and fire on_failure."""
    store = get_context().store
    verdict, now, completion = store.apply(run_id, status, source=source, payload=error, error=error)
    log.warning("run %s ended %s (%s): %s", run_id, now, verdict, error.get("message") or error.get("error"))
    if completion == "pending":
        enqueue_complete(run_id)
    return now


def apply_nen_status(
    run_id: str, body: dict[str, Any], source: str, received_at: str | None = None
) -> tuple[str, str]:
    """Apply a webhook/retrieval body to the run; dispatch completion if still pending."""
    store = get_context().store
    status = str(body["status"])
    payload = body if is_terminal(status) else None
    verdict, now, completion = store.apply(run_id, status, source=source, payload=payload)
    if completion == "pending":
        enqueue_complete(run_id, received_at)
    return verdict, now


def bind_accepted(run_id: str, message_id: str, accepted: dict[str, Any]) -> str:
    """Bind the messageId, then replay webhooks that arrived before it (kept, not lost)."""
    ctx = get_context()
    status, parked = ctx.store.bind(run_id, message_id, accepted)
    for sealed in parked:
        body = json.loads(ctx.sealer.open(sealed))
        if body.get("message_id") != message_id:
            continue  # kept with the run by a hint, but signed for another messageId: not ours
        _, status = apply_nen_status(run_id, body, source="webhook:parked")
    if parked:
        ctx.store.drop_parked(message_id)
    return status


def _park_unknown(run_id: str, error: dict[str, Any], source: str) -> None:
    """Mark the POST's fate unknown, then replay the webhooks that named the run (hints.py)
    while it was still queued: from now on they bind it, and they say the POST landed."""
    store = get_context().store
    verdict, _, _ = store.apply(run_id, Status.UNKNOWN, source=source, error=error)
    if verdict != "applied":
        return
    # Once the run is unknown, ingest.lua binds instead of parking: this list can only shrink.
    attempt, parked = store.take_run_parked(run_id)
    for sealed in parked:
        nen_task("ingest_webhook").apply_async(
            args=(sealed,), kwargs={"run_id": run_id, "attempt": attempt}, argsrepr=_repr(run_id)
        )


class LeaseLost(Exception):
    """Another execution of this run's submit holds the lease: this one must not send."""


class _StoreHooks(AttemptHooks):
    def __init__(self, run_id: str, execution: str) -> None:
        self.run_id = run_id
        self.execution = execution
        self.store = get_context().store

    def before_send(self) -> None:
        failpoint("submit:before_post")
        attempt = self.store.begin_post(self.run_id, self.execution)
        if attempt == -2:
            raise LeaseLost(self.run_id)
        if attempt < 0:
            raise RuntimeError(f"run {self.run_id} left 'queued' while being submitted")

    def not_sent(self) -> None:
        self.store.post_not_sent(self.run_id, self.execution)


def submit_run(
    self: Task, run_id: str, reschedule: int = 0, accepted: dict[str, Any] | None = None
) -> dict[str, Any]:
    ctx = get_context()
    settings, store = ctx.settings, ctx.store
    if accepted is not None:
        # Nen accepted the run, then Redis failed before the binding was stored: bind now.
        status = bind_accepted(run_id, accepted["messageId"], accepted)
        return {"run_id": run_id, "status": status, "message_id": accepted["messageId"]}
    execution = uuid.uuid4().hex[:12]
    claim = store.claim_submit(run_id, settings.submit_lease, str(self.request.id), execution)
    verdict, detail = claim.verdict, claim.detail
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
        _park_unknown(run_id, error, "submit:redelivered")
        log.error("run %s: a POST may be out from a worker that died; parked as unknown", run_id)
        return {"run_id": run_id, "status": Status.UNKNOWN.value}

    data = claim.data  # read in the claim's own script: no further round trip
    runlog.bind(workflow_id=data.get("workflow_id"))
    try:
        secure = store.open_secure(claim.secure)
        if data.get("has_secure") == "1" and secure is None:
            error = {
                "type": "secure_params_missing",
                "message": "the run's encrypted secure params are gone",
            }
            _finish(run_id, Status.SUBMIT_FAILED, error, "submit")
            return {"run_id": run_id, "status": Status.SUBMIT_FAILED.value}
        request = StartRunRequest(
            workflow_id=data["workflow_id"],
            params=json.loads(data.get("params") or "{}"),
            secure_params=secure,
            webhook_url=settings.webhook_url
            and url_with_run(
                settings.webhook_url,
                settings.webhook_run_param,
                run_id,
                int(data.get("redrives") or 0),
                settings.hint_keys[0] if settings.hint_keys else None,
            ),
        )
        idem_key = data.get("idem_key") or run_id
        started, outcome = time.monotonic(), "accepted"
        try:
            with redacting(secure.values() if secure else None):  # out of Nen's error texts
                answer = ctx.client.start_run(
                    request, idempotency_key=idem_key, hooks=_StoreHooks(run_id, execution)
                )
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            metrics.SUBMIT_SECONDS.labels(outcome=outcome).observe(time.monotonic() - started)
    except LeaseLost:
        # This message was redelivered (a broker reconnect) and its new execution took over.
        log.warning("run %s: another execution of its submit took over; this one stops", run_id)
        return {"run_id": run_id, "status": "busy"}
    except RateLimited as exc:
        # Nen's shared request budget is spent for longer than a task may block: come back with
        # a countdown (<= 60 s). Not a failure, so it does not count as a re-schedule.
        store.release_submit(run_id, execution)
        raise self.retry(
            kwargs={"reschedule": reschedule}, countdown=exc.retry_in, max_retries=None
        ) from None
    except (NenError, ConfigurationError) as exc:
        return _submit_error(self, run_id, reschedule, exc, execution)
    metrics.RUNS_ACCEPTED.inc()

    failpoint("submit:after_accept")
    try:
        # The messageId exists only in this process now: ride out a short Redis outage here.
        status = _retrying_redis(lambda: bind_accepted(run_id, answer.message_id, answer.body))
    except REDIS_ERRORS:
        log.error(
            "run %s: accepted as %s but Redis is unreachable; retrying the binding",
            run_id,
            answer.message_id,
        )
        raise self.retry(
            kwargs={"reschedule": reschedule, "accepted": answer.body}, countdown=5, max_retries=None
        ) from None
    log.info("run %s accepted by Nen as message %s", run_id, answer.message_id)
    return {"run_id": run_id, "status": status, "message_id": answer.message_id}


def _outcome(exc: BaseException) -> str:
    """A small fixed label for a failed submit: the HTTP status class or the error type."""
    if isinstance(exc, NenAPIError):
        return f"http_{exc.status_code // 100}xx"
    return type(exc).__name__


def _retrying_redis(fn: Any, budget: float = 30.0) -> Any:
    retrying = Retrying(
        retry=retry_if_exception_type(REDIS_ERRORS),
        stop=stop_after_delay(budget),
        wait=wait_exponential(multiplier=0.1, max=2),
        reraise=True,
    )
    return retrying(fn)


def _submit_error(task: Task, run_id: str, reschedule: int, exc: Exception, execution: str) -> dict[str, Any]:
    ctx = get_context()
    settings, store = ctx.settings, ctx.store
    error = exc.to_dict() if isinstance(exc, NenError) else {"type": type(exc).__name__, "message": str(exc)}
    retryable = isinstance(exc, ConfigurationError) or (isinstance(exc, NenError) and exc.retryable)
    if retryable:
        if reschedule < settings.submit_reschedules:
            store.release_submit(run_id, execution)
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
        if not (isinstance(exc, NenError) and exc.maybe_sent):  # the last answer proved "not created"
            _finish(run_id, Status.SUBMIT_FAILED, error, "submit:exhausted")
            return {"run_id": run_id, "status": Status.SUBMIT_FAILED.value}
        # opted-in resends of an ambiguous answer, all spent: Nen may have it, so wait for its word
    if isinstance(exc, NenError) and exc.maybe_sent:
        _park_unknown(run_id, error, "submit:ambiguous")
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


def ingest_webhook(
    self: Task, sealed_body: str, run_id: str | None = None, attempt: int = 0
) -> dict[str, Any]:
    """Apply one webhook. ``run_id``/``attempt``: the run its URL named (hints.py; the receiver
    checked the hint's token), if any."""
    ctx = get_context()
    body = parse_webhook(ctx.sealer.open(sealed_body))
    message_id, status = body["message_id"], body["status"]
    runlog.bind(message_id=message_id, workflow_id=body.get("workflow_id"))
    if run_id is not None:
        return _ingest_hinted(self, run_id, attempt, body, sealed_body)
    run_id = ctx.store.find_or_park(message_id, sealed_body)
    runlog.bind(run_id=run_id)
    if run_id is None:
        log.info("webhook %s for message %s parked: messageId not bound yet", status, message_id)
        return {"message_id": message_id, "status": status, "verdict": "parked"}
    failpoint("ingest:before_apply")
    received_at = request_header(self.request, RECEIVED_AT_HEADER)
    verdict, now = apply_nen_status(run_id, body, source="webhook", received_at=received_at)
    log.info("run %s webhook %s: %s (now %s)", run_id, status, verdict, now)
    return {"run_id": run_id, "message_id": message_id, "verdict": verdict, "status": now}


def _ingest_hinted(
    task: Task, run_id: str, attempt: int, body: dict[str, Any], sealed_body: str
) -> dict[str, Any]:
    """One script applies the webhook and, if it ended the run, claims the completion: the
    callback is dispatched from here, with no complete_run hop."""
    ctx = get_context()
    runlog.bind(run_id=run_id)
    message_id, status = body["message_id"], body["status"]
    failpoint("ingest:before_apply")
    holder = str(task.request.id)
    verdict, now, completion, data = ctx.store.ingest(
        run_id, attempt, body, sealed_body, source="webhook", holder=holder
    )
    result = {"run_id": run_id, "message_id": message_id, "verdict": verdict, "status": now}
    log_hinted(log, verdict, now, run_id, attempt, status, message_id)
    if completion == "claimed":
        result["callback_task_id"] = _dispatch_completion(task, run_id, holder, data)
    return result


def complete_run(self: Task, run_id: str) -> dict[str, Any]:
    ctx = get_context()
    holder = str(self.request.id)
    claim = ctx.store.claim_completion(run_id, holder)
    if claim.verdict != "claimed":
        # busy: another complete_run holds the claim; its message is redelivered if it dies.
        return {"run_id": run_id, "verdict": claim.verdict}
    task_id = _dispatch_completion(self, run_id, holder, claim.data)
    return {"run_id": run_id, "status": claim.data.get("status"), "callback_task_id": task_id}


def _dispatch_completion(task: Task, run_id: str, holder: str, data: dict[str, str]) -> str:
    """Send the claimed run's callback, then mark the completion sent; the callback's task id.

    Once the broker has the callback message the completion is marked sent and nothing
    dispatches it again, whatever becomes of it (the broker and the callback task's own
    acks_late / retries own it from there). The one window: a worker that dies between the
    broker taking the message and that mark; the claim's lease lapses and the callback is
    dispatched again, with the same task id (``callback_task_id``) for the user to dedupe on.
    """
    ctx = get_context()
    run = ctx.store.to_run(data)  # the record came back with the claim
    runlog.bind(message_id=run.message_id, workflow_id=run.workflow_id)
    on_complete, on_failure = callbacks(data)
    sig = on_complete if run.status == Status.SUCCESS else on_failure
    task_id = ""
    failpoint("complete:before_dispatch")
    if sig is not None:
        task_id = callback_task_id(run_id, run.status, run.redrives)
        try:
            argsrepr = _repr(run_id, status=run.status)
            headers = {CALLBACK_HEADER: f"{run_id}|{run.redrives}"}  # CallbackTask's guard
            _send_callback(sig, run.to_dict(), task_id, headers, argsrepr)
        except Exception as exc:
            countdown: float | None = 1.0
            if isinstance(exc, TypeError):
                # its arguments do not fit the task: a few attempts, then the dead-letter list
                from nen_celery.lifecycle.deadletter import argument_mismatch

                countdown = argument_mismatch(run_id, run, sig, exc)
                if countdown is None:
                    return ""  # dead-lettered: the completion is marked done
            ctx.store.release_completion(run_id, holder)
            log.error("run %s: callback not dispatched (%s); retrying", run_id, type(exc).__name__)
            raise task.retry(countdown=countdown, max_retries=None) from exc
    failpoint("complete:after_dispatch")
    ctx.store.finish_completion(run_id, task_id)
    metrics.RUNS_COMPLETED.labels(status=run.status).inc()
    received_at = request_header(task.request, RECEIVED_AT_HEADER)
    if received_at:
        metrics.WEBHOOK_TO_CALLBACK_SECONDS.observe(max(0.0, time.time() - float(received_at)))
    log.info("run %s completed %s; callback %s", run_id, run.status, sig["task"] if sig else None)
    return task_id


def _send_callback(
    sig: dict[str, Any], run: dict[str, Any], task_id: str, headers: dict[str, str], argsrepr: str
) -> None:
    """``signature(sig).apply_async(args=(run,), ...)`` through the current app: the callback
    may be a task of any app the workers load, or only a name. On the ready-made app, with one
    LPUSH where that writes the same message (``_direct_callback``)."""
    app = current()
    conf = app.conf
    kwargs = dict(sig.get("kwargs") or {})
    # as Celery would write it, given explicitly so both paths write the same message (the
    # setting is Celery 5.7's; 5.5 and 5.6 use 3 levels)
    kwargsrepr = saferepr(kwargs, app.amqp.kwargsrepr_maxsize, maxlevels=conf.get("task_repr_maxlevels", 3))
    direct = _direct_callback(sig, app)
    if direct is None:
        # a kwargsrepr the caller set on the signature (to hide its kwargs) is kept
        shown = {} if "kwargsrepr" in (sig.get("options") or {}) else {"kwargsrepr": kwargsrepr}
        signature(sig, app=app).apply_async(
            args=(run,), task_id=task_id, headers=headers or None, argsrepr=argsrepr, **shown
        )
        return
    task, publisher = direct
    args = (run, *(sig.get("args") or ()))
    if task.typing:  # apply_async's argument check: a TypeError here, not a failing message
        task.__header__(*args, **kwargs)
    parent = app.current_worker_task
    if parent is not None:
        request = parent.request
        headers = {**headers, "parent_id": request.id, "root_id": request.root_id or request.id}
    publisher.publish(Outgoing(args, kwargs, argsrepr, kwargsrepr, headers), task_id)
    if parent is not None and conf.result_backend:
        parent.add_trail(task.AsyncResult(task_id))  # the parent's result lists its children


def _direct_callback(sig: dict[str, Any], app: Any = None) -> tuple[Task, DirectPublisher] | None:
    """(task, publisher) when the callback's message can be pushed directly: NEN_DIRECT_PUBLISH
    on (off by default), the ready-made app (a user's own app is published through Celery,
    always), a plain signature (no options, not immutable, no canvas) of a task registered there
    whose class leaves apply_async as Celery's, on a route and broker direct_publish reproduces
    and whose self-check passed; else None."""
    ready = ready_made()
    if ready is None or (app if app is not None else current()) is not ready:
        return None
    app = ready
    if sig.get("options") or sig.get("immutable") or sig.get("subtask_type") or sig.get("chord_size"):
        return None
    name = str(sig.get("task"))
    ctx = get_context()

    def build() -> tuple[Task, DirectPublisher] | None:
        task = app.tasks.get(name)
        if task is None or not ctx.settings.direct_publish or app.conf.task_inherit_parent_priority:
            return None
        cls = type(task)
        if (
            cls.apply_async is not Task.apply_async
            or cls.shadow_name is not Task.shadow_name
            or cls.add_trail is not Task.add_trail
            or task.__v2_compat__
            or getattr(task, "_dump_pydantic_arguments", None) is not None
        ):
            log.info("callback %s is published through Celery: its task class changes apply_async", name)
            return None
        publisher = direct_publish.cached_for_task(ctx, task, True)
        return None if publisher is None else (task, publisher)

    direct: tuple[Task, DirectPublisher] | None = per_context(f"callback:{id(app)}:{name}", ctx, build)
    return direct


def poll_run(self: Task, run_id: str) -> dict[str, Any]:
    """Ask the retrieval endpoint once; the reconcile sweep decides when to ask again."""
    ctx = get_context()
    data = ctx.store.raw(run_id)
    if not data or is_terminal(data["status"]) or not data.get("message_id"):
        return {"run_id": run_id, "status": data.get("status") if data else "missing"}
    try:
        body = ctx.client.get_run(data["message_id"])
    except NenError as exc:
        log.warning("run %s: retrieval failed: %s", run_id, exc)
        return {"run_id": run_id, "status": data["status"], "error": type(exc).__name__}
    if body.get("status") not in WEBHOOK_STATUSES:
        log.warning("run %s: retrieval answered an unknown status", run_id)
        return {"run_id": run_id, "status": data["status"]}
    body.setdefault("message_id", data["message_id"])
    verdict, now = apply_nen_status(run_id, body, source="poll")
    return {"run_id": run_id, "status": now, "verdict": verdict}


def lookup_run(self: Task, run_id: str) -> dict[str, Any]:
    """Resolve an `unknown` run: did Nen get our POST? Asks NEN_LOOKUP_PATH by Idempotency-Key."""
    ctx = get_context()
    data = ctx.store.raw(run_id)
    if not data or data.get("status") != Status.UNKNOWN:
        return {"run_id": run_id, "status": data.get("status") if data else "missing"}
    try:
        body = ctx.client.lookup_run(data.get("idem_key") or run_id)
    except NenError as exc:
        log.warning("run %s: lookup failed: %s", run_id, exc)
        return {"run_id": run_id, "status": Status.UNKNOWN.value, "error": type(exc).__name__}
    if body is None:
        # Nen never saw it: the POST did not land, so sending it now starts the workflow once.
        log.info("run %s: Nen has no run for its key; resubmitting", run_id)
        ctx.store.redrive(run_id, force=True)  # Nen said it has none; keeps the Idempotency-Key
        enqueue_submit(run_id, data["workflow_id"])
        return {"run_id": run_id, "status": "resubmitted"}
    message_id = body.get("message_id") or body.get("messageId")
    if not isinstance(message_id, str):
        return {"run_id": run_id, "status": Status.UNKNOWN.value, "error": "no message_id"}
    status = bind_accepted(run_id, message_id, {"messageId": message_id, "via": "lookup"})
    if body.get("status") in WEBHOOK_STATUSES:
        _, status = apply_nen_status(run_id, {**body, "message_id": message_id}, source="lookup")
    return {"run_id": run_id, "status": status, "message_id": message_id}


def _timeout_error(data: dict[str, str], kind: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "message": message,
        "status": "failed",
        "message_id": data.get("message_id") or None,
        "workflow_id": data.get("workflow_id"),
    }


def reconcile_runs(self: Task) -> dict[str, int]:
    """One sweep over due timers. A lock with expiry makes a concurrent second sweep a no-op."""
    ctx = get_context()
    settings, store = ctx.settings, ctx.store
    token = str(uuid.uuid4())
    if not store.acquire_reconcile_lock(token, ttl=max(30.0, 3 * settings.reconcile_interval)):
        return {"locked": 1}
    counts: Counter[str] = Counter()
    try:
        now = time.time()
        run_ids = store.due_runs(now, settings.reconcile_batch)
        timers: dict[str, float] = {}
        drop: list[str] = []
        raws = store.raw_many(run_ids)
        for run_id, data in zip(run_ids, raws, strict=True):
            decision = reconcile.decide(data, now, settings)
            counts[decision.action] += 1
            _act(run_id, data, decision.action)
            if decision.action == reconcile.DROP:
                drop.append(run_id)
            elif decision.next_check is not None:
                timers[run_id] = decision.next_check
        store.set_timers(timers, drop)

        parked_timers: dict[str, float] = {}
        parked_drop: list[str] = []
        for message_id in store.due_parked(now, settings.reconcile_batch):
            bodies = store.parked(message_id)
            bound = store.run_for_message(message_id) is not None
            decision = reconcile.decide_parked(bound, len(bodies), now, settings)
            counts[f"parked_{decision.action}"] += 1
            if decision.action == "replay":
                for sealed in bodies:
                    nen_task("ingest_webhook").apply_async(
                        args=(sealed,), argsrepr=f"(message_id={message_id!r})"
                    )
                store.drop_parked(message_id)
            elif decision.action == reconcile.DROP:
                parked_drop.append(message_id)
            elif decision.next_check is not None:
                parked_timers[message_id] = decision.next_check
        store.set_parked_timers(parked_timers, parked_drop)
    finally:
        store.release_reconcile_lock(token)
    if counts:
        log.info("reconcile: %s", dict(counts))
        metrics.reconciled(counts)
    return dict(counts)


def _act(run_id: str, data: dict[str, str], action: str) -> None:
    if action == reconcile.RESUBMIT:
        enqueue_submit(run_id, data["workflow_id"])
    elif action == reconcile.POLL:
        nen_task("poll_run").apply_async(args=(run_id,), argsrepr=_repr(run_id))
    elif action == reconcile.LOOKUP:
        nen_task("lookup_run").apply_async(args=(run_id,), argsrepr=_repr(run_id))
    elif action == reconcile.COMPLETE:
        enqueue_complete(run_id)
    elif action == reconcile.EXPIRE_UNKNOWN:
        error = _timeout_error(
            data,
            "fate_unknown",
            "POST /runs got no usable answer and the run could not be found; it may have started "
            "in Nen. Check Nen, then redrive it if it did not.",
        )
        error["status"] = Status.SUBMIT_FAILED.value
        _finish(run_id, Status.SUBMIT_FAILED, error, "reconcile:unknown_timeout")
    elif action == reconcile.TIMEOUT:
        if data.get("status") in (Status.QUEUED, Status.UNKNOWN):
            err = _timeout_error(data, "run_timeout", "Nen never accepted the run in time")
            err["status"] = Status.SUBMIT_FAILED.value
            _finish(run_id, Status.SUBMIT_FAILED, err, "reconcile:run_timeout")
        else:
            err = _timeout_error(data, "run_timeout", "no terminal status from Nen in time")
            _finish(run_id, Status.FAILED, err, "reconcile:run_timeout")


# (function, task options) for install.register: every task binds (``self``), acks late and
# is rejected on worker loss; these add their retry policy.
DEFINITIONS: tuple[tuple[Any, dict[str, Any]], ...] = (
    (submit_run, {"name": "nen_celery.submit_run", **RETRY_ON_REDIS}),
    (ingest_webhook, {"name": "nen_celery.ingest_webhook", **RETRY_ON_REDIS}),
    (complete_run, {"name": "nen_celery.complete_run", **RETRY_ON_REDIS}),
    (poll_run, {"name": "nen_celery.poll_run", **RETRY_ON_REDIS}),
    (lookup_run, {"name": "nen_celery.lookup_run", **RETRY_ON_REDIS}),
    (reconcile_runs, {"name": "nen_celery.reconcile_runs", "max_retries": 0}),
)
