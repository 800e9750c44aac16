"""One observer hook for what happens to runs: metrics, the run-log ids, and yours.

``observe.run_completed(...)`` and its siblings are how nen's own code reports an event; each
goes once to the built-in observers (Prometheus metrics, run ids on log records) and to every
observer added with ``add_observer`` in this process. Importing this package adds none.
"""

from __future__ import annotations

from nen_celery.observe.hook import (
    EVENTS,
    add_observer,
    callback_dead_lettered,
    late_webhook,
    observers,
    observing,
    process_exited,
    reconciled,
    remove_observer,
    run_accepted,
    run_completed,
    run_ids,
    run_scope,
    run_started,
    submit_finished,
    webhook_answered,
    webhook_refused,
)
from nen_celery.observe.observer import Observer

__all__ = [
    "EVENTS",
    "Observer",
    "add_observer",
    "callback_dead_lettered",
    "late_webhook",
    "observers",
    "observing",
    "process_exited",
    "reconciled",
    "remove_observer",
    "run_accepted",
    "run_completed",
    "run_ids",
    "run_scope",
    "run_started",
    "submit_finished",
    "webhook_answered",
    "webhook_refused",
]
