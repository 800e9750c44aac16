"""One place that turns ``NEN_REDIS_URL`` into a client: standalone, Cluster or Sentinel.

- ``redis://`` / ``rediss://`` / ``unix://``: a standalone server (redis-py's own URL rules).
- ``redis+cluster://[user:password@]host:port[,host:port...]``: a Redis Cluster; the nodes
  listed are only the start-up seeds, the client discovers the rest. Keys of one run share a
  hash tag, so each Lua script touches one slot (see ``RunStore`` and docs/operations.md).
- ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``: the master
  of ``service_name`` as Sentinel reports it, found again after a failover. The password is the
  data nodes' password; Sentinels are reached without one.

``rediss+cluster`` / ``rediss+sentinel`` use TLS. The Celery broker URL is kombu's business
(``NEN_BROKER_URL``), not this module's: kombu has its own ``sentinel://`` transport and no
Cluster transport.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from nen_celery.errors import ConfigurationError

# redis-py types some of these and not others, and which ones changes between releases (8.x typed
# Sentinel): called through Any, the type check holds on every redis-py the bounds allow.
_ClusterNode: Any = ClusterNode
_RedisCluster: Any = RedisCluster
_Sentinel: Any = Sentinel

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")

# Redis unreachable or still loading after a restart: what nen's tasks retry on (backoff capped
# at 30 s) and what a submit rides out before it binds an accepted run.
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def _nodes(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = netloc.rsplit("@", 1)[-1]
    out = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        try:
            out.append((host or item, int(port) if port else default_port))
        except ValueError:
            raise ConfigurationError(f"NEN_REDIS_URL: {item!r} is not host:port") from None
    if not out:
        raise ConfigurationError("NEN_REDIS_URL: no host:port given")
    return out


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    if "@" not in netloc:
        return None, None
    userinfo = netloc.rsplit("@", 1)[0]
    user, sep, password = userinfo.partition(":")
    if not sep:
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def kind(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme in CLUSTER_SCHEMES:
        return "cluster"
    if scheme in SENTINEL_SCHEMES:
        return "sentinel"
    return "standalone"


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A client for ``url``; ``options`` (timeouts, decode_responses, ...) go to every connection.

    Typed as ``redis.Redis``: a ``RedisCluster`` answers the same commands, pipelines and scripts
    that the run store uses.
    """
    parts = urlsplit(url)
    if parts.scheme in CLUSTER_SCHEMES:
        user, password = _credentials(parts.netloc)
        nodes = [_ClusterNode(host, port) for host, port in _nodes(parts.netloc, 6379)]
        # per-node health checks and retry_on_timeout: the cluster client retries on its own
        cluster_options = {
            k: v for k, v in options.items() if k not in ("health_check_interval", "retry_on_timeout")
        }
        client = _RedisCluster(
            startup_nodes=nodes,
            username=user,
            password=password,
            ssl=parts.scheme.startswith("rediss"),
            **cluster_options,
        )
        return cast("redis.Redis", client)
    if parts.scheme in SENTINEL_SCHEMES:
        user, password = _credentials(parts.netloc)
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ConfigurationError("NEN_REDIS_URL: a redis+sentinel URL needs /service_name")
        service = path[0]
        try:
            db = int(path[1]) if len(path) > 1 else 0
        except ValueError:
            raise ConfigurationError(f"NEN_REDIS_URL: database {path[1]!r} is not a number") from None
        sentinel = _Sentinel(
            _nodes(parts.netloc, 26379),
            sentinel_kwargs={
                k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")
            },
            ssl=parts.scheme.startswith("rediss"),
        )
        master: redis.Redis = sentinel.master_for(
            service, db=db, username=user, password=password, **options
        )
        return master
    return redis.Redis.from_url(url, **options)
