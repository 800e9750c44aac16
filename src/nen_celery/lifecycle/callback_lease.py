"""One execution of a nen callback at a time, fenced (``CallbackTask``'s guard; step 4 of
completion.py's protocol).

Every callback message nen dispatches carries ``nen_callback: "<run_id>|<attempt>"``. Its
execution claims a lease in Redis for that run and attempt (callback_lease.lua; a member of a
group callback: for its place in the group) before the user's code runs, renews it while it runs
and marks the callback done at its end. Each claim takes a fence token, greater than every
earlier claim's: ``request.nen_fence``. An execution paused past its lease (SIGSTOP, a GC pause)
while a redelivered copy claimed it learns so from ``CallbackTask.check_lease()`` (LeaseLost),
and only the latest claim can mark the callback done or drop the lease.

A copy that finds the lease busy, or the run-state Redis away, waits: it re-publishes itself
(same task id, headers and argument reprs, and the same ``retries``: the user's retry budget is
theirs alone) with a count of its own in the ``nen_waits`` header, as often as it takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import uuid
from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from nen_celery.errors import LeaseLost
from nen_celery.runtime.app import CALLBACK_HEADER, request_header
from nen_celery.runtime.context import get_context
from nen_celery.store.runs import RunStore

log = logging.getLogger("nen_celery.lifecycle")

WAITS_HEADER = "nen_waits"  # how many times this copy waited on the lease (never its retries)


@dataclasses.dataclass
class Lease:
    """The lease one execution holds: ``fence`` is its claim's token; ``lost`` is set once the
    heartbeat or a check found a later claim."""

    store: RunStore
    run_id: str
    key: str  # the attempt, or "<attempt>:g<index>" for a member of a group callback
    holder: str
    fence: int
    seconds: float
    lost: threading.Event = dataclasses.field(default_factory=threading.Event)

    def renew(self) -> int:
        """1 held, 2 taken back after a lapse nobody used, 0 lost (marked)."""
        held = self.store.renew_callback(self.run_id, self.key, self.holder, self.fence, self.seconds)
        if not held:
            self.lost.set()
        return held

    def check(self, sure: bool = True) -> int:
        """The fence token while this execution holds the lease; LeaseLost once it does not.
        ``sure``: ask Redis (a compare-and-set on the token that also renews the lease);
        otherwise only what the heartbeat saw. A RedisError when Redis cannot tell."""
        if sure and not self.lost.is_set():
            self.renew()
        if self.lost.is_set():
            raise LeaseLost(self.run_id, self.key, self.fence)
        return self.fence

    def release(self) -> None:
        """Drop the lease (the callback's own retry); a no-op unless this is the latest claim."""
        with contextlib.suppress(redis.RedisError):
            self.store.release_callback(self.run_id, self.key, self.holder, self.fence)


def lease_key(request: Any, attempt: str) -> str:
    """What the lease is keyed on besides the run: the attempt, and for a member of a group
    callback its place in the group (fixed by the dispatch, unlike its task id)."""
    index = getattr(request, "group_index", None)
    if getattr(request, "group", None) and index is not None:
        return f"{attempt}:g{int(index)}"
    return attempt


def run_callback_once(task: Task, mark: str, args: Any, kwargs: Any) -> Any:
    """Run the callback of the ``<run_id>|<attempt>`` in ``mark`` unless another execution
    holds it (wait) or one completed it (skip: Ignore, so that no result, link or chain step of
    the copy is sent). ``CallbackTask`` calls this."""
    run_id, _, attempt = mark.rpartition("|")
    store = get_context().store
    seconds = store.settings.callback_lease
    key = lease_key(task.request, attempt)
    holder = f"{task.request.id}/{uuid.uuid4().hex}"  # this execution, not the message
    try:
        verdict, fence = store.claim_callback(run_id, key, holder, seconds)
    except redis.RedisError as exc:
        log.warning("callback %s of run %s: lease not claimed (%r); waiting", task.name, run_id, exc)
        raise wait(task, mark, seconds / 2, exc) from exc
    name, task_id = task.name, task.request.id
    if verdict == "done":
        log.info(
            "callback %s[%s]: run %s attempt %s already completed its callback; skipped",
            name,
            task_id,
            run_id,
            key,
        )
        raise Ignore()
    if verdict != "claimed":  # busy: a live execution runs it; come back after half a lease
        log.info(
            "callback %s[%s]: run %s attempt %s is running in another execution; waiting",
            name,
            task_id,
            run_id,
            key,
        )
        raise wait(task, mark, seconds / 2)
    return _run_leased(task, Lease(store, run_id, key, holder, fence, seconds), args, kwargs)


def wait(task: Task, mark: str, countdown: float, exc: BaseException | None = None) -> Retry:
    """Publish this message again in ``countdown`` seconds, as it came (task id, headers,
    argument reprs, ``retries``), one more ``nen_waits``; the Retry to raise. Never counted
    against the task's max_retries, never capped. If the broker refuses, the message is
    rejected back to it (acks_late: redelivered) rather than lost."""
    request = task.request
    waits = int(request_header(request, WAITS_HEADER) or 0) + 1
    headers = {**(request.headers or {}), CALLBACK_HEADER: mark, WAITS_HEADER: waits}
    sig = task.signature_from_request(
        request,
        countdown=countdown,
        headers=headers,
        argsrepr=request.argsrepr,
        kwargsrepr=request.kwargsrepr,
    )
    try:
        sig.apply_async()
    except Exception as err:
        log.error(
            "callback %s[%s]: its wait not published (%s); requeued",
            task.name,
            request.id,
            type(err).__name__,
        )
        raise Reject(type(err).__name__, requeue=True) from None
    return Retry(f"waiting on the callback lease of run {mark} (wait {waits})", exc, when=countdown, sig=sig)


def _run_leased(task: Task, lease: Lease, args: Any, kwargs: Any) -> Any:
    """Run the claimed callback while a heartbeat renews its lease; then mark it done, or
    release the lease where a copy of the message must still run it."""
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(lease, stop), daemon=True, name=f"nen-callback-lease-{lease.run_id}"
    )
    beat.start()
    end: bool | None = True
    task.request.nen_lease = lease  # for check_lease and the callback's own retry
    task.request.nen_fence = lease.fence
    try:
        return task.run(*args, **kwargs)
    except LeaseLost as exc:
        end = None  # a later claim holds it: that execution decides its end
        log.warning("callback %s[%s]: %s; this execution stops", task.name, task.request.id, exc)
        raise Ignore() from None
    except Retry:
        end = False  # the callback asked for a retry: that execution must run it
        raise
    except Reject as exc:
        end = not exc.requeue
        raise
    except Exception:
        raise  # its end, as Celery does not retry it either
    except BaseException:
        end = False  # the worker is going away mid-callback: a redelivered copy may run it
        raise
    finally:
        stop.set()
        beat.join()
        if end is not None:
            _end(task, lease, end)


def _end(task: Task, lease: Lease, done: bool) -> None:
    """Mark the callback done (``done``) or drop the lease, both only by the latest claim."""
    try:
        if not done:
            lease.store.release_callback(lease.run_id, lease.key, lease.holder, lease.fence)
        elif not lease.store.finish_callback(lease.run_id, lease.key, lease.holder, lease.fence):
            log.warning(
                "callback %s of run %s ended after a later claim took its lease (fence %s): not marked done",
                task.name,
                lease.run_id,
                lease.fence,
            )
    except redis.RedisError as exc:  # the lease lapses on its own; done is not recorded
        log.error(
            "callback %s of run %s: lease not %s (%r)",
            task.name,
            lease.run_id,
            "finished" if done else "released",
            exc,
        )


def _heartbeat(lease: Lease, stop: threading.Event) -> None:
    """Renew the execution's lease every third of it until ``stop`` or its loss (marked on
    the lease, so that ``check_lease(sure=False)`` costs nothing)."""
    while not stop.wait(lease.seconds / 3):
        try:
            held = lease.renew()
        except Exception as exc:  # Redis away for a moment: the next beat tries again
            log.warning("callback of run %s: lease not renewed (%r)", lease.run_id, exc)
            continue
        if held == 2:
            log.warning(
                "callback of run %s attempt %s: its lease lapsed while it ran; taken back "
                "(no other execution claimed it)",
                lease.run_id,
                lease.key,
            )
        elif not held:
            log.warning(
                "callback of run %s attempt %s: its lease lapsed while it ran and a later "
                "execution claimed it (fence %s is stale)",
                lease.run_id,
                lease.key,
                lease.fence,
            )
            return
