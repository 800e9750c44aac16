"""nen's Celery tasks: thin entry points into the lifecycle. Each carries only ids in its
message and is safe to run twice.

submit_run     -> POST /runs (lifecycle/submit.py)
ingest_webhook -> applies one verified webhook (lifecycle/ingest.py)
complete_run   -> dispatches the caller's on_complete / on_failure once (lifecycle/completion.py)
poll_run       -> asks the retrieval endpoint once, for the sweep (lifecycle/retrieval.py)
lookup_run     -> resolves an `unknown` run by its Idempotency-Key (lifecycle/retrieval.py)
reconcile_runs -> the beat sweep over due timers (lifecycle/sweep.py)

Plain functions: ``install.register`` makes them tasks of the app nen is installed in (the
user's, or the ready-made one), so importing this module creates no Celery app.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from nen_celery.connections import REDIS_ERRORS
from nen_celery.domain.hints import RunRef
from nen_celery.lifecycle import completion, ingest, retrieval, submit, sweep

# Run-state Redis unreachable or still loading after a restart: retry the task through Celery
# (backoff capped at 30 s). If the broker is down too, the unacked message comes back after
# the visibility timeout instead.
RETRY_ON_REDIS: dict[str, Any] = {
    "autoretry_for": REDIS_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": None,
}


def submit_run(
    self: Task,
    run_id: str,
    reschedule: int = 0,
    accepted: dict[str, Any] | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    return submit.submit(self, run_id, reschedule, accepted, attempt)


def ingest_webhook(
    self: Task, sealed_body: str, run_id: str | None = None, attempt: int = 0, nonce: str = ""
) -> dict[str, Any]:
    """``run_id``/``attempt``/``nonce``: the run attempt the webhook's URL named (hints.py), if any."""
    return ingest.ingest(self, sealed_body, RunRef(run_id, attempt, nonce) if run_id is not None else None)


def complete_run(self: Task, run_id: str) -> dict[str, Any]:
    return completion.complete(self, run_id)


def poll_run(self: Task, run_id: str) -> dict[str, Any]:
    return retrieval.poll(self, run_id)


def lookup_run(self: Task, run_id: str) -> dict[str, Any]:
    return retrieval.lookup(self, run_id)


def reconcile_runs(self: Task) -> dict[str, int]:
    return sweep.sweep(self)


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
