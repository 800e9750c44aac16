"""One redis.Redis per kombu Redis channel instead of one per command batch.

kombu's Redis channel builds a fresh ``redis.Redis`` in ``conn_or_acquire`` for every ack,
publish and fanout event. With redis-py 6+ each build copies its response-callback table, which
profiles showed as ~18% of a busy worker's CPU (bench/submit.py with -P threads). A Redis client
is safe to share between threads and greenlets (each command takes a pooled connection), so the
channel keeps one per connection pool. Installed by nen_celery.worker; a kombu without the hook
is left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

_ATTR = "_nen_shared_client"


def install() -> bool:
    """Patch kombu's Redis Channel once; False when this kombu has no such hook."""
    channel = getattr(kombu_redis, "Channel", None)
    original = getattr(channel, "conn_or_acquire", None)
    if channel is None or original is None or getattr(original, "_nen_shared", False):
        return False

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self.__dict__.get(_ATTR)
        pool = self.pool
        if shared is None or shared.connection_pool is not pool:  # a reconnect makes a new pool
            shared = self._create_client()
            self.__dict__[_ATTR] = shared
        yield shared

    conn_or_acquire._nen_shared = True  # type: ignore[attr-defined]
    channel.conn_or_acquire = conn_or_acquire
    return True
