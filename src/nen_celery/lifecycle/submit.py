"""Submitting a run: POST /runs once per run, never twice when its fate is unknown.

A submit takes the run's lease and marks its first POST as possibly sent in one script
(claim_submit.lua), marks each later POST before it is sent (begin_post.lua, through the
client's AttemptHooks), and binds Nen's messageId on a 202. Whatever proves a POST was not sent
uncounts it (post_not_sent.lua). An answer that leaves the POST's fate unknown parks the run as
``unknown``: it is never resent blindly; Nen's own word (a webhook, the lookup, or the sweep's
timeout) decides.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import redis
from celery import Task
from kombu.exceptions import OperationalError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from nen_celery import observe
from nen_celery.connections import REDIS_ERRORS
from nen_celery.domain.hints import url_with_run
from nen_celery.domain.status import Status
from nen_celery.errors import ConfigurationError, NenAPIError, NenError, redacting
from nen_celery.fastpath import direct_publish
from nen_celery.fastpath.direct_publish import DirectPublisher, Outgoing
from nen_celery.lifecycle.completion import apply_nen_status, end_run
from nen_celery.nen import ratelimit
from nen_celery.nen.client import Accepted, AttemptHooks, RunRequest
from nen_celery.nen.ratelimit import RateLimited
from nen_celery.runtime.app import current, nen_task, run_repr
from nen_celery.runtime.context import Context, get_context
from nen_celery.runtime.faults import failpoint
from nen_celery.settings import Settings
from nen_celery.store.runs import Claim

log = logging.getLogger("nen_celery.lifecycle")


def enqueue_submit(
    run_id: str, workflow_id: str, reschedule: int = 0, countdown: float | None = None
) -> None:
    """Queue submit_run through apply_async. With NEN_DIRECT_PUBLISH (opt-in), from the app
    (start_run, no countdown) with one LPUSH where the broker allows (direct_publish.py: the
    message apply_async would write; start_run's p50 went 1.21 -> 0.41 ms); inside a task
    always through apply_async, which links the message to its parent task."""
    kwargs = {"reschedule": reschedule}
    argsrepr = run_repr(run_id, workflow_id=workflow_id)
    publisher = submit_publisher() if countdown is None and current().current_worker_task is None else None
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


def submit_publisher() -> DirectPublisher | None:
    """This process's submit_run publisher, or None: apply_async (NEN_DIRECT_PUBLISH off, the
    default; celery/kombu outside the tested range, a failed self-check, or a broker / task
    configuration the direct path cannot reproduce)."""
    ctx = get_context()
    return direct_publish.cached_for_task(ctx, nen_task("submit_run"), ctx.settings.direct_publish)


def bind_accepted(
    run_id: str, message_id: str, accepted: dict[str, Any], attempt: int | None = None
) -> str:
    """Bind the messageId, then replay webhooks that arrived before it (kept, not lost).
    ``attempt``: the redrives the submit claimed (a 202 of an earlier attempt binds nothing)."""
    ctx = get_context()
    status, parked = ctx.store.bind(run_id, message_id, accepted, attempt=attempt)
    for sealed in parked:
        body = json.loads(ctx.sealer.open(sealed))
        if body.get("message_id") != message_id:
            continue  # kept with the run by a hint, but signed for another messageId: not ours
        _, status = apply_nen_status(run_id, body, source="webhook:parked")
    if parked:
        ctx.store.drop_parked(message_id)
    return status


def park_unknown(run_id: str, error: dict[str, Any], source: str) -> None:
    """Mark the POST's fate unknown, then replay the webhooks that named the run (hints.py)
    while it was still queued: from now on they bind it, and they say the POST landed."""
    store = get_context().store
    verdict, _, _ = store.apply(run_id, Status.UNKNOWN, source=source, error=error, expect=Status.QUEUED)
    if verdict != "applied":
        return
    # Once the run is unknown, ingest.lua binds instead of parking: this list can only shrink.
    hint, parked = store.take_run_parked(run_id)
    for sealed in parked:
        nen_task("ingest_webhook").apply_async(
            args=(sealed,), kwargs=hint._asdict(), argsrepr=run_repr(run_id)
        )


class LeaseLost(Exception):
    """Another execution of this run's submit holds the lease: this one must not send."""


class _StoreHooks(AttemptHooks):
    """The POST marks of one submit execution. ``counted``: its claim counted the first POST
    (claim_submit's ``mark_post``), so the first before_send does not count it again (the round
    trip begin_post took); until that before_send the POST surely has not left."""

    def __init__(self, run_id: str, execution: str, counted: bool = False) -> None:
        self.run_id = run_id
        self.execution = execution
        self.ctx = get_context()
        self.store = self.ctx.store
        self.counted = counted  # counted by the claim, not yet handed to the client's send

    def before_send(self) -> None:
        failpoint("submit:before_post")
        if self.counted:
            self.counted = False  # from here on the client tells when it surely did not leave
        else:
            attempt = self.store.begin_post(self.run_id, self.execution)
            if attempt == -2:
                raise LeaseLost(self.run_id)
            if attempt < 0:
                raise RuntimeError(f"run {self.run_id} left 'queued' while being submitted")
        try:
            # the POST mark durable before the POST: a crash must not forget a POST that went out
            self.ctx.durable()
        except Exception:
            # not sent: clear the mark (else the retry would park the run as unknown), then
            # let the task retry it as a Redis error (NotDurable is a redis TimeoutError)
            log.warning("run %s: its POST mark is not durable yet; not sent, retrying", self.run_id)
            self._withdraw()  # once: post_not_sent uncounts, so a retry could uncount twice
            raise

    def not_sent(self) -> None:
        self.store.post_not_sent(self.run_id, self.execution)

    @contextlib.contextmanager
    def first_post_unsent(self) -> Iterator[None]:
        """Around everything from the claim to the first before_send: if that was never reached
        (decrypting, building the request, a setting missing, the rate limiter's RateLimited),
        the first POST surely did not leave, so the claim's count is withdrawn as a connect
        error's is; else a redelivered copy would find it possibly sent and park the run."""
        try:
            yield
        finally:
            if self.counted:
                self.counted = False
                self._withdraw()

    def _withdraw(self) -> None:
        """Uncount a POST whose request was never made (``attempts`` too)."""
        with contextlib.suppress(*REDIS_ERRORS):  # else the mark stays: parked unknown, never resent
            self.store.post_not_sent(self.run_id, self.execution, tried=False)


def submit(
    task: Task,
    run_id: str,
    reschedule: int = 0,
    accepted: dict[str, Any] | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """submit_run: POST the run once, bind Nen's messageId, or end / park / re-schedule it."""
    ctx = get_context()
    if accepted is not None:
        # Nen accepted the run, then Redis failed before the binding was stored: bind now.
        status = bind_accepted(run_id, accepted["messageId"], accepted, attempt)
        return {"run_id": run_id, "status": status, "message_id": accepted["messageId"]}
    execution = uuid.uuid4().hex[:12]
    failpoint("submit:before_claim")
    lease, holder = ctx.settings.submit_lease, str(task.request.id)
    # The claim counts the first POST (one round trip less) unless a token may be waited for
    # between the two: a crash then would leave a POST never sent counted (parked unknown).
    mark_post = not ratelimit.limited(ctx.settings)
    claim = ctx.store.claim_submit(run_id, lease, holder, execution, mark_post=mark_post)
    unclaimed = _unclaimed(run_id, claim)
    if unclaimed is not None:
        return unclaimed
    hooks = _StoreHooks(run_id, execution, counted=claim.post_counted)
    try:
        with hooks.first_post_unsent():  # from the claim on: its count must not outlive a no-send
            observe.run_ids(workflow_id=claim.data.get("workflow_id"))
            answer = _send(ctx, run_id, claim, hooks)
    except LeaseLost:
        # This message was redelivered (a broker reconnect) and its new execution took over.
        log.warning("run %s: another execution of its submit took over; this one stops", run_id)
        return {"run_id": run_id, "status": "busy"}
    except RateLimited as exc:
        # Nen's shared request budget is spent for longer than a task may block: come back with
        # a countdown (<= 60 s). Not a failure, so it does not count as a re-schedule.
        ctx.store.release_submit(run_id, execution)
        raise task.retry(
            kwargs={"reschedule": reschedule}, countdown=exc.retry_in, max_retries=None
        ) from None
    except (NenError, ConfigurationError) as exc:
        return _submit_error(task, run_id, reschedule, exc, execution)
    if answer is None:
        return {"run_id": run_id, "status": Status.SUBMIT_FAILED.value}
    observe.run_accepted(run_id, answer.message_id)
    failpoint("submit:after_accept")
    return _bind_answer(task, run_id, reschedule, answer, int(claim.data.get("redrives") or 0))


def _unclaimed(run_id: str, claim: Claim) -> dict[str, Any] | None:
    """The task's result when the claim says this execution must not send; None to go on."""
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
        park_unknown(run_id, error, "submit:redelivered")
        log.error("run %s: a POST may be out from a worker that died; parked as unknown", run_id)
        return {"run_id": run_id, "status": Status.UNKNOWN.value}
    return None


def _send(ctx: Context, run_id: str, claim: Claim, hooks: _StoreHooks) -> Accepted | None:
    """POST the claimed run (retries inside the submit deadline); None if the run was ended
    instead because its sealed secure params are gone (the claim counted no POST then)."""
    data = claim.data  # read in the claim's own script: no further round trip
    secure = ctx.store.open_secure(claim.secure)
    if data.get("has_secure") == "1" and secure is None:
        error = {"type": "secure_params_missing", "message": "the run's encrypted secure params are gone"}
        end_run(run_id, Status.SUBMIT_FAILED, error, "submit", expect=Status.QUEUED)
        return None
    request = _request(ctx.settings, run_id, data, secure)
    started, outcome = time.monotonic(), "accepted"
    try:
        with redacting(secure.values() if secure else None):  # out of Nen's error texts
            return ctx.client.post_run(request, idempotency_key=data.get("idem_key") or run_id, hooks=hooks)
    except BaseException as exc:
        outcome = _outcome(exc)
        raise
    finally:
        observe.submit_finished(run_id, outcome, time.monotonic() - started)


def _request(
    settings: Settings, run_id: str, data: dict[str, str], secure: dict[str, str] | None
) -> RunRequest:
    """The POST's body: the webhook URL names the run (hints.py) so its webhooks find it."""
    webhook_url = settings.webhook_url and url_with_run(
        settings.webhook_url,
        settings.webhook_run_param,
        run_id,
        int(data.get("redrives") or 0),
        settings.hint_keys[0] if settings.hint_keys else None,
        data.get("nonce", ""),
    )
    return RunRequest(
        workflow_id=data["workflow_id"],
        params=json.loads(data.get("params") or "{}"),
        secure_params=secure,
        webhook_url=webhook_url,
    )


def _bind_answer(
    task: Task, run_id: str, reschedule: int, answer: Accepted, attempt: int
) -> dict[str, Any]:
    """Bind the accepted run's messageId; it exists only in this process until then, so a
    short Redis outage is ridden out here, a longer one by a retry that carries the answer
    (and the attempt it answers)."""
    try:
        status = _retrying_redis(lambda: bind_accepted(run_id, answer.message_id, answer.body, attempt))
    except REDIS_ERRORS:
        log.error(
            "run %s: accepted as %s but Redis is unreachable; retrying the binding",
            run_id,
            answer.message_id,
        )
        raise task.retry(
            kwargs={"reschedule": reschedule, "accepted": answer.body, "attempt": attempt},
            countdown=5,
            max_retries=None,
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
            return _end_or_park(run_id, Status.SUBMIT_FAILED, error, "submit:exhausted")
        # opted-in resends of an ambiguous answer, all spent: Nen may have it, so wait for its word
    if isinstance(exc, NenError) and exc.maybe_sent:
        park_unknown(run_id, error, "submit:ambiguous")
        log.error(
            "run %s: POST /runs fate unknown (%s); parked as unknown, not resent",
            run_id,
            error.get("message"),
        )
        return {"run_id": run_id, "status": Status.UNKNOWN.value}
    if isinstance(exc, NenAPIError) and 400 <= exc.status_code < 500:
        return _end_or_park(run_id, Status.REJECTED, error, f"nen:{exc.status_code}")
    return _end_or_park(run_id, Status.SUBMIT_FAILED, error, "submit:error")


def _end_or_park(run_id: str, status: Status, error: dict[str, Any], source: str) -> dict[str, Any]:
    """End the queued run as never started, unless an earlier POST of the attempt may have
    reached Nen (apply.lua answers maybe_sent while post_inflight counts one): then it waits for
    Nen's word as unknown. A later connect error or 4xx never makes an ambiguous POST look unsent."""
    if end_run(run_id, status, error, source, expect=Status.QUEUED) == Status.QUEUED:
        park_unknown(run_id, error, "submit:maybe_sent")
        log.error("run %s: an earlier POST /runs may have reached Nen; parked as unknown", run_id)
        return {"run_id": run_id, "status": Status.UNKNOWN.value}
    return {"run_id": run_id, "status": status.value}
