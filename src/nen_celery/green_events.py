"""Task events sent in batches by green workers (-P gevent, -P eventlet), as by the others.

Celery buffers a worker's task events and sends each batch as one message only when the worker
runs an event loop (prefork, threads, solo); its own source notes that gevent and eventlet
"should actually buffer". Without it a gevent worker publishes task-received, task-started
and task-succeeded one by one: a fifth of its CPU per submit in bench/submit.py. This consumer
step buffers them too and flushes the batch from the worker's timer a moment later (Flower and
`celery events` read batches already: that is what the other pools send).
"""

from __future__ import annotations

import threading
from typing import Any

from celery import bootsteps

FLUSH_AFTER = 0.05  # seconds a task event may wait for others to join its batch


class GreenEventBatches(bootsteps.StartStopStep):  # type: ignore[misc]
    requires = ("celery.worker.consumer.events:Events",)

    def start(self, c: Any) -> None:
        dispatcher = c.event_dispatcher
        if c.hub is not None or dispatcher is None or not getattr(c.pool, "is_green", False):
            return  # an event loop buffers already; no dispatcher, nothing to batch
        if dispatcher.buffer_group:
            return
        lock = threading.Lock()  # a greenlet lock once gevent has patched threading
        scheduled = [False]

        def flush() -> None:
            with lock:
                scheduled[0] = False
            dispatcher.flush()

        def on_buffered() -> None:
            with lock:
                if scheduled[0]:
                    return
                scheduled[0] = True
            c.timer.call_after(FLUSH_AFTER, flush)

        dispatcher.buffer_group = {"task"}
        dispatcher.on_send_buffered = on_buffered

    def shutdown(self, c: Any) -> None:
        """Send what is buffered before the dispatcher closes (this step stops before it)."""
        dispatcher = c.event_dispatcher
        if dispatcher is not None and dispatcher.buffer_group:
            dispatcher.flush()
