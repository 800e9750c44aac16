"""A worker's task events sent in batches of up to 50 ms, whatever its pool.

Celery buffers task events only when the worker runs an event loop, and even then flushes at
the loop's next turn, so a busy threads worker sends a message of one to three events per task;
a gevent or eventlet worker (no loop: Celery's own source notes they "should actually buffer")
published task-received, task-started and task-succeeded one by one, a fifth of its CPU per
submit in bench/submit.py. This consumer step buffers the task events of every pool and sends
them 50 ms after the first one of a batch (or when Celery's 24-event buffer fills, and at
shutdown). Flower and `celery events` read such batches already: Celery's loop sends them.

Opt-in (``NEN_EVENT_BATCHES``, off by default): the ready-made app's workers add this step, and
it acts only when their consumer starts. Gated (fastpath.py): Celery outside the tested range
(fastpath.CELERY_TESTED), or an event dispatcher without ``buffer_group``, ``on_send_buffered``
and ``flush``, and it does nothing (Celery's own event sending) after one WARNING on the
``nen_celery.fastpath.gate`` logger.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import bootsteps

from nen_celery.fastpath import gate as fastpath

FLUSH_AFTER = 0.05  # seconds a task event may wait for others to join its batch


class EventBatches(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.events:Events",)
    active = False  # set once start() took over the dispatcher's buffering

    def start(self, c: Any) -> None:
        dispatcher = c.event_dispatcher
        if dispatcher is None:
            return
        ok, reason = fastpath.event_batches_ok(dispatcher)
        if not ok:
            fastpath.step_aside(fastpath.EVENT_BATCHES, "NEN_EVENT_BATCHES", reason)
            return
        hub = c.hub
        lock = threading.Lock()  # a greenlet lock once gevent has patched threading
        scheduled = [False]

        def flush() -> None:
            with lock:
                scheduled[0] = False
            dispatcher.flush()

        def on_buffered() -> None:
            """Called by whichever thread or greenlet sent the event."""
            with lock:
                if scheduled[0]:
                    return
                scheduled[0] = True
            if hub is None:
                c.timer.call_after(FLUSH_AFTER, flush)
            else:  # the loop's timer is the loop thread's own: ask that thread to set it
                hub.call_soon(hub.call_later, FLUSH_AFTER, flush)

        dispatcher.buffer_group = frozenset({"task"})
        dispatcher.on_send_buffered = on_buffered
        self.active = True

    def shutdown(self, c: Any) -> None:
        """Send what is buffered before the dispatcher closes (this step stops before it)."""
        dispatcher = c.event_dispatcher
        if self.active and dispatcher is not None and dispatcher.buffer_group:
            dispatcher.flush()
