"""Two patches to kombu's Redis transport: opt-in (``NEN_PATCH_KOMBU_REDIS``, off by default),
installed once at a worker's start (celery.install.NenWorkerStep), never on import or init_celery.

One redis.Redis per kombu Redis channel instead of one per command batch: kombu's Redis channel
builds a fresh ``redis.Redis`` in ``conn_or_acquire`` for every ack,
publish and fanout event. With redis-py 6+ each build copies its response-callback table, which
profiles showed as ~18% of a busy worker's CPU (bench/submit.py with -P threads). A Redis client
is safe to share between threads and greenlets (each command takes a pooled connection), so the
channel keeps one per connection pool.

An ack wakes a consumer whose prefetch window is full. Without an event loop (``-P gevent``,
``-P eventlet``), kombu's poller then waits out its whole timeout (Celery's two seconds) on a
socket where no BRPOP is pending, or sleeps a second when one is, whatever frees a slot
meanwhile: a gevent worker at ``-c 10`` with Nen answering in 200 ms did 5 submissions/s
instead of 50. It now waits for the first ack or reject, up to the same timeout.

Gated (fastpath.py): kombu outside the tested range (fastpath.KOMBU_TESTED), or a method
whose signature is not the one the patches rely on, and nothing is patched: one WARNING on the
``nen_celery.fastpath.gate`` logger says why.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

from nen_celery.fastpath import gate as fastpath

_ATTR = "_nen_shared_client"
_SETTING = "NEN_PATCH_KOMBU_REDIS"
# (class, attribute) -> kombu's own value (_INHERITED: none of its own), for uninstall
_originals: dict[tuple[type, str], Any] = {}
_INHERITED = object()
_lock = threading.Lock()


def install() -> bool:
    """Patch kombu's Redis transport once; False when already done, or when this kombu is
    outside the tested range or its methods' signatures changed (then one WARNING, no patch)."""
    with _lock:
        if _originals:
            return False
        ok, reason = fastpath.redis_transport_ok(kombu_redis)
        if not ok:
            fastpath.step_aside(fastpath.REDIS_TRANSPORT, _SETTING, reason)
            return False
        shared = _share_clients()
        woken = _wake_on_ack()
        return shared or woken


def installed() -> bool:
    return bool(_originals)


def uninstall() -> None:
    """Put kombu's own methods back (tests)."""
    with _lock:
        for (cls, name), original in _originals.items():
            if original is _INHERITED:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
        _originals.clear()


def _replace(cls: type, name: str, value: Any) -> None:
    _originals.setdefault((cls, name), cls.__dict__.get(name, _INHERITED))
    setattr(cls, name, value)


def _starved(poller: Any) -> bool:
    """No channel may take a message and none listens to a fanout: polling can only time out."""
    channels = [ch for ch in poller._channels if ch.active_queues or ch.active_fanout_queues]
    return bool(channels) and all(not ch.active_fanout_queues and not ch.qos.can_consume() for ch in channels)


def _wake_on_ack() -> bool:
    qos = getattr(kombu_redis, "QoS", None)
    poller = getattr(kombu_redis, "MultiChannelPoller", None)
    original = getattr(poller, "get", None)
    if qos is None or poller is None or original is None or getattr(original, "_nen_wakeup", False):
        return False
    # created here, after `celery -P gevent` patched threading, so a greenlet's ack wakes it
    credit = threading.Event()

    def get(self: Any, callback: Any, timeout: float | None = None) -> Any:
        if timeout and _starved(self):
            credit.wait(timeout)
            credit.clear()  # before the window is read again: a later ack sets it anew
            timeout = 0.0  # waited: poll without blocking, with kombu's housekeeping as before
        return original(self, callback, timeout)

    def releasing(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            finally:
                credit.set()

        return wrapper

    get._nen_wakeup = True  # type: ignore[attr-defined]
    _replace(poller, "get", get)
    _replace(qos, "ack", releasing(qos.ack))
    _replace(qos, "reject", releasing(qos.reject))
    return True


def _share_clients() -> bool:
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
    _replace(channel, "conn_or_acquire", conn_or_acquire)
    return True
