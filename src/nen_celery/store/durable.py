"""The durability barrier: wait until a write is durable before a side effect that cannot be
taken back (answering Nen 2xx, publishing a callback, sending the POST).

Why: Redis acknowledges a write before it is fsynced (``appendfsync everysec``) or replicated.
A machine crash or a failover then rolls back writes whose consequences are already out (a
webhook Nen will not redeliver, a callback, a POST), and a run can end twice (issue 25,
finding 1). ``WAITAOF 1 0 <ms>`` (Redis >= 7.2, Valkey >= 8) blocks until the local AOF is
fsynced up to the connection's last write; ``WAIT <n> <ms>`` until n replicas have it.

Both cover the writes of the connection they are sent on, so the barrier sends a marker write
and the wait in one pipeline (one connection): the AOF and the replication stream are a single
ordered log, so a durable marker means every write acknowledged before it is durable too, on
whichever connection it went (a pooled script call, the broker's LPUSH on the same server).
Many waiters share one fsync. Not for a Redis Cluster: its waits are per node.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis

from nen_celery import connections
from nen_celery.errors import ConfigurationError
from nen_celery.settings import Settings
from nen_celery.store.keys import KeyLayout

log = logging.getLogger("nen_celery.store")

AOF = "aof"
REPLICAS = "replicas"
OFF = "off"


class NotDurable(redis.TimeoutError):
    """A write was acknowledged but not confirmed durable in time: the side effect must not
    happen yet. A Redis TimeoutError, so every path that retries a slow Redis retries this."""


@dataclass(frozen=True)
class Barrier:
    mode: str  # aof | replicas | off
    timeout_ms: int = 2000
    replicas: int = 1
    mark_key: str = "nen:durable"

    @property
    def on(self) -> bool:
        return self.mode != OFF

    def bounded(self, timeout_ms: int) -> Barrier:
        """This barrier waiting at most ``timeout_ms`` (the receiver's answer budget)."""
        return Barrier(self.mode, min(self.timeout_ms, timeout_ms), self.replicas, self.mark_key)

    def command(self) -> tuple[Any, ...]:
        if self.mode == AOF:
            return ("WAITAOF", 1, 0, self.timeout_ms)
        return ("WAIT", self.replicas, self.timeout_ms)

    def queue(self, pipe: Any) -> None:
        """The marker write and the wait, at the end of a non-transactional pipeline."""
        pipe.set(self.mark_key, "1")
        pipe.execute_command(*self.command())

    def check(self, reply: Any) -> None:
        """Raise NotDurable unless the wait's reply confirms the write."""
        if isinstance(reply, redis.ConnectionError | redis.TimeoutError):
            raise reply
        if isinstance(reply, Exception):  # e.g. appendonly turned off since the probe
            raise NotDurable(f"{self.command()[0]} refused: {reply}") from reply
        done = int(reply[0]) >= 1 if self.mode == AOF else int(reply) >= self.replicas
        if not done:
            raise NotDurable(f"{self.command()[0]}: not durable within {self.timeout_ms} ms")

    def wait(self, client: Any) -> None:
        """Block until every write this process saw acknowledged is durable (or raise)."""
        if not self.on:
            return
        pipe = client.pipeline(transaction=False)
        self.queue(pipe)
        replies = pipe.execute(raise_on_error=False)
        self.check(replies[-1])

    async def await_(self, client: aioredis.Redis) -> None:
        """``wait`` on an event loop."""
        if not self.on:
            return
        pipe = client.pipeline(transaction=False)
        self.queue(pipe)
        replies = await pipe.execute(raise_on_error=False)
        self.check(replies[-1])


def resolve(client: Any, settings: Settings) -> Barrier:
    """The barrier NEN_DURABILITY asks for on this server: ``auto`` probes once (WAITAOF
    supported and appendonly yes). Raises a Redis error if the server cannot be reached (the
    verdict is then not kept), ConfigurationError for a barrier a Cluster cannot give."""
    mode: str = settings.durability
    mark = KeyLayout(settings.key_prefix, settings.store_shards).durable_key
    made = Barrier(OFF, settings.durability_timeout, settings.durability_replicas, mark)
    if mode == OFF:
        return made
    if connections.kind(settings.redis_url) == "cluster":
        if mode != "auto":
            raise ConfigurationError(
                f"NEN_DURABILITY={mode} is not supported with a Redis Cluster run store (a wait "
                "covers one node); use auto or off"
            )
        log.warning("durability barrier off: a Redis Cluster run store (docs/guarantees.md)")
        return made
    if mode == "auto":
        mode = AOF if supports_waitaof(client) else OFF
    log.info("durability barrier: %s", mode)
    return Barrier(mode, made.timeout_ms, made.replicas, made.mark_key)


def supports_waitaof(client: Any) -> bool:
    """WAITAOF is known and the server has appendonly yes (it refuses numlocal 1 otherwise)."""
    try:
        client.execute_command("WAITAOF", 1, 0, 1)
    except redis.ResponseError:  # unknown command, appendonly no, a replica, an ACL
        return False
    return True


def same_server(broker_url: str, redis_url: str) -> bool:
    """Whether a redis:// broker is the run store's server (so the barrier covers its LPUSH)."""
    a, b = urlsplit(broker_url), urlsplit(redis_url)
    schemes = ("redis", "rediss", "unix")
    if a.scheme not in schemes or b.scheme not in schemes:
        return False
    if "unix" in (a.scheme, b.scheme):
        return a.scheme == b.scheme and a.path == b.path
    local = {"localhost", "127.0.0.1", "::1", ""}

    def host(u: Any) -> str:
        name = u.hostname or ""
        return "127.0.0.1" if name in local else name

    return (host(a), a.port or 6379) == (host(b), b.port or 6379)


class AsyncWaiter:
    """``Barrier.await_`` on one asyncio client per event loop (a connection belongs to the
    loop that opened it), for a standalone run store."""

    def __init__(self, barrier: Barrier, url: str, timeout: float) -> None:
        self.barrier = barrier
        self.url = url
        self.timeout = timeout
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )

    async def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = aioredis.Redis.from_url(
                self.url, decode_responses=True, socket_connect_timeout=self.timeout, socket_timeout=None
            )
        async with asyncio.timeout(self.timeout):
            await self.barrier.await_(client)
