"""``SimulatorState``: the runs, their timelines and the counters of one simulator.

Runs progress on asyncio timers, whatever the client or the receiver does, and their webhooks go out
over real HTTP, as Nen's would. The counters are what ``GET /_sim/stats`` shows and what tests wait on.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    from starlette.requests import Request

from nen_celery.simulator.config import FAULT_FIELDS, SimulatorConfig
from nen_celery.simulator.connection import wait_unless_gone
from nen_celery.simulator.control import ScriptedOutcome
from nen_celery.simulator.faults import FaultInjector
from nen_celery.simulator.log import logger
from nen_celery.simulator.runs import (
    ACCEPTED,
    FAILED,
    NO_IDEMPOTENCY_KEY,
    PROCESSING,
    SUCCESS,
    JSONDict,
    Run,
    RunRequest,
    run_payload,
)
from nen_celery.simulator.webhooks import WebhookDelivery

#: The plain counters of ``stats()``, in the order it shows them.
COUNTERS = (
    "idempotent_replays",
    "errors_injected",
    "dropped_connections",
    "bad_accept_bodies",
    "webhooks_attempted",
    "webhooks_sent",
    "webhooks_failed",
    "webhooks_dropped",
)


class SimulatorState:
    """All in-memory state of one simulator: runs, counters, fault plans and the delivery tasks.

    Mutated on the server's event loop; read from other threads (``SimulatorServer.stats``),
    hence every access goes through one condition, which also lets callers wait for a change.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.changed = threading.Condition()
        # What POST /_sim/reset puts the fault settings back to: the values we were started with.
        self._fault_defaults = {name: copy.deepcopy(getattr(config, name)) for name in FAULT_FIELDS}
        self._runs: dict[str, Run] = {}
        self._runs_by_key: dict[str, str] = {}  # Idempotency-Key -> messageId of its first run
        self._posts = 0
        self._accepted = 0
        self._posts_by_key: dict[str, int] = {}
        self._post_times: list[float] = []  # arrival (Unix time) of every POST /runs
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._deliveries: dict[str, list[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._outcomes: dict[str, ScriptedOutcome] = {}  # workflow id -> how its runs end
        self.faults = FaultInjector(config, self.count)
        self._webhooks = WebhookDelivery(config, self)

    # -- stats -------------------------------------------------------------

    def stats(self) -> JSONDict:
        """A snapshot, safe to keep and to read from any thread."""
        with self.changed:
            return self._stats_locked()

    def _stats_locked(self) -> JSONDict:
        return {
            "posts": self._posts,
            "accepted": self._accepted,
            "posts_by_idempotency_key": dict(self._posts_by_key),
            "post_times": list(self._post_times),
            **self._counts,
            "deliveries": {message_id: list(sent) for message_id, sent in self._deliveries.items()},
            "runs": {
                run.message_id: {
                    "workflow_id": run.workflow_id,
                    "status": run.status,
                    "idempotency_key": run.idempotency_key,
                    "posts": self._run_posts(run),
                }
                for run in self._runs.values()
            },
        }

    def _run_posts(self, run: Run) -> int:
        """POSTs that carried the run's Idempotency-Key (1 for a run created without one)."""
        if run.idempotency_key == NO_IDEMPOTENCY_KEY:
            return 1
        return self._posts_by_key.get(run.idempotency_key, 0)

    def wait_for(self, predicate: Callable[[JSONDict], bool], timeout: float) -> JSONDict:
        """Block until ``predicate(stats)`` holds; return those stats. TimeoutError past the deadline."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                snapshot = self._stats_locked()
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"simulator stats did not reach the condition in {timeout}s: {snapshot}"
                    )
                self.changed.wait(remaining)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (one of ``COUNTERS``) and wake the waiters."""
        with self.changed:
            self._counts[name] += n
            self.changed.notify_all()

    def record_post(self, idempotency_key: str) -> None:
        with self.changed:
            self._posts += 1
            self._posts_by_key[idempotency_key] = self._posts_by_key.get(idempotency_key, 0) + 1
            self._post_times.append(time.time())
            self.changed.notify_all()

    def record_replay(self) -> None:
        self.count("idempotent_replays")

    def record_delivered(self, message_id: str, status: str) -> None:
        with self.changed:
            self._counts["webhooks_sent"] += 1
            self._deliveries.setdefault(message_id, []).append(status)
            self.changed.notify_all()

    def run_payload(self, message_id: str) -> JSONDict | None:
        with self.changed:
            run = self._runs.get(message_id)
            return copy.deepcopy(run.payload) if run is not None else None

    def run_for_key(self, idempotency_key: str) -> Run | None:
        """The first run created by a POST carrying ``idempotency_key``, if any."""
        with self.changed:
            message_id = self._runs_by_key.get(idempotency_key)
            return self._runs.get(message_id) if message_id is not None else None

    def in_flight(self) -> int:
        """Run timelines and webhook deliveries still going (0: the simulator has nothing left to send)."""
        return len(self._tasks)

    # -- scripted outcomes (``/_sim/outcomes``) -------------------------------

    def set_outcome(self, workflow_id: str, outcome: ScriptedOutcome) -> None:
        """Runs of ``workflow_id`` accepted from now on end as ``outcome`` (until reset)."""
        with self.changed:
            self._outcomes[workflow_id] = outcome

    def outcomes(self) -> dict[str, ScriptedOutcome]:
        with self.changed:
            return dict(self._outcomes)

    def _terminal_payload(self, run: Run, status: str) -> JSONDict:
        """The body for ``status``, with the scripted ``result`` / ``error`` of the run's workflow."""
        payload = run_payload(run, status, self.config.result_ttl)
        with self.changed:
            outcome = self._outcomes.get(run.workflow_id)
        if outcome is not None and status == SUCCESS and outcome.result is not None:
            payload["result"] = copy.deepcopy(outcome.result)
        if outcome is not None and status == FAILED and outcome.error is not None:
            payload["error"] = copy.deepcopy(outcome.error)
        return payload

    # -- faults (decided on the event loop, by ``faults``) -------------------

    def reseed(self) -> None:
        """Restart the fault RNG from ``config.seed``."""
        self.faults.reseed()

    def _wake_event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    async def pause(self, seconds: float, request: Request) -> None:
        """Injected latency: wait ``seconds``, less if the client hangs up or the simulator is reset.

        Cutting the wait short changes nothing the client could see (nobody reads the answer any
        more), and keeps resets and shutdowns from waiting on a slow answer.
        """
        if seconds <= 0:
            return
        await wait_unless_gone(request, seconds, self._wake_event())

    # -- runs --------------------------------------------------------------

    def accept(self, request: RunRequest, idempotency_key: str) -> Run:
        """Store a new run and start its timeline on the running loop."""
        message_id = str(uuid.uuid4())
        never_terminal = self.config.never_terminal
        scripted = self.outcomes().get(request.workflow_id)
        failed = request.workflow_id in self.config.fail_workflows
        run = Run(
            message_id=message_id,
            workflow_id=request.workflow_id,
            idempotency_key=idempotency_key,
            callback_url=request.callback_url,
            outcome=scripted.status if scripted is not None else (FAILED if failed else SUCCESS),
            secure_param_keys=request.secure_param_keys,
            status=ACCEPTED,
            payload={},
            never_terminal=(
                never_terminal if isinstance(never_terminal, bool) else request.workflow_id in never_terminal
            ),
        )
        run.payload = run_payload(run, PROCESSING, self.config.result_ttl)
        with self.changed:
            self._runs[message_id] = run
            self._deliveries[message_id] = []
            if idempotency_key != NO_IDEMPOTENCY_KEY:
                self._runs_by_key.setdefault(idempotency_key, message_id)
            self._accepted += 1
            self.changed.notify_all()
        self._spawn(self._drive(run))
        return run

    def _transition(self, run: Run, status: str) -> bytes:
        """Move ``run`` to ``status``; return the webhook body, serialised once."""
        payload = self._terminal_payload(run, status)
        with self.changed:
            run.status = status
            run.payload = payload
            self.changed.notify_all()
        return json.dumps(payload, separators=(",", ":")).encode()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drive(self, run: Run) -> None:
        """processing after processing_delay, terminal after terminal_delay more.

        The state follows the timers whatever the receiver does; the terminal webhook only
        leaves once the processing one was delivered or given up, so it never overtakes it,
        unless ``webhook_reorder`` holds the processing webhook back until the terminal one is done.
        A ``never_terminal`` run stops after ``processing``.
        """
        processing: list[asyncio.Task[None]] = []
        try:
            await asyncio.sleep(self.config.processing_delay)
            processing_body = self._transition(run, PROCESSING)
            reorder = self.config.webhook_reorder
            if not reorder:
                processing = self._send_webhook(run, PROCESSING, processing_body)
            if run.never_terminal:
                if reorder:
                    processing = self._send_webhook(run, PROCESSING, processing_body)
                await asyncio.gather(*processing)
                return
            await asyncio.sleep(self.config.terminal_delay)
            body = self._transition(run, run.outcome)
            await asyncio.gather(*processing)
            await asyncio.gather(*self._send_webhook(run, run.outcome, body))
            if reorder:
                processing = self._send_webhook(run, PROCESSING, processing_body)
                await asyncio.gather(*processing)
        finally:
            for task in processing:
                task.cancel()

    def _send_webhook(self, run: Run, status: str, body: bytes) -> list[asyncio.Task[None]]:
        """Start the deliveries of one webhook: the original plus ``webhook_duplicates`` copies,
        concurrently, minus those ``webhook_drop`` / ``webhook_drop_rate`` swallow."""
        if run.callback_url is None:
            return []
        copies = 1 + self.config.webhook_duplicates
        if status in self.config.webhook_drop:
            kept = 0
        else:
            kept = sum(not self.faults.chance(self.config.webhook_drop_rate) for _ in range(copies))
        if kept < copies:
            logger.info(
                "webhook %s message=%s: %d of %d dropped", status, run.message_id, copies - kept, copies
            )
            self.count("webhooks_dropped", copies - kept)
        return [self._spawn(self._deliver(run, status, body)) for _ in range(kept)]

    async def _deliver(self, run: Run, status: str, body: bytes) -> None:
        """Deliver one webhook copy; a seam of its own, which bench/latency.py wraps to time deliveries."""
        await self._webhooks.deliver(run, status, body)

    # -- reset and shutdown --------------------------------------------------

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reset(self) -> None:
        """Forget every run, counter and scripted outcome; put the fault settings back to their start values.

        Pending deliveries are cancelled first; answers held back by injected latency go out now.
        """
        await self._cancel_tasks()
        if self._wake is not None:
            self._wake.set()
            self._wake = None
        for name, value in self._fault_defaults.items():
            setattr(self.config, name, copy.deepcopy(value))
        self.reseed()
        with self.changed:
            self._outcomes.clear()
            self._runs.clear()
            self._runs_by_key.clear()
            self._posts = 0
            self._accepted = 0
            self._posts_by_key.clear()
            self._post_times.clear()
            self._counts = dict.fromkeys(COUNTERS, 0)
            self._deliveries.clear()
            self.changed.notify_all()

    async def aclose(self) -> None:
        """Cancel pending deliveries and close the HTTP clients (server shutdown)."""
        await self._cancel_tasks()
        await self._webhooks.aclose()
