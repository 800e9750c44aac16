"""Observers for tests: one that writes down every event it hears, one that raises on each."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from nen_celery import Observer

Ids = tuple[str | None, str | None, str | None]


class Recorder(Observer):
    """Every event, as ``(event, *values)``, in the order heard (any thread)."""

    def __init__(self) -> None:
        self.heard: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def note(self, *event: Any) -> None:
        with self._lock:
            self.heard.append(event)

    def of(self, event: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [e[1:] for e in self.heard if e[0] == event]

    def run_started(self, run_id: str, workflow_id: str) -> None:
        self.note("run_started", run_id, workflow_id)

    def run_accepted(self, run_id: str, message_id: str) -> None:
        self.note("run_accepted", run_id, message_id)

    def submit_finished(self, run_id: str, outcome: str, seconds: float) -> None:
        self.note("submit_finished", run_id, outcome, seconds)

    def run_completed(self, run_id: str, status: str, webhook_to_callback_seconds: float | None) -> None:
        self.note("run_completed", run_id, status, webhook_to_callback_seconds)

    def webhook_answered(self, status_code: int, answer: str, hint_refused: bool) -> None:
        self.note("webhook_answered", status_code, answer, hint_refused)

    def webhook_refused(self, reason: str) -> None:
        self.note("webhook_refused", reason)

    def reconciled(self, counts: Mapping[str, int]) -> None:
        self.note("reconciled", dict(counts))

    def callback_dead_lettered(self, run_id: str, reason: str) -> None:
        self.note("callback_dead_lettered", run_id, reason)

    def late_webhook(self, run_id: str, status: str) -> None:
        self.note("late_webhook", run_id, status)

    def process_exited(self, pid: int) -> None:
        self.note("process_exited", pid)

    def run_ids(self, run_id: str | None, message_id: str | None, workflow_id: str | None) -> None:
        self.note("run_ids", run_id, message_id, workflow_id)

    def run_scope(
        self, run_id: str | None, message_id: str | None, workflow_id: str | None
    ) -> AbstractContextManager[None]:
        return self._scope((run_id, message_id, workflow_id))

    @contextlib.contextmanager
    def _scope(self, ids: Ids) -> Iterator[None]:
        self.note("run_scope", *ids)
        yield
        self.note("run_scope_end", *ids)


class Raising(Observer):
    """Raises on every event, a scope when it is opened."""

    def _boom(self, event: str) -> None:
        raise RuntimeError(f"observer boom on {event}")

    def run_started(self, run_id: str, workflow_id: str) -> None:
        self._boom("run_started")

    def run_accepted(self, run_id: str, message_id: str) -> None:
        self._boom("run_accepted")

    def submit_finished(self, run_id: str, outcome: str, seconds: float) -> None:
        self._boom("submit_finished")

    def run_completed(self, run_id: str, status: str, webhook_to_callback_seconds: float | None) -> None:
        self._boom("run_completed")

    def webhook_answered(self, status_code: int, answer: str, hint_refused: bool) -> None:
        self._boom("webhook_answered")

    def webhook_refused(self, reason: str) -> None:
        self._boom("webhook_refused")

    def reconciled(self, counts: Mapping[str, int]) -> None:
        self._boom("reconciled")

    def callback_dead_lettered(self, run_id: str, reason: str) -> None:
        self._boom("callback_dead_lettered")

    def late_webhook(self, run_id: str, status: str) -> None:
        self._boom("late_webhook")

    def process_exited(self, pid: int) -> None:
        self._boom("process_exited")

    def run_ids(self, run_id: str | None, message_id: str | None, workflow_id: str | None) -> None:
        self._boom("run_ids")

    def run_scope(
        self, run_id: str | None, message_id: str | None, workflow_id: str | None
    ) -> AbstractContextManager[None]:
        raise RuntimeError("observer boom on run_scope")
