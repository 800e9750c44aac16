"""Per-process singletons (settings, Redis, store, Nen client), rebuilt after fork."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis

from .client import NenClient
from .config import Settings, get_settings
from .connections import redis_client
from .crypto import Sealer
from .store import RunStore


@dataclass(frozen=True)
class Context:
    settings: Settings
    redis: redis.Redis
    sealer: Sealer
    store: RunStore

    @property
    def client(self) -> NenClient:
        return NenClient(self.settings)


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


def reset_context() -> None:
    """Drop the cached context (tests that change settings)."""
    with _lock:
        _current.clear()
