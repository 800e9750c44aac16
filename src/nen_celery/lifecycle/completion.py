"""Exactly-once completion, in one place: a run's end is recorded once, and its callback is
dispatched once per attempt.

The protocol (Temporal's async completion: an outside event completes a pending step once):
1. a terminal status is applied atomically (``RunStore.apply`` / ``ingest``: ingest.lua, apply.lua);
   the first one marks the completion ``pending``, every later one is a no-op;
2. ``complete`` (task complete_run) or the hinted ingest path claims the completion with a lease
   (claim_completion.lua), so one worker at a time dispatches;
3. ``dispatch_completion`` waits until the claim is durable (store/durable.py), publishes the
   callback under a task id fixed per run, status and attempt (``callback_task_id``), then marks
   the completion ``sent`` (finish_completion.lua): nothing dispatches a sent callback again. A
   worker that dies between the broker taking the message and that mark lets the lease lapse;
   the sweep re-dispatches with the same task id;
4. ``run_callback_once`` (used by ``CallbackTask``; callback_lease.py) runs a redelivered copy
   of a callback message only if the first execution died: a renewed, fenced lease per run and
   attempt (callback_lease.lua).
The beat sweep (sweep.py) owns the timeouts: a pending completion nobody claimed is re-queued.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.canvas import signature
from celery.utils.saferepr import saferepr

from nen_celery import observe
from nen_celery.domain.models import Run
from nen_celery.domain.status import Status, is_terminal
from nen_celery.fastpath import direct_publish
from nen_celery.fastpath.direct_publish import DirectPublisher, Outgoing
from nen_celery.lifecycle.callback_args import callback_argsrepr
from nen_celery.lifecycle.deadletter import argument_mismatch
from nen_celery.lifecycle.webhook import RECEIVED_AT_HEADER
from nen_celery.runtime.app import CALLBACK_HEADER, current, nen_task, ready_made, request_header, run_repr
from nen_celery.runtime.context import get_context, per_context
from nen_celery.runtime.faults import failpoint
from nen_celery.store.runs import RunStore, callbacks

log = logging.getLogger("nen_celery.lifecycle")

CALLBACK_NAMESPACE = uuid.UUID("5b0f8f61-63a5-4a51-9a39-2f4c8c1a7e10")


def callback_task_id(run_id: str, status: str, attempt: int = 0) -> str:
    """Deterministic id of the user callback task of one attempt (redrive), so a re-dispatch
    after a crash carries the same id; each redrive attempt's callback has an id of its own."""
    name = f"{run_id}:{status}" if not attempt else f"{run_id}:{status}:{attempt}"
    return str(uuid.uuid5(CALLBACK_NAMESPACE, name))


def enqueue_complete(run_id: str, received_at: str | None = None) -> None:
    """``received_at``: when the receiver got the terminal webhook (for the latency metric)."""
    headers = {RECEIVED_AT_HEADER: received_at} if received_at else None
    nen_task("complete_run").apply_async(args=(run_id,), argsrepr=run_repr(run_id), headers=headers)


def end_run(
    run_id: str, status: Status, error: dict[str, Any], source: str, expect: str | None = None
) -> str:
    """End a run with an error of ours (rejected, submit_failed, timeouts) and fire on_failure.
    ``expect``: the status the decision to end it was taken on (compare-and-set: a run that
    moved since, e.g. a webhook bound it, is left as it is)."""
    store = get_context().store
    verdict, now, completion = store.apply(
        run_id, status, source=source, payload=error, error=error, expect=expect
    )
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
    message_id = str(body.get("message_id") or "")  # Nen's word is for that message's run only
    verdict, now, completion = store.apply(
        run_id, status, source=source, payload=payload, message_id=message_id
    )
    if completion == "pending":
        enqueue_complete(run_id, received_at)
    return verdict, now


def complete(task: Task, run_id: str) -> dict[str, Any]:
    """complete_run: claim the run's pending completion and dispatch its callback."""
    ctx = get_context()
    holder = str(task.request.id)
    claim = ctx.store.claim_completion(run_id, holder)
    if claim.verdict != "claimed":
        # busy: another complete_run holds the claim; its message is redelivered if it dies.
        return {"run_id": run_id, "verdict": claim.verdict}
    task_id = dispatch_completion(task, run_id, holder, claim.data)
    return {"run_id": run_id, "status": claim.data.get("status"), "callback_task_id": task_id}


@dataclass(frozen=True)
class Claimed:
    """A claimed completion, ready to dispatch: the run, its callback (None: none) and the
    callback's task id ('' without one)."""

    run_id: str
    holder: str
    run: Run
    sig: dict[str, Any] | None
    task_id: str


def claimed(store: RunStore, run_id: str, holder: str, data: dict[str, str]) -> Claimed:
    """The claim ``holder`` took, from the record that came back with it."""
    run = store.to_run(data)
    on_complete, on_failure = callbacks(data)
    sig = on_complete if run.status == Status.SUCCESS else on_failure
    task_id = callback_task_id(run_id, run.status, run.redrives) if sig is not None else ""
    return Claimed(run_id, holder, run, sig, task_id)


def publish_claimed(
    claim: Claimed, durable: Callable[[], None], options: dict[str, Any] | None = None
) -> None:
    """Wait for ``durable`` (the end and the claim must survive a crash before the callback says
    so), then publish the callback (nothing without one). Raises whatever stopped it: the
    caller releases the claim."""
    failpoint("complete:before_dispatch")
    sig, run = claim.sig, claim.run
    if sig is not None:
        finished = run.to_dict()
        # Flower shows the user's own arguments; of the run, only its ids and status
        argsrepr = callback_argsrepr(sig, finished)
        headers = {CALLBACK_HEADER: f"{claim.run_id}|{run.redrives}"}  # CallbackTask's guard
        durable()
        send_callback(sig, finished, claim.task_id, headers, argsrepr, options)
    failpoint("complete:after_dispatch")


def finish_claimed(store: RunStore, claim: Claimed, received_at: str | None) -> None:
    """Mark the completion sent (the broker has the callback), count it, log it.
    ``received_at``: when the receiver got the terminal webhook (the latency metric)."""
    store.finish_completion(claim.run_id, claim.task_id, claim.holder, claim.run.redrives)
    seconds = max(0.0, time.time() - float(received_at)) if received_at else None
    observe.run_completed(claim.run_id, claim.run.status, seconds)
    sig = claim.sig
    log.info("run %s completed %s; callback %s", claim.run_id, claim.run.status, sig["task"] if sig else None)


def dispatch_completion(task: Task, run_id: str, holder: str, data: dict[str, str]) -> str:
    """Send the claimed run's callback, then mark the completion sent; the callback's task id.

    Once the broker has the callback message the completion is marked sent and nothing
    dispatches it again, whatever becomes of it (the broker and the callback task's own
    acks_late / retries own it from there). The one window: a worker that dies between the
    broker taking the message and that mark; the claim's lease lapses and the callback is
    dispatched again, with the same task id (``callback_task_id``) for the user to dedupe on.
    """
    ctx = get_context()
    claim = claimed(ctx.store, run_id, holder, data)  # the record came back with the claim
    run, sig = claim.run, claim.sig
    observe.run_ids(message_id=run.message_id, workflow_id=run.workflow_id)
    try:
        publish_claimed(claim, ctx.durable)  # NotDurable: released below, retried
    except Exception as exc:
        countdown: float | None = 1.0
        if isinstance(exc, TypeError) and sig is not None:
            # its arguments do not fit the task: a few attempts, then the dead-letter list
            countdown = argument_mismatch(run_id, run, sig, exc, holder)
            if countdown is None:
                return ""  # dead-lettered: the completion is marked done
        ctx.store.release_completion(run_id, holder, run.redrives)
        log.error("run %s: callback not dispatched (%s); retrying", run_id, type(exc).__name__)
        raise task.retry(countdown=countdown, max_retries=None) from exc
    finish_claimed(ctx.store, claim, request_header(task.request, RECEIVED_AT_HEADER))
    return claim.task_id


def dispatch_here(
    store: RunStore, run_id: str, holder: str, data: dict[str, str], received_at: str, publish_timeout: float
) -> bool:
    """The receiver's dispatch of a completion it claimed with the terminal webhook that ended
    the run (web/decide.py), after its durability barrier: publish the callback through the
    app the receiver publishes through, then mark it sent. No worker hop.

    A callback whose task this process does not know (its task class may route it, time it,
    type-check it) or that could not be published is handed to complete_run instead, after
    releasing the claim. False when neither happened (the broker is down): the caller answers
    503 and Nen redelivers; the sweep re-queues complete_run meanwhile. A receiver that dies
    holding the claim leaves it to lapse: the sweep dispatches it then (reconcile.py)."""
    claim = claimed(store, run_id, holder, data)
    if claim.sig is not None and not registered(claim.sig):
        return _hand_over(store, claim, received_at, None)
    retry = {
        "max_retries": 2,
        "interval_start": 0.1,
        "interval_step": 0.2,
        "interval_max": publish_timeout / 2,
    }
    try:
        publish_claimed(claim, lambda: None, {"retry": True, "retry_policy": retry})  # the caller waited
    except Exception as exc:  # TypeError (the task dead-letters it after its attempts), broker down
        return _hand_over(store, claim, received_at, exc)
    try:
        finish_claimed(store, claim, received_at)
    except Exception as exc:  # the callback is out: after the lease the sweep sends it again, same id
        log.warning("run %s: callback sent, completion not marked sent (%s)", run_id, type(exc).__name__)
    return True


def registered(sig: dict[str, Any]) -> bool:
    """Whether the app this process publishes through has the callback's task, so that the
    message is the one a worker would publish (the task class's queue, options, type check)."""
    return str(sig.get("task")) in current().tasks


def _hand_over(store: RunStore, claim: Claimed, received_at: str, exc: BaseException | None) -> bool:
    """Release the claim and queue complete_run; False if neither the run store nor the broker
    could take that."""
    if exc is None:
        log.debug("run %s: callback task not registered here: complete_run", claim.run_id)
    else:
        log.warning(
            "run %s: callback not published here (%s: %s): complete_run",
            claim.run_id,
            type(exc).__name__,
            exc,
        )
    try:
        store.release_completion(claim.run_id, claim.holder, claim.run.redrives)
        enqueue_complete(claim.run_id, received_at)
    except Exception as again:  # the run store or the broker down: Nen redelivers, the sweep waits
        log.error("run %s: callback not dispatched nor queued (%s)", claim.run_id, type(again).__name__)
        return False
    return True


def send_callback(
    sig: dict[str, Any],
    run: dict[str, Any],
    task_id: str,
    headers: dict[str, str],
    argsrepr: str,
    options: dict[str, Any] | None = None,
) -> None:
    """``signature(sig).apply_async(args=(run,), ...)`` through the current app: the callback
    may be a task of any app the workers load, or only a name. On the ready-made app, with one
    LPUSH where that writes the same message (``direct_callback``). ``options``: more of
    apply_async's (the receiver bounds its publish retries to its answer budget)."""
    app = current()
    conf = app.conf
    kwargs = dict(sig.get("kwargs") or {})
    # as Celery would write it, given explicitly so both paths write the same message (the
    # setting is Celery 5.7's; 5.5 and 5.6 use 3 levels)
    kwargsrepr = saferepr(kwargs, app.amqp.kwargsrepr_maxsize, maxlevels=conf.get("task_repr_maxlevels", 3))
    direct = direct_callback(sig, app)
    if direct is None:
        # a kwargsrepr the caller set on the signature (to hide its kwargs) is kept
        shown = {} if "kwargsrepr" in (sig.get("options") or {}) else {"kwargsrepr": kwargsrepr}
        signature(sig, app=app).apply_async(
            args=(run,),
            task_id=task_id,
            headers=headers or None,
            argsrepr=argsrepr,
            **shown,
            **(options or {}),
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


def direct_callback(sig: dict[str, Any], app: Any = None) -> tuple[Task, DirectPublisher] | None:
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
