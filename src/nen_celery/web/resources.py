"""What the receiver keeps per process: its run store, ingest_webhook publisher, event-loop apply
and durability barrier.

Made once per process (and remade for a new context), never per webhook: each one costs
connections or a publisher self-check, and a webhook has 5 s for its answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nen_celery import connections
from nen_celery.connections import redis_client
from nen_celery.fastpath import direct_publish
from nen_celery.fastpath.direct_publish import DirectPublisher
from nen_celery.runtime.app import current, nen_task
from nen_celery.runtime.context import made_for, per_context
from nen_celery.store.durable import AsyncWaiter, Barrier, same_server
from nen_celery.store.runs import RunStore
from nen_celery.web import apply

if TYPE_CHECKING:
    from nen_celery.runtime.context import Context

Lookup = Callable[[str], "str | None"]


def run_lookup(ctx: Context) -> Lookup:
    """``RunStore.run_for_message`` over ``run_store``'s client."""
    return run_store(ctx).run_for_message


def run_store(ctx: Context) -> RunStore:
    """The receiver's run store: a Redis client whose timeouts fit Nen's 5 s answer budget.

    The process context's client waits up to 5 s to connect and retries on timeout; this one
    gives up after ``NEN_PUBLISH_TIMEOUT`` so a blackholed Redis cannot hold a webhook answer.
    """

    def build() -> RunStore:
        timeout = ctx.settings.publish_timeout
        client = redis_client(
            ctx.settings.redis_url,
            decode_responses=True,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
        )
        return RunStore(client, ctx.settings, ctx.sealer)

    store: RunStore = per_context("receiver_store", ctx, build)
    return store


def direct_publisher(ctx: Context, create: bool = True) -> DirectPublisher | None:
    """This process's ingest_webhook publisher (direct_publish.py, with
    NEN_WEBHOOK_DIRECT_PUBLISH), or None: apply_async. The first call makes it, with its
    self-check (a few broker round trips): the standalone receiver at start-up, a mounted one
    on its first webhook, in a thread. ``create=False`` (the event loop): only one made before."""
    return direct_publish.cached_for_task(
        ctx,
        nen_task("ingest_webhook"),
        ctx.settings.webhook_direct_publish,
        "NEN_WEBHOOK_DIRECT_PUBLISH",
        create=create,
    )


def async_apply(ctx: Context) -> apply.AsyncApply | None:
    """This process's event-loop apply (None: the run store is clustered); each call bounded by
    half of ``NEN_PUBLISH_TIMEOUT``, so with the queueing that follows a failure the answer
    stays within Nen's budget."""
    settings = ctx.settings
    applier: apply.AsyncApply | None = per_context(
        "apply", ctx, lambda: apply.for_url(ctx.store, settings.redis_url, settings.publish_timeout / 2)
    )
    return applier


@dataclass(frozen=True)
class Durability:
    """The receiver's barrier before a 2xx (store/durable.py), bounded to its answer budget."""

    barrier: Barrier
    client: Any  # the receiver's run-store client
    waiter: AsyncWaiter | None  # from the event loop; None: a Sentinel run store (thread path)
    covers_broker: bool  # the broker is the run store's server: a queued webhook waits too

    def wait(self) -> None:
        self.barrier.wait(self.client)


def durability(ctx: Context) -> Durability:
    """This process's barrier; the first call probes the server (blocking: a thread, or the
    standalone receiver's start; ``durability_made`` on the event loop)."""

    def build() -> Durability:
        settings = ctx.settings
        barrier = ctx.barrier.bounded(int(settings.publish_timeout * 750))
        standalone = connections.kind(settings.redis_url) == "standalone"
        waiter = AsyncWaiter(barrier, settings.redis_url, settings.publish_timeout) if standalone else None
        return Durability(barrier, run_store(ctx).redis, waiter, broker_is_run_store(ctx))

    built: Durability = per_context("receiver_durability", ctx, build)
    return built


def durability_made(ctx: Context) -> Durability | None:
    """The barrier ``durability`` made for ``ctx``, or None if not made yet (the event loop)."""
    made: Durability | None = made_for("receiver_durability", ctx)
    return made


def broker_is_run_store(ctx: Context) -> bool:
    """Whether the broker the receiver publishes to is the run store's Redis server."""
    return same_server(str(current().conf.broker_url or ctx.settings.broker), ctx.settings.redis_url)
