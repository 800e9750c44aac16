"""One httpx transport made of several small connection pools, for many concurrent tasks.

httpcore 1.0.9's pool does work quadratic in its size on every request and every release (each
pass checks every connection for every queued request, and polls each idle socket): with 100
threads or greenlets on one 100-connection pool, that bookkeeping took most of a submit's CPU
(measured in bench/submit.py). Pools of a few connections keep each pass small; a request
goes to the pool with the fewest requests in flight, so no task waits while another pool has
a free connection. Every connection a pool may open is kept alive: with fewer keep-alive slots
than connections, httpcore closes the connections a POST leaves idle, and may close one that
another thread was just handed and is already sending on (the POST's answer is then lost after
it was sent; encode/httpcore#1110).
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx

SHARD_SIZE = 4  # connections per pool: 1 to 10 measured alike; 100 in one pool cost 7x the CPU per POST


def shard_sizes(max_connections: int, shard_size: int = SHARD_SIZE) -> list[int]:
    """Split ``max_connections`` into pools of at most ``shard_size``, as even as possible."""
    if max_connections < 1 or shard_size < 1:
        raise ValueError(f"max_connections and shard_size must be >= 1, got {max_connections}, {shard_size}")
    count = -(-max_connections // shard_size)
    base, extra = divmod(max_connections, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``,
    either case, minus ``NO_PROXY``). httpx reads these itself only when no transport is given,
    so a client with this transport would otherwise go around a corporate egress proxy."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _kept_alive(connections: int, expiry: float | None) -> httpx.Limits:
    return httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=expiry
    )


class _Released(httpx.SyncByteStream):
    """A response body that gives its pool's slot back when closed (once)."""

    def __init__(self, stream: httpx.SyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedTransport(httpx.BaseTransport):
    """``max_connections`` kept-alive connections, in pools of at most ``shard_size``."""

    def __init__(
        self,
        max_connections: int,
        *,
        keepalive_expiry: float | None = 5.0,
        shard_size: int = SHARD_SIZE,
        proxy: str | None = None,
    ) -> None:
        # one for all the pools (each costs ~50 ms to build); trust_env: SSL_CERT_FILE/SSL_CERT_DIR
        tls = httpx.create_ssl_context(trust_env=True)
        self.pools: list[httpx.BaseTransport] = [
            httpx.HTTPTransport(verify=tls, limits=_kept_alive(n, keepalive_expiry), proxy=proxy)
            for n in shard_sizes(max_connections, shard_size)
        ]
        self.in_flight = [0] * len(self.pools)
        self._lock = threading.Lock()

    def _take(self) -> int:
        with self._lock:
            index = min(range(len(self.in_flight)), key=self.in_flight.__getitem__)
            self.in_flight[index] += 1
        return index

    def _give_back(self, index: int) -> None:
        with self._lock:
            self.in_flight[index] -= 1

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        index = self._take()
        try:
            response = self.pools[index].handle_request(request)
        except BaseException:
            self._give_back(index)
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Released(response.stream, lambda: self._give_back(index)),
            extensions=response.extensions,
        )

    def close(self) -> None:
        for pool in self.pools:
            pool.close()
