"""What an observer hears: one method per lifecycle event nen reports (metrics, log ids, traces).

Subclass ``Observer`` and override the events you want; the rest stay no-ops and cost nothing
(the hook never calls a method you did not override). Events carry ids and small fixed values
(statuses, outcomes, reasons, seconds), never params, secure params or bodies. They are called
synchronously, in the process and thread that did the work (the app, a worker's pool, the
receiver), so an observer must be quick and thread-safe; one that raises is logged once per
event and ignored (``hook.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager


class Observer:
    """One named hook for cross-cutting behaviour (after dramatiq's middleware)."""

    def run_started(self, run_id: str, workflow_id: str) -> None:
        """``start_run`` validated, stored and queued a run (the calling process)."""

    def run_accepted(self, run_id: str, message_id: str) -> None:
        """Nen answered 202 to the run's POST /runs (``submit_run``)."""

    def submit_finished(self, run_id: str, outcome: str, seconds: float) -> None:
        """A POST /runs reached a final answer, retries and backoff included: ``outcome`` is
        ``accepted``, ``http_4xx``, ``http_5xx`` or an error type's name."""

    def run_completed(self, run_id: str, status: str, webhook_to_callback_seconds: float | None) -> None:
        """The run's completion was dispatched (its callback is with the broker), once per run
        attempt; ``webhook_to_callback_seconds``: since the receiver got the terminal webhook,
        None when no webhook ended the run (retrieval, rejection, timeout)."""

    def webhook_answered(self, status_code: int, answer: str, hint_refused: bool) -> None:
        """The receiver answered a webhook delivery: ``answer`` is the answer's status or error
        word (``applied``, ``queued``, ``ignored``, ``parked``, ``invalid_signature``, ...);
        ``hint_refused``: its URL named a run with a missing or wrong token."""

    def webhook_refused(self, reason: str) -> None:
        """The receiver refused a delivery, for the precise ``reason`` (web/refusals.py)."""

    def reconciled(self, counts: Mapping[str, int]) -> None:
        """One beat sweep acted: how many runs per action (``resubmit``, ``poll``, ...). Read only."""

    def callback_dead_lettered(self, run_id: str, reason: str) -> None:
        """A run's callback was never dispatched and went on the dead-letter list."""

    def late_webhook(self, run_id: str, status: str) -> None:
        """Nen reported ``status`` for a run that had ended ``submit_failed`` as "may have started
        in Nen": recorded on the run, no second callback."""

    def process_exited(self, pid: int) -> None:
        """A worker pool process is shutting down (Celery's ``worker_process_shutdown``)."""

    def run_ids(self, run_id: str | None, message_id: str | None, workflow_id: str | None) -> None:
        """The current context (a task, a webhook request) learned ids of the run it works on;
        None: not known here. A task's context starts empty: nen clears it between tasks."""

    def run_scope(
        self, run_id: str | None, message_id: str | None, workflow_id: str | None
    ) -> AbstractContextManager[None]:
        """The block that follows works on this run (a webhook's delivery); by default
        ``run_ids`` with nothing undone at its end. Override it to open and close a span."""
        self.run_ids(run_id, message_id, workflow_id)
        return contextlib.nullcontext()
