"""The task base classes: ``CallbackTask`` (an optional base for users' callbacks; the
ready-made app's task class) and ``NenTask`` (nen's own tasks, never the app's others)."""

from __future__ import annotations

import logging
import math
from typing import Any

from celery import Celery, Task

from nen_celery import observe
from nen_celery.logs import runlog
from nen_celery.runtime.app import (
    CALLBACK_HEADER,
    hidden_repr,
    is_amqp_url,
    request_header,
    with_default_queue,
)

log = logging.getLogger("nen_celery.celery")

_RUN_ID_TASKS = frozenset(
    f"nen_celery.{name}" for name in ("submit_run", "complete_run", "poll_run", "lookup_run")
)


class CallbackTask(Task):
    """An optional base class for your callbacks (``@app.task(base=CallbackTask)``); the
    ready-made app uses it for every task. It adds, to callback messages nen dispatched (their
    ``nen_callback`` header names the run and attempt), run in a worker:

    - one execution at a time per run and attempt: a lease in Redis (``NEN_CALLBACK_LEASE``,
      renewed by a heartbeat thread while the callback runs). A copy of the message (a broker
      redelivery while the callback still runs) waits (comes back every half lease, as often as
      it takes, never counted in ``request.retries``) and then runs only if the first died
      before the end, or is skipped (Ignore) once the callback completed;
    - fencing: ``self.request.nen_fence`` is the execution's fence token, a number greater than
      that of every earlier execution of the callback; pass it to your side effects as an
      idempotency / fencing key. ``self.check_lease()`` raises ``nen_celery.errors.LeaseLost``
      once this execution lost its lease to a later one (it was paused past the lease);
    - retries that keep the argument reprs nen gave the callback message (the run's payload
      holds presigned URLs).

    Plain tasks are dispatched once per attempt as well; only the concurrency guard needs it.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.id is None or request.is_eager:  # called directly, or eagerly: as before
            return super().__call__(*args, **kwargs)
        mark = request_header(request, CALLBACK_HEADER)
        if mark is None:  # not a callback message of nen's
            return self.run(*args, **kwargs)
        # imported here so that `import nen_celery` stays as light as it was (no run store,
        # no publishing machinery until a worker runs a callback)
        from nen_celery.lifecycle.callback_lease import run_callback_once

        return run_callback_once(self, mark, args, kwargs)

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Celery's retry, keeping what Flower and the logs are shown of the arguments.

        Celery rebuilds a retried message without ``argsrepr``/``kwargsrepr``, so the retry would
        show the raw arguments (a run's payload, Nen's 202 body). Kept: the message's own reprs while the
        arguments are unchanged; new arguments are shown by type, numbers and booleans as they are.
        """
        request = self.request
        if "argsrepr" not in options:
            options["argsrepr"] = request.argsrepr if args is None else hidden_repr(tuple(args))
        if "kwargsrepr" not in options:
            unchanged = kwargs is None and request.kwargsrepr is not None
            new = kwargs or request.kwargs or {}
            options["kwargsrepr"] = request.kwargsrepr if unchanged else hidden_repr(new)
        mark = request_header(request, CALLBACK_HEADER)
        if mark is not None and "headers" not in options:  # the retry stays guarded
            options["headers"] = {**(request.headers or {}), CALLBACK_HEADER: mark}
        held = getattr(request, "nen_lease", None)
        if held is not None:  # free the lease before the retried message can be taken
            held.release()
        try:
            return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)
        except self.MaxRetriesExceededError as err:
            exceeded = err
        # Celery's message holds the raw arguments (a run's payload, presigned URLs) and lands
        # in the worker's ERROR log: the same message with the reprs; raised here, outside the
        # handler, so that it chains to the callback's own exception and not Celery's message
        shown = (
            f"Can't retry {self.name}[{request.id}] args:{options['argsrepr']} kwargs:{options['kwargsrepr']}"
        )
        raise self.MaxRetriesExceededError(
            shown, task_args=exceeded.task_args, task_kwargs=exceeded.task_kwargs
        )

    def check_lease(self, sure: bool = True) -> int | None:
        """Before a side effect: this execution's fence token (``request.nen_fence``) while it
        holds the callback's lease; ``nen_celery.errors.LeaseLost`` once a later execution
        claimed it. ``sure`` (the default) asks Redis (a compare-and-set on the token, which
        also renews the lease); ``sure=False`` only reads what the heartbeat saw. None outside
        a guarded callback execution (no ``nen_callback`` header, called directly)."""
        lease = getattr(self.request, "nen_lease", None)
        return None if lease is None else int(lease.check(sure))


class NenTask(CallbackTask):
    """Base class of nen's own tasks, never of the app's other tasks.

    Adds nen's default queue (``with_default_queue``), whole-second countdowns where RabbitMQ's
    native delays need them and the run id on the task's log records (runlog).
    """

    def apply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        options = with_default_queue(self, args, kwargs, options)
        countdown = options.get("countdown")
        if countdown and countdown > 0 and countdown != int(countdown) and _native_delays(self.app):
            # Native delayed delivery counts whole seconds and refuses 0 < countdown < 1
            options["countdown"] = float(math.ceil(countdown))
        return super().apply_async(args, kwargs, task_id, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.id is None:  # called directly, not by a worker
            return super().__call__(*args, **kwargs)
        runlog.clear()  # a pool thread never lends one task's ids to the next
        if args and isinstance(args[0], str) and self.name in _RUN_ID_TASKS:
            observe.run_ids(run_id=args[0])
        try:
            return self.run(*args, **kwargs)
        finally:
            runlog.clear()


def _native_delays(app: Celery) -> bool:
    """Countdowns go through RabbitMQ's delay queues (quorum queues on an AMQP broker)."""
    return is_amqp_url(app.conf.broker_url) and any(
        (q.queue_arguments or {}).get("x-queue-type") == "quorum" for q in app.amqp.queues.values()
    )
