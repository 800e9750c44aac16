"""Is the run-state Redis configured not to lose or evict runs? Checked at worker start."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis

log = logging.getLogger("nen_celery.durability")

ADVICE = "appendonly yes, appendfsync everysec (or always), maxmemory-policy noeviction"


def durability_problems(config: Mapping[str, str]) -> list[str]:
    """Problems in a CONFIG GET result (pure)."""
    problems = []
    if config.get("appendonly", "no") != "yes":
        problems.append("appendonly is not 'yes': a Redis restart loses every run in flight")
    elif config.get("appendfsync") not in ("everysec", "always"):
        problems.append(f"appendfsync is {config.get('appendfsync')!r}: up to 30 s of changes can be lost")
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        problems.append(f"maxmemory-policy is {policy!r}: Redis may evict run records and timers")
    return problems


def check_durability(client: redis.Redis | None = None) -> list[str]:
    """Warn (never fail) when the run store's Redis can lose or evict state."""
    if client is None:
        from .context import get_context

        client = get_context().redis
    try:
        config: dict[str, str] = {}
        for name in ("appendonly", "appendfsync", "maxmemory-policy"):
            config.update({str(k): str(v) for k, v in client.config_get(name).items()})
    except redis.ResponseError:
        log.info("run store: CONFIG GET is not allowed here; check durability by hand (%s)", ADVICE)
        return []
    except redis.RedisError as exc:
        log.warning("run store: Redis not reachable at start (%s)", type(exc).__name__)
        return []
    problems = durability_problems(config)
    for problem in problems:
        log.warning("run store durability: %s (want %s)", problem, ADVICE)
    return problems
