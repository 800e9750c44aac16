"""The two drivers of a checked webhook's plan (decide.py): from a thread, and from the event loop.

Apart from ``decide`` because this is the part that does I/O (the run store, the broker). Both
drivers run the same plan, so they give the same answers; they differ only in how an effect is
done:

- ``deliver`` (Flask, Django, the ASGI app's thread pool): every effect blocking
  (``BlockingEffects``), on this process's receiver run store, publisher and barrier.
- ``deliver_async`` (the ASGI app): each effect with an event-loop implementation runs on the
  loop (``AsyncEffects``: ingest.lua through redis.asyncio, the barrier's wait, the direct
  publisher's LPUSH); at the first effect without one (a claimed completion's dispatch, which
  publishes through Celery's ``apply_async``; a messageId lookup; ``apply_async`` for the ingest
  message; a clustered or Sentinel run store; a barrier not probed yet), the rest of the plan
  goes to the blocking driver in one hop to the thread pool. A duplicate or stale terminal
  webhook is answered from the loop; only the one that claimed its run's completion hops.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nen_celery import observe
from nen_celery.domain import hints
from nen_celery.fastpath.direct_publish import DirectPublisher, Outgoing
from nen_celery.lifecycle.completion import dispatch_here
from nen_celery.lifecycle.webhook import RECEIVED_AT_HEADER
from nen_celery.runtime.app import nen_task
from nen_celery.runtime.context import per_context
from nen_celery.store.runs import RunStore
from nen_celery.store.sealer import Sealer
from nen_celery.web.answers import Answer
from nen_celery.web.apply import AsyncApply, BlockingApply
from nen_celery.web.decide import (
    Apply,
    Dispatch,
    Durable,
    Effect,
    End,
    Lookup,
    Plan,
    Probe,
    Publish,
    Release,
    Webhook,
    plan,
)
from nen_celery.web.resources import (
    Durability,
    async_apply,
    broker_is_run_store,
    direct_publisher,
    durability,
    durability_made,
    run_store,
)
from nen_celery.web.verify import run_hint

if TYPE_CHECKING:
    from nen_celery.runtime.context import Context

# starlette.concurrency.run_in_threadpool, or anything that runs ``func(*args)`` in a thread
ToThread = Callable[..., Awaitable[Any]]
# an effect done (blocking): its result, or it raises
Run = Callable[[Effect[Any]], Any]
# an effect as an awaitable on the event loop, or None: it has to block
Native = Callable[[Effect[Any]], Awaitable[Any] | None]


def ingest_message(
    sealer: Sealer,
    body: bytes,
    parsed: dict[str, Any],
    received_at: float | None,
    hint: hints.RunRef | None,
) -> Outgoing:
    """The ingest_webhook message for one verified webhook (its body sealed when a key is set)."""
    received_at = time.time() if received_at is None else received_at
    kwargs: dict[str, Any] = {}
    if hint:
        kwargs = {"run_id": hint.run_id, "attempt": hint.attempt}
        if hint.nonce:  # absent for a record made before records had one (hints.py)
            kwargs["nonce"] = hint.nonce
    return Outgoing(
        (sealer.seal_if_enabled(body),),
        kwargs,
        f"(message_id={parsed['message_id']!r}, status={parsed['status']!r})",
        repr(kwargs),
        {RECEIVED_AT_HEADER: repr(received_at)},
    )


def publish_with_celery(outgoing: Outgoing, publish_timeout: float, connection: Any = None) -> None:
    """``ingest_webhook.apply_async`` for brokers the direct publisher does not serve."""
    nen_task("ingest_webhook").apply_async(
        args=outgoing.args,
        kwargs=outgoing.kwargs,
        headers=outgoing.headers,
        argsrepr=outgoing.argsrepr,
        kwargsrepr=outgoing.kwargsrepr,
        retry=True,
        retry_policy={
            "max_retries": 2,
            "interval_start": 0.1,
            "interval_step": 0.2,
            "interval_max": publish_timeout / 2,
        },
        connection=connection,
    )


def _no_publisher() -> DirectPublisher | None:
    return None


def _no_barrier() -> Durability | None:
    return None


class BlockingEffects:
    """Every effect from a thread. ``publisher``: this process's direct publisher (None:
    ``apply_async``); ``barrier``: its durability barrier (None: none); both made on first use."""

    def __init__(
        self,
        store: RunStore,
        sealer: Sealer,
        publish_timeout: float,
        publisher: Callable[[], DirectPublisher | None] = _no_publisher,
        barrier: Callable[[], Durability | None] = _no_barrier,
    ) -> None:
        self.store = store
        self.applier = BlockingApply(store)
        self.sealer = sealer
        self.publish_timeout = publish_timeout
        self.publisher = publisher
        self.barrier = barrier

    def run(self, effect: Effect[Any]) -> Any:
        """Do ``effect``: its result, or whatever it raised."""
        match effect:
            case Apply(ref, parsed):
                return self.applier(ref, parsed)
            case End(ref, parsed, body):
                return self.applier.end(ref, parsed, self.sealer.seal_if_enabled(body))
            case Durable():
                made = self.barrier()  # the first call probes the server (NEN_DURABILITY=auto)
                if made is not None:
                    made.wait()
                return None
            case Probe():
                made = self.barrier()
                return made is not None and made.barrier.on
            case Publish(parsed, body, ref):
                outgoing = ingest_message(self.sealer, body, parsed, None, ref)
                publisher = self.publisher()  # one LPUSH, else apply_async
                if publisher is not None:
                    publisher.publish(outgoing)
                else:
                    publish_with_celery(outgoing, self.publish_timeout)
                return None
            case Lookup(message_id):
                return self.store.run_for_message(message_id) is not None
            case Dispatch(ref, holder, data, received_at):
                return dispatch_here(self.store, ref.run_id, holder, data, received_at, self.publish_timeout)
            case Release(ref, holder):
                self.store.release_completion(ref.run_id, holder, ref.attempt)
                return None
        raise TypeError(f"not an effect: {effect!r}")


class AsyncEffects:
    """The effects the event loop can do itself; ``native`` gives None for the others."""

    __slots__ = ("applier", "publisher", "sealer", "waiter")

    def __init__(
        self,
        applier: AsyncApply | None,
        made: Durability | None,
        publisher: DirectPublisher | None,
        sealer: Sealer,
    ) -> None:
        self.applier = applier  # None: a clustered or Sentinel run store
        self.waiter = made.waiter if made is not None else None  # None: not probed, or Sentinel
        self.publisher = publisher  # None: not made yet, or apply_async
        self.sealer = sealer

    def native(self, effect: Effect[Any]) -> Awaitable[Any] | None:
        """``effect`` as an awaitable on this loop, or None: it has to block."""
        match effect:
            case Apply(ref, parsed) if self.applier is not None:
                return self.applier(ref, parsed)
            case End(ref, parsed, body) if self.applier is not None:
                return self.applier.end(ref, parsed, self.sealer.seal_if_enabled(body))
            case Durable() if self.waiter is not None:
                return self.waiter()
            case Publish(parsed, body, ref) if self.publisher is not None:
                # NEN_PUBLISH_TIMEOUT per connect, 3 tries, all within twice that
                return self.publisher.apublish(ingest_message(self.sealer, body, parsed, None, ref))
        return None


def drive(plan: Plan, run: Run, pending: Effect[Any] | None = None) -> Answer:
    """Run ``plan`` to its answer, each effect by ``run`` (blocking); ``pending``: an effect it
    yielded before it was handed here, not done yet."""
    result: Any = None
    error: Exception | None = None
    effect = pending
    while True:
        if effect is not None:
            try:
                result, error = run(effect), None
            except Exception as exc:  # the plan decides what a failure means
                result, error = None, exc
        try:
            effect = plan.send(result) if error is None else plan.throw(error)
        except StopIteration as done:
            answer: Answer = done.value
            return answer


async def drive_async(plan: Plan, native: Native, run: Run, to_thread: ToThread) -> Answer:
    """Run ``plan`` on the loop while ``native`` gives its effects as awaitables; from the first
    it does not (None), the rest by ``drive`` with ``run`` in one ``to_thread`` hop (the plan is
    a generator: it resumes there)."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            effect = plan.send(result) if error is None else plan.throw(error)
        except StopIteration as done:
            answer: Answer = done.value
            return answer
        try:  # building the awaitable may fail too (sealing the body): the plan decides, as in drive
            awaitable = native(effect)
        except Exception as exc:
            result, error = None, exc
            continue
        if awaitable is None:
            handed: Answer = await to_thread(drive, plan, run, effect)
            return handed
        try:
            result, error = await awaitable, None
        except Exception as exc:  # a timeout, the run store or broker down: the plan decides
            result, error = None, exc


def checked(
    ctx: Context, body: bytes, parsed: dict[str, Any], query: str | bytes, made: Durability | None
) -> Webhook:
    """The plan's input for a webhook ``check`` passed; ``made``: the barrier, if probed yet."""
    settings = ctx.settings
    hint, refused = run_hint(settings, query)
    return Webhook(
        body,
        parsed,
        hint,
        refused,
        repr(time.time()),
        settings.webhook_apply_processing,
        made.barrier.on if made is not None else None,
        made.covers_broker if made is not None else broker_is_run_store(ctx),
        settings.webhook_parked_status,
    )


def blocking_effects(ctx: Context) -> BlockingEffects:
    """This process's ``BlockingEffects`` (the receiver's run store, publisher and barrier)."""

    def build() -> BlockingEffects:
        return BlockingEffects(
            run_store(ctx),
            ctx.sealer,
            ctx.settings.publish_timeout,
            functools.partial(direct_publisher, ctx),
            functools.partial(durability, ctx),
        )

    made: BlockingEffects = per_context("receiver_effects", ctx, build)
    return made


def deliver(ctx: Context, body: bytes, parsed: dict[str, Any], query: str | bytes = "") -> Answer:
    """The answer to a checked webhook, every effect from this thread (Flask, Django)."""
    webhook = checked(ctx, body, parsed, query, durability_made(ctx))
    with observe.run_scope(**webhook.log_ids()):
        return drive(plan(webhook), blocking_effects(ctx).run)


async def deliver_async(
    ctx: Context, body: bytes, parsed: dict[str, Any], query: str | bytes, to_thread: ToThread
) -> Answer:
    """The answer to a checked webhook from the event loop (the ASGI app); ``to_thread`` runs
    the rest of the plan in the thread pool from its first effect that has to block."""
    made = durability_made(ctx)
    webhook = checked(ctx, body, parsed, query, made)
    effects = AsyncEffects(async_apply(ctx), made, direct_publisher(ctx, create=False), ctx.sealer)
    with observe.run_scope(**webhook.log_ids()):
        # the blocking effects are looked up in the thread: their first use builds the run
        # store's client (a Redis Cluster's connects to its nodes), never on the loop
        def run(effect: Effect[Any]) -> Any:
            return blocking_effects(ctx).run(effect)

        return await drive_async(plan(webhook), effects.native, run, to_thread)
