"""Callbacks whose arguments do not fit their task: bounded retries, then the dead-letter list.

Celery checks a callback's arguments against its task's signature when it is sent (the
finished-run dict prepended to the signature's own args); a mismatch raises TypeError before
anything reaches the broker. ``start_run`` makes the same check when the task is registered in
the calling process (``callback_args.py``), so this is the case of a task known only in the
workers, or changed after the run started. Another deploy may bring back a task that fits, so
the dispatch is tried ``ARGUMENT_ATTEMPTS`` times in all (counted on the run record, whichever
task tried), ``ARGUMENT_BACKOFF`` seconds apart, doubling. Then the run's completion is marked
done (never dispatched again) and the run goes on the dead-letter list
``<NEN_KEY_PREFIX>:deadletter`` (newest first, the last ``DEADLETTER_MAX`` kept, expiring
``NEN_RETENTION_SECONDS`` after the latest entry), logged at ERROR and counted in
``nen_callbacks_dead_lettered_total{reason="arguments"}``; ``nen-celery deadletter list`` shows it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from nen_celery import observe
from nen_celery.domain.models import Run
from nen_celery.domain.status import Status
from nen_celery.errors import shown_text
from nen_celery.runtime.context import get_context

log = logging.getLogger("nen_celery.lifecycle.deadletter")

ARGUMENT_ATTEMPTS = 5  # dispatch attempts in all of a callback whose arguments do not fit
ARGUMENT_BACKOFF = 1.0  # seconds before the second attempt, doubling: 1, 2, 4, 8
ARGUMENT_BACKOFF_MAX = 60.0
DEADLETTER_MAX = 10_000  # entries kept on the list
REASON = "arguments"  # the metric's label, and each entry's kind


def argument_mismatch(
    run_id: str, run: Run, sig: dict[str, Any], exc: TypeError, holder: str
) -> float | None:
    """One failed dispatch of ``run``'s callback ``sig`` (its arguments do not fit): the countdown
    before the next attempt, or None once the attempts are spent, after the run was dead-lettered
    and its completion marked done (or when another worker already took the completion over)."""
    store = get_context().store
    attempts = store.note_callback_failure(run_id, run.redrives)
    which = "on_complete" if run.status == Status.SUCCESS else "on_failure"
    task_name = str(sig.get("task"))
    if attempts < 0:
        log.error("run %s: record gone while its callback %s was failing; dropped", run_id, task_name)
        return None
    if attempts < ARGUMENT_ATTEMPTS:
        delay = min(ARGUMENT_BACKOFF_MAX, ARGUMENT_BACKOFF * 2.0 ** (attempts - 1))
        log.warning(
            "run %s: %s task %s does not take these arguments (%s); attempt %d of %d, next in %.1fs",
            run_id,
            which,
            task_name,
            exc,
            attempts,
            ARGUMENT_ATTEMPTS,
            delay,
        )
        return delay
    if not store.finish_completion(run_id, "", holder, run.redrives):
        return None  # the claim lapsed and another worker holds the completion now
    entry = {
        "run_id": run_id,
        "workflow_id": run.workflow_id,
        "status": run.status,
        "attempt": run.redrives,
        "callback": which,
        "task": task_name,
        "kind": REASON,
        "reason": shown_text(f"arguments do not fit task {task_name}: {exc}"),
        "attempts": attempts,
        "at": time.time(),
    }
    store.add_dead_letter(entry, DEADLETTER_MAX)
    observe.callback_dead_lettered(run_id, REASON)
    log.error(
        "run %s: %s task %s dead-lettered after %d attempts, never dispatched: %s",
        run_id,
        which,
        task_name,
        attempts,
        entry["reason"],
    )
    return None
