"""The one owner of per-process resources built from the settings.

``get_context()``: the settings, the run-state Redis client, the sealer and the run store;
``per_context(name, ctx, build)``: anything else made from them (the Nen HTTP pool and rate
limiter, the receiver's short-timeout store, the direct publishers), made once per context.
A forked process gets a context of its own; ``install_overrides`` (Django / Flask settings)
drops the context, so every resource is rebuilt from the new settings on next use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from nen_celery.connections import redis_client
from nen_celery.nen.client import NenClient, new_http_client
from nen_celery.nen.ratelimit import new_limiter
from nen_celery.settings import Settings, get_settings, on_settings_change
from nen_celery.store.durable import Barrier, resolve
from nen_celery.store.runs import RunStore
from nen_celery.store.sealer import Sealer


@dataclass(frozen=True)
class Context:
    settings: Settings
    redis: redis.Redis
    sealer: Sealer
    store: RunStore

    @property
    def client(self) -> NenClient:
        """A client over this context's keep-alive pool and rate limiter."""
        http = per_context("nen_http", self, lambda: new_http_client(self.settings))
        limiter = per_context("nen_limiter", self, lambda: new_limiter(self.settings))
        return NenClient(self.settings, http, limiter=limiter)

    @property
    def barrier(self) -> Barrier:
        """NEN_DURABILITY resolved on this server: probed once per context (``auto``); a probe
        that cannot reach Redis raises and is tried again on the next use."""
        barrier: Barrier = per_context("durability", self, lambda: resolve(self.redis, self.settings))
        return barrier

    def durable(self) -> None:
        """Wait until every write this process saw acknowledged is durable (store/durable.py);
        NotDurable (a redis TimeoutError) if not within NEN_DURABILITY_TIMEOUT."""
        self.barrier.wait(self.redis)


_current: dict[int, Context] = {}
_lock = threading.Lock()


def get_context() -> Context:
    pid = os.getpid()
    ctx = _current.get(pid)
    if ctx is None:
        with _lock:
            ctx = _current.get(pid)
            if ctx is None:
                settings = get_settings()
                client = redis_client(
                    settings.redis_url,
                    decode_responses=True,
                    socket_connect_timeout=5,
                    socket_timeout=10,
                    health_check_interval=30,
                    retry_on_timeout=True,
                )
                sealer = Sealer.from_settings(settings)
                ctx = Context(settings, client, sealer, RunStore(client, settings, sealer))
                _current.clear()
                _current[pid] = ctx
    return ctx


_per_context: dict[str, tuple[object, Any]] = {}
_per_context_lock = threading.RLock()  # a build may need another value, or the context itself


def per_context(name: str, ctx: Context, build: Callable[[], Any]) -> Any:
    """``build()``'s value, made once per context (a forked process has a context of its own)."""
    cached = _per_context.get(name)
    if cached is None or cached[0] is not ctx:
        with _per_context_lock:
            cached = _per_context.get(name)
            if cached is None or cached[0] is not ctx:
                cached = _per_context[name] = (ctx, build())
    return cached[1]


def made_for(name: str, ctx: Context) -> Any:
    """The value ``per_context`` made for ``ctx`` under ``name``, or None if none was made yet
    (a caller that must not wait for a build, e.g. on an event loop)."""
    cached = _per_context.get(name)
    return cached[1] if cached is not None and cached[0] is ctx else None


def reset_context() -> None:
    """Drop the cached context (tests that change settings)."""
    with _lock:
        _current.clear()


on_settings_change(reset_context)  # install_overrides (Django/Flask settings) drops this cache
