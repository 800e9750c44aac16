"""Is the run-state Redis configured not to lose or evict runs? Checked at worker start.

An evicting ``maxmemory-policy`` refuses the start (``ConfigurationError``) unless
``NEN_ALLOW_EVICTION=true``: Redis would evict terminal records and completion claims, so a run
could end with no callback, or with two. Everything else (no AOF, a lax fsync, a policy that
cannot be read) is a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis

from nen_celery.checks.config import ERROR, WARNING
from nen_celery.errors import ConfigurationError

log = logging.getLogger("nen_celery.checks.durability")

ADVICE = "appendonly yes, appendfsync everysec (or always), maxmemory-policy noeviction"
PARAMETERS = ("appendonly", "appendfsync", "maxmemory-policy")


def durability_problems(config: Mapping[str, str], allow_eviction: bool = False) -> list[tuple[str, str]]:
    """(level, message) for a CONFIG GET result (pure). A parameter missing from ``config``
    could not be read. ERROR: the worker must not start."""
    problems: list[tuple[str, str]] = []
    unread = [name for name in PARAMETERS if name not in config]
    if unread:
        problems.append(
            (
                WARNING,
                f"could not read {', '.join(unread)} (CONFIG GET refused: an ACL, or a managed Redis "
                "that renames CONFIG); check them by hand. An evicting maxmemory-policy "
                "loses run records and completion claims (a run with no callback, or two)",
            )
        )
    appendonly = config.get("appendonly")
    if appendonly is not None and appendonly != "yes":
        problems.append((WARNING, "appendonly is not 'yes': a Redis restart loses every run in flight"))
    elif appendonly == "yes" and config.get("appendfsync", "everysec") not in ("everysec", "always"):
        problems.append(
            (WARNING, f"appendfsync is {config.get('appendfsync')!r}: up to 30 s of changes can be lost")
        )
    policy = config.get("maxmemory-policy")
    if policy is not None and policy != "noeviction":
        message = (
            f"maxmemory-policy is {policy!r}: Redis can evict run records and completion claims "
            "(a run with no callback, or two); set `maxmemory-policy noeviction` on the run "
            "store's Redis"
        )
        if allow_eviction:
            problems.append((WARNING, f"{message} (started anyway: NEN_ALLOW_EVICTION=true)"))
        else:
            problems.append((ERROR, f"{message}, or set NEN_ALLOW_EVICTION=true to start anyway"))
    return problems


def early_waitaof(server: Mapping[str, Any], appendfsync: str | None) -> str | None:
    """Why WAITAOF cannot close a machine crash's window on this server, or None (pure; ``server``
    is INFO server). Under ``everysec`` Valkey (8.0 to 9.1 at least) and Redis 7.2 to 7.4 answer
    WAITAOF once the write reached the OS, before the fsync (fixed in Redis 8.0, redis#13793)."""
    if appendfsync != "everysec":
        return None  # always: every write is fsynced before its answer; no: no AOF guarantee
    if server.get("valkey_version") or server.get("server_name") == "valkey":
        name = f"Valkey {server.get('valkey_version', '')}".strip()
    else:
        parts = str(server.get("redis_version", "0.0")).split(".")
        major_minor = (int(parts[0]), int(parts[1])) if all(p.isdigit() for p in parts[:2]) else (0, 0)
        if not (7, 2) <= major_minor < (8, 0):
            return None
        name = f"Redis {server.get('redis_version')}"
    return (
        f"{name} answers WAITAOF before the everysec fsync (redis#13793): the durability barrier "
        "covers a Redis crash but not a machine crash's last second; use appendfsync always, or "
        "Redis >= 8.0"
    )


def read_config(client: Any) -> dict[str, str]:
    """The durability parameters CONFIG GET would show; one refused is left out (an ACL may
    refuse some). Raises RedisError other than a refusal (Redis not reachable)."""
    config: dict[str, str] = {}
    for name in PARAMETERS:
        try:
            answer = client.config_get(name)
        except redis.ResponseError:  # NOPERM, or "unknown command" where CONFIG is renamed
            continue
        config.update({str(k): str(v) for k, v in answer.items() if str(k) == name})
    return config


def check_durability(client: Any = None, allow_eviction: bool = False) -> list[tuple[str, str]]:
    """Warn where the run store's Redis can lose state; raise ConfigurationError (naming the
    policy and the way out) where it can evict it and ``allow_eviction`` is off."""
    if client is None:
        from nen_celery.runtime.context import get_context

        client = get_context().redis
    try:
        config = read_config(client)
    except redis.RedisError as exc:
        log.warning("run store: Redis not reachable at start (%s)", type(exc).__name__)
        return []
    problems = durability_problems(config, allow_eviction)
    try:
        early = early_waitaof(client.info("server"), config.get("appendfsync"))
    except redis.ResponseError:  # INFO refused: nothing to say
        early = None
    if early is not None:
        problems.append((WARNING, early))
    for level, problem in problems:
        if level != ERROR:
            log.warning("run store durability: %s (want %s)", problem, ADVICE)
    errors = [message for level, message in problems if level == ERROR]
    if errors:
        raise ConfigurationError("run store: " + "; ".join(errors))
    return problems
