"""Webhooks applied by the receiver itself: one ingest.lua call, no task.

Why: a ``processing`` webhook only moves its run's status forward; queueing ``ingest_webhook``
for it costs a whole Celery task (broker trips, the worker's main process, a pool process) to
run the same one script. Only for a webhook whose signature was verified and whose URL names
its run with a valid token (hints.py); ingest.lua checks the body's messageId against the run's
(a stale hint is ignored) and keeps the messageId of one that came before the run's binding,
which bind.lua then applies, exactly as when the task runs it. The receiver never binds a run: a
webhook that would bind an ``unknown`` one (``BINDS``) is queued, and the ingest task binds it.

A terminal webhook ends its run here too (``end``): the same script claims the run's completion
for this receiver (a lease, ``Ended.holder``) when it makes it pending; decide.py then waits for
the durability barrier and dispatches the callback (completion.dispatch_here). Two queue hops
per run (submit, callback) instead of three.

Two implementations of the same calls: ``AsyncApply`` on the event loop (a standalone run
store), ``BlockingApply`` from a thread (any run store). decide.py says when to apply;
``NEN_WEBHOOK_APPLY_PROCESSING=false`` queues every webhook, for deployments whose receiver must
not write run state.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from nen_celery import connections
from nen_celery.domain.hints import RunRef
from nen_celery.lifecycle.webhook import REUSED
from nen_celery.store.runs import RunStore
from nen_celery.store.scripts import IngestArgs, script_source

# ingest.lua keeps only the messageId of a processing webhook that came before the binding, never
# its body: nothing is sealed for it
_NO_BODY = ""

# ingest.lua's verdict for a webhook that would bind an `unknown` run: queued for the ingest task,
# which claims the messageId index first (RunStore.ingest). A hint of another record of the run id
# (REUSED) is queued the same way: the ingest task looks its messageId up.
BINDS = "unbound"


def _queue_or(verdict: str) -> str:
    return BINDS if verdict == REUSED else verdict


@dataclass(frozen=True)
class Ended:
    """ingest.lua's verdict on a terminal webhook; ``data``: the run's record when this receiver
    claimed its completion (``holder``), for it to dispatch; empty otherwise."""

    verdict: str
    now: str
    holder: str = ""
    data: dict[str, str] = field(default_factory=dict)


def _holder() -> str:
    return f"receiver-{uuid.uuid4().hex}"


def _ended(res: tuple[str, str, str, dict[str, str]], holder: str) -> Ended:
    verdict, now, completion, data = res
    return Ended(_queue_or(verdict), now, holder, data if completion == "claimed" else {})


class BlockingApply:
    """ingest.lua from a thread (Flask, Django, a clustered or Sentinel run store): ``apply(ref,
    parsed)`` -> (verdict, status now) for a ``processing`` webhook; ``end`` for a terminal one."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def __call__(self, ref: RunRef, parsed: dict[str, Any]) -> tuple[str, str]:
        verdict, now, _, _ = self.store.ingest(ref, parsed, _NO_BODY, source="webhook", bind=False)
        return _queue_or(verdict), now

    def end(self, ref: RunRef, parsed: dict[str, Any], sealed_body: str) -> Ended:
        """Apply a terminal webhook and claim the completion it makes pending (or left behind
        by a receiver or task whose lease lapsed) for this call: one script."""
        holder = _holder()
        res = self.store.ingest(ref, parsed, sealed_body, source="webhook", holder=holder, bind=False)
        return _ended(res, holder)


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

    async def _ingest(
        self, ref: RunRef, parsed: dict[str, Any], sealed_body: str, holder: str = ""
    ) -> tuple[str, str, str, dict[str, str]]:
        keys, args = self.store.ingest_args(ref, parsed, sealed_body, "webhook", holder).call(self.store)
        async with asyncio.timeout(self.timeout):
            res = await self._script()(keys=keys, args=args)
        return RunStore.ingest_result(res)

    async def __call__(self, ref: RunRef, parsed: dict[str, Any]) -> tuple[str, str]:
        verdict, now, _, _ = await self._ingest(ref, parsed, _NO_BODY)
        return _queue_or(verdict), now

    async def end(self, ref: RunRef, parsed: dict[str, Any], sealed_body: str) -> Ended:
        """``BlockingApply.end`` on the event loop: applied, and the completion claimed with it."""
        holder = _holder()
        return _ended(await self._ingest(ref, parsed, sealed_body, holder), holder)


def for_url(store: RunStore, url: str, timeout: float) -> AsyncApply | None:
    """An event-loop apply for a standalone Redis run store, else None (``BlockingApply`` only)."""
    return AsyncApply(store, url, timeout) if connections.kind(url) == "standalone" else None
