"""The observer hook's cost per event call (issue 28, item 4): ns per call, best of 25 timeit
repeats of 50,000, for each event as its call site makes it. No Redis, no I/O: the Prometheus
registry of this process and the run-log context variable.

    PYTHONPATH=src python -m bench.observe_micro            # the hook: built-ins only, + one user observer
    PYTHONPATH=<e543f38>/src python -m bench.observe_micro --before   # the former call sites

``--before`` times what the call sites did before the hook (metrics.* and runlog.* called
directly), so it runs on the code of e543f38 (``git archive e543f38 src``), not on this one.
"""

from __future__ import annotations

import sys
import timeit
from typing import Any

NUMBER = 50_000
REPEAT = 25

BEFORE = {
    "webhook_answered": "metrics.webhook_answered(APPLIED.status_code, APPLIED.body, hint_refused=False)",
    "run_completed": "metrics.RUNS_COMPLETED.labels(status='success').inc(); "
    "metrics.WEBHOOK_TO_CALLBACK_SECONDS.observe(0.004)",
    "run_started": "metrics.RUNS_STARTED.inc()",
    "run_ids": "runlog.bind(run_id='r1')",
    "run_scope": "with runlog.bound(run_id='r1', message_id='m1', workflow_id=None): pass",
}
AFTER = {
    "webhook_answered": "observe.webhook_answered(APPLIED.status_code, APPLIED.word, False)",
    "run_completed": "observe.run_completed('r1', 'success', 0.004)",
    "run_started": "observe.run_started('r1', 'wf')",
    "run_ids": "observe.run_ids(run_id='r1')",
    "run_scope": "with observe.run_scope(run_id='r1', message_id='m1', workflow_id=None): pass",
}


def ns_per_call(statement: str, names: dict[str, Any]) -> float:
    return min(timeit.repeat(statement, globals=names, number=NUMBER, repeat=REPEAT)) / NUMBER * 1e9


def before() -> None:
    from nen_celery.logs import runlog
    from nen_celery.runtime import metrics
    from nen_celery.web.answers import APPLIED

    names = {"metrics": metrics, "runlog": runlog, "APPLIED": APPLIED}
    print("| event | former call site (ns) |\n|---|---|")
    for event, statement in BEFORE.items():
        print(f"| {event} | {ns_per_call(statement, names):.0f} |")


def after() -> None:
    from nen_celery import Observer, observe
    from nen_celery.web.answers import APPLIED

    class Nothing(Observer):
        """A user observer of every event measured, doing nothing."""

        def webhook_answered(self, status_code: int, answer: str, hint_refused: bool) -> None:
            pass

        def run_completed(self, run_id: str, status: str, webhook_to_callback_seconds: float | None) -> None:
            pass

        def run_started(self, run_id: str, workflow_id: str) -> None:
            pass

        def run_ids(self, run_id: str | None, message_id: str | None, workflow_id: str | None) -> None:
            pass  # the default run_scope calls it: the scope is measured with it too

    names = {"observe": observe, "APPLIED": APPLIED}
    builtin = {event: ns_per_call(statement, names) for event, statement in AFTER.items()}
    with observe.observing(Nothing()):
        added = {event: ns_per_call(statement, names) for event, statement in AFTER.items()}
    print("| event | the hook, built-ins only (ns) | + one user observer (ns) |\n|---|---|---|")
    for event in AFTER:
        print(f"| {event} | {builtin[event]:.0f} | {added[event]:.0f} |")


if __name__ == "__main__":
    before() if "--before" in sys.argv else after()
