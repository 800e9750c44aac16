"""A stand-in for ``celery beat`` in a test: publishes nen's reconcile sweep on a short period,
through the app nen-celery publishes with (the user's, after ``init_celery``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nen_celery.runtime import app as app_state

if TYPE_CHECKING:
    from nen_celery.testing.stack import NenStack

PERIOD = 0.1


@contextmanager
def running_beat(stack: NenStack, period: float = PERIOD) -> Iterator[None]:
    task = app_state.nen_task("reconcile_runs")
    stop = threading.Event()

    def schedule() -> None:
        while not stop.wait(period):
            task.apply_async()

    thread = threading.Thread(target=schedule, name="nen-testing-beat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
