"""``processing`` webhooks applied by the receiver itself: one ingest.lua call, no task.

Why: a ``processing`` webhook only moves its run's status forward; queueing ``ingest_webhook``
for it costs a whole Celery task (broker trips, the worker's main process, a pool process) to
run the same one script. Applied here, a run costs 3 tasks instead of 4. Only for a webhook
whose signature was verified and whose URL names its run with a valid token (hints.py);
ingest.lua checks the body's messageId against the run's (a stale hint is ignored) and keeps
the messageId of one that came before the run's binding, which bind.lua then applies, exactly
as when the task runs it. The receiver never binds a run: a webhook that would bind an
``unknown`` one (``BINDS``) is queued, and the ingest task binds it.

A terminal webhook ends its run here too (``BlockingApply.end``, the thread path): the same
script claims the run's completion for this receiver (a lease), and delivery.py publishes the
callback after the durability barrier, then marks it sent (completion.dispatch_here). Two
queue hops per run (submit, callback) instead of three.

``NEN_WEBHOOK_APPLY_PROCESSING=false`` queues every webhook, for deployments whose receiver
must not write run state. If the run store fails or is slow, the webhook is queued instead.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from nen_celery import connections
from nen_celery.domain.hints import RunRef
from nen_celery.domain.status import is_terminal
from nen_celery.lifecycle.webhook import MISFITS, REUSED, log_hinted
from nen_celery.store.runs import RunStore
from nen_celery.store.scripts import IngestArgs, script_source
from nen_celery.web.answers import APPLIED, IGNORED, Answer

log = logging.getLogger("nen_celery.web")

# a barrier to wait for after an apply that wrote (delivery.py: one that could not be probed)
After = Callable[[], None]

# ingest.lua keeps only the messageId of a processing webhook that came before the binding, never
# its body: nothing is sealed for it
_NO_BODY = ""

# ingest.lua's verdict for a webhook that would bind an `unknown` run: queued for the ingest task,
# which claims the messageId index first (RunStore.ingest). A hint of another record of the run id
# (REUSED) is queued the same way: the ingest task looks its messageId up.
BINDS = "unbound"


def _queue_or(verdict: str) -> str:
    return BINDS if verdict == REUSED else verdict


def wanted(enabled: bool, parsed: dict[str, Any], hint: RunRef | None) -> bool:
    """Whether this verified webhook is applied here rather than queued."""
    return enabled and hint is not None and not is_terminal(str(parsed["status"]))


def answer_for(
    verdict: str, now: str, run_id: str, attempt: int, parsed: dict[str, Any], parked_status: int
) -> Answer:
    """The answer to Nen for ingest.lua's verdict, logged as ``ingest_webhook`` logs it."""
    log_hinted(log, verdict, now, run_id, attempt, str(parsed["status"]), str(parsed["message_id"]))
    if verdict in MISFITS:
        return IGNORED
    if verdict == "parked":
        return Answer(parked_status, {"status": "parked"})
    return APPLIED


def ends_here(enabled: bool, parsed: dict[str, Any], hint: RunRef | None) -> bool:
    """Whether this verified webhook ends its run here (the thread path) rather than queued."""
    return enabled and hint is not None and is_terminal(str(parsed["status"]))


@dataclass(frozen=True)
class Ended:
    """ingest.lua's verdict on a terminal webhook; ``data``: the run's record when this receiver
    claimed its completion (``holder``), for it to dispatch; empty otherwise."""

    verdict: str
    now: str
    holder: str = ""
    data: dict[str, str] = field(default_factory=dict)


class BlockingApply:
    """ingest.lua from a thread (Flask, Django, a clustered run store, terminal webhooks):
    ``apply(ref, parsed)`` -> (verdict, status now) for a ``processing`` webhook; ``end`` for a
    terminal one. ``after``: waited for after each call (raising fails the apply)."""

    def __init__(self, store: RunStore, after: After | None = None) -> None:
        self.store = store
        self.after = after

    def __call__(self, ref: RunRef, parsed: dict[str, Any]) -> tuple[str, str]:
        verdict, now, _, _ = self.store.ingest(ref, parsed, _NO_BODY, source="webhook", bind=False)
        if self.after is not None:
            self.after()
        return _queue_or(verdict), now

    def end(self, ref: RunRef, parsed: dict[str, Any], sealed_body: str) -> Ended:
        """Apply a terminal webhook and claim the completion it makes pending (or left behind
        by a receiver or task whose lease lapsed) for this call: one script."""
        holder = f"receiver-{uuid.uuid4().hex}"
        verdict, now, completion, data = self.store.ingest(
            ref, parsed, sealed_body, source="webhook", holder=holder, bind=False
        )
        if self.after is not None:
            self.after()
        return Ended(_queue_or(verdict), now, holder, data if completion == "claimed" else {})


def blocking(store: RunStore) -> BlockingApply:
    """The apply for the receiver's thread path."""
    return BlockingApply(store)


class AsyncApply:
    """ingest.lua from the event loop: one asyncio client and script per loop (a connection
    belongs to the loop that opened it), every call bounded by ``timeout``."""

    def __init__(self, store: RunStore, url: str, timeout: float) -> None:
        self.store = store
        self.url = url
        self.timeout = timeout
        self._scripts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncScript] = (
            weakref.WeakKeyDictionary()
        )

    def _script(self) -> AsyncScript:
        loop = asyncio.get_running_loop()
        script = self._scripts.get(loop)
        if script is None:
            client = aioredis.Redis.from_url(
                self.url,
                decode_responses=True,
                socket_connect_timeout=self.timeout,
                socket_timeout=None,  # a task per command otherwise; the deadline is below
            )
            script = self._scripts[loop] = client.register_script(script_source(IngestArgs.NAME))
        return script

    async def __call__(self, ref: RunRef, parsed: dict[str, Any]) -> tuple[str, str]:
        keys, args = self.store.ingest_args(ref, parsed, _NO_BODY, "webhook").call(self.store)
        async with asyncio.timeout(self.timeout):
            res = await self._script()(keys=keys, args=args)
        verdict, now, _, _ = RunStore.ingest_result(res)
        return _queue_or(verdict), now


def for_url(store: RunStore, url: str, timeout: float) -> AsyncApply | None:
    """An event-loop apply for a standalone Redis run store, else None (the thread path's)."""
    return AsyncApply(store, url, timeout) if connections.kind(url) == "standalone" else None
