"""The beat sweep (reconcile_runs): acts on due timers; the rules are reconcile.py's."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from typing import Any

from celery import Task

from nen_celery import observe
from nen_celery.domain.status import Status
from nen_celery.lifecycle import reconcile
from nen_celery.lifecycle.completion import end_run, enqueue_complete
from nen_celery.lifecycle.submit import enqueue_submit, park_unknown
from nen_celery.runtime.app import nen_task, run_repr
from nen_celery.runtime.context import get_context
from nen_celery.settings import Settings
from nen_celery.store.runs import RunStore

log = logging.getLogger("nen_celery.lifecycle")


def _timeout_error(data: dict[str, str], kind: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "message": message,
        "status": "failed",
        "message_id": data.get("message_id") or None,
        "workflow_id": data.get("workflow_id"),
    }


def sweep(task: Task) -> dict[str, int]:
    """One sweep over due timers. A lock with expiry makes a concurrent second sweep a no-op."""
    ctx = get_context()
    settings, store = ctx.settings, ctx.store
    token = str(uuid.uuid4())
    if not store.acquire_reconcile_lock(token, ttl=max(30.0, 3 * settings.reconcile_interval)):
        return {"locked": 1}
    counts: Counter[str] = Counter()
    try:
        now = store.clock.time()  # the run store's clock: the one every script wrote with
        _sweep_runs(store, settings, now, counts)
        _sweep_parked(store, settings, now, counts)
    finally:
        store.release_reconcile_lock(token)
    if counts:
        observe.reconciled(counts)
    # INFO only when the sweep acted on a run; waiting on timers and forgetting ended runs is
    # bookkeeping, at DEBUG (a guest's beat is quiet in the user's worker log)
    acted = any(action not in QUIET_ACTIONS for action in counts)
    log.log(logging.INFO if acted else logging.DEBUG, "reconcile: %s", dict(counts))
    return dict(counts)


# a timer whose run record cannot be read or acted on (counted in nen_reconcile_total)
BAD_ENTRY = "bad_entry"
BAD_ENTRY_RECHECK = 3600.0
# what a sweep counts without having done anything for a run
QUIET_ACTIONS = frozenset({reconcile.WAIT, reconcile.DROP, f"parked_{reconcile.WAIT}"})


def _sweep_runs(store: RunStore, settings: Settings, now: float, counts: Counter[str]) -> None:
    """Act on every run whose timer is due, then set each one's next check (or drop it)."""
    run_ids = store.due_runs(now, settings.reconcile_batch)
    timers: dict[str, float] = {}
    drop: list[str] = []
    for run_id, data in zip(run_ids, store.raw_many(run_ids), strict=True):
        if data is None:  # another type under its key (logged by the store): nothing to watch
            counts[BAD_ENTRY] += 1
            drop.append(run_id)
            continue
        try:
            decision = reconcile.decide(data, now, settings)
            _act(run_id, data, decision.action)
        except (ValueError, KeyError, TypeError) as exc:
            # one damaged record never stops the sweep: counted, logged, looked at again in an
            # hour (not dropped: a record ours could not read is still a run), and the rest go
            # on; a Redis error still fails the whole tick
            log.error("reconcile: skipped run %s (%s: %s); next look in 1 h", run_id, type(exc).__name__, exc)
            counts[BAD_ENTRY] += 1
            timers[run_id] = now + BAD_ENTRY_RECHECK
            continue
        counts[decision.action] += 1
        if decision.action == reconcile.DROP:
            drop.append(run_id)
        elif decision.next_check is not None:
            timers[run_id] = decision.next_check
    store.set_timers(timers, drop)


def _sweep_parked(store: RunStore, settings: Settings, now: float, counts: Counter[str]) -> None:
    """Replay webhooks parked under a messageId that is now bound; drop the oldest unbound."""
    timers: dict[str, float] = {}
    drop: list[str] = []
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
            drop.append(message_id)
        elif decision.next_check is not None:
            timers[message_id] = decision.next_check
    store.set_parked_timers(timers, drop)


def _act(run_id: str, data: dict[str, str], action: str) -> None:
    if action == reconcile.RESUBMIT:
        enqueue_submit(run_id, data["workflow_id"])
    elif action == reconcile.POLL:
        nen_task("poll_run").apply_async(args=(run_id,), argsrepr=run_repr(run_id))
    elif action == reconcile.LOOKUP:
        nen_task("lookup_run").apply_async(args=(run_id,), argsrepr=run_repr(run_id))
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
        end_run(run_id, Status.SUBMIT_FAILED, error, "reconcile:unknown_timeout", expect=Status.UNKNOWN)
    elif action == reconcile.TIMEOUT:
        if data.get("status") in (Status.QUEUED, Status.UNKNOWN):
            err = _timeout_error(data, "run_timeout", "Nen never accepted the run in time")
            err["status"] = Status.SUBMIT_FAILED.value
            now = end_run(run_id, Status.SUBMIT_FAILED, err, "reconcile:run_timeout", expect=data["status"])
            if now == Status.QUEUED:  # refused (maybe_sent): a POST may have reached Nen
                park_unknown(run_id, err, "reconcile:run_timeout")
        else:
            err = _timeout_error(data, "run_timeout", "no terminal status from Nen in time")
            end_run(run_id, Status.FAILED, err, "reconcile:run_timeout", expect=data.get("status"))
