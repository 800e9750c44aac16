"""The two observers every process has: the Prometheus metrics and the run ids on log records.

They are nen's own state (its metric registry, its context variable), so having them is not a
change to the host process. They are called unguarded: a failure here is nen's bug, as it was
before the hook. Metric names, labels and help texts are runtime/metrics.py's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from nen_celery.logs import runlog
from nen_celery.observe.observer import Observer
from nen_celery.runtime import metrics


def webhook_result(status_code: int, answer: str, hint_refused: bool) -> str:
    """The ``result`` label of ``nen_webhooks``: taken in without its refused hint, the 200's
    status, ``parked``, or the error word (the status code if none)."""
    if hint_refused and status_code < 300:
        return "hint_refused"
    if status_code == 200:
        return answer or "queued"  # queued | applied | ignored | parked
    return answer or str(status_code)  # parked (202) or the error: invalid_signature, ...


class PrometheusMetrics(Observer):
    """The ``nen_*`` counters and histograms."""

    def __init__(self) -> None:
        # one labelled child per process and answer: labels() takes a lock and builds a tuple
        self._webhooks: dict[tuple[int, int, str, bool], Any] = {}

    def run_started(self, run_id: str, workflow_id: str) -> None:
        metrics.RUNS_STARTED.inc()

    def run_accepted(self, run_id: str, message_id: str) -> None:
        metrics.RUNS_ACCEPTED.inc()

    def submit_finished(self, run_id: str, outcome: str, seconds: float) -> None:
        metrics.SUBMIT_SECONDS.labels(outcome=outcome).observe(seconds)

    def run_completed(self, run_id: str, status: str, webhook_to_callback_seconds: float | None) -> None:
        metrics.RUNS_COMPLETED.labels(status=status).inc()
        if webhook_to_callback_seconds is not None:
            metrics.WEBHOOK_TO_CALLBACK_SECONDS.observe(webhook_to_callback_seconds)

    def webhook_answered(self, status_code: int, answer: str, hint_refused: bool) -> None:
        key = (os.getpid(), status_code, answer, hint_refused)
        child = self._webhooks.get(key)
        if child is None:
            result = webhook_result(status_code, answer, hint_refused)
            child = self._webhooks.setdefault(key, metrics.WEBHOOKS.labels(result=result))
        child.inc()

    def webhook_refused(self, reason: str) -> None:
        metrics.WEBHOOK_REFUSALS.labels(reason=reason).inc()

    def reconciled(self, counts: Mapping[str, int]) -> None:
        for action, n in counts.items():
            if action != "locked":
                metrics.RECONCILE_ACTIONS.labels(action=action).inc(n)

    def callback_dead_lettered(self, run_id: str, reason: str) -> None:
        metrics.CALLBACKS_DEAD_LETTERED.labels(reason=reason).inc()

    def late_webhook(self, run_id: str, status: str) -> None:
        metrics.LATE_WEBHOOKS.labels(status=status).inc()

    def process_exited(self, pid: int) -> None:
        """Tell the multiprocess files that a (prefork child) process is gone."""
        metrics.process_exited(pid)


class RunLogContext(Observer):
    """The ids ``RunIdFilter`` stamps on log records (logs/runlog.py)."""

    def run_ids(self, run_id: str | None, message_id: str | None, workflow_id: str | None) -> None:
        runlog.bind_ids(run_id, message_id, workflow_id)

    def run_scope(
        self, run_id: str | None, message_id: str | None, workflow_id: str | None
    ) -> AbstractContextManager[None]:
        return runlog.bound_ids(run_id, message_id, workflow_id)
