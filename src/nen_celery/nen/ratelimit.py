"""One request budget towards Nen for every worker: a token bucket in Redis (ratelimit.lua here).

Each POST/GET to Nen takes a token first. Adding workers adds no budget: they share one bucket,
on the Redis clock. A 429 from Nen pauses the bucket for its Retry-After (NEN_RATE_LIMIT_PAUSE
without one), so every worker holds off, not just the one that got it. A task never blocks
longer than NEN_RATE_LIMIT_MAX_WAIT for a token: a longer wait raises RateLimited, and the task
re-queues itself with that countdown (at most 60 s, never a long ETA).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

import redis

from nen_celery.connections import redis_client
from nen_celery.errors import NenError
from nen_celery.settings import Settings

MAX_COUNTDOWN = 60.0  # a re-queued task never waits longer than this (no long ETAs)


class RateLimited(NenError):
    """No token towards Nen within NEN_RATE_LIMIT_MAX_WAIT: nothing was sent, try in ``retry_in``."""

    retryable = True
    maybe_sent = False

    def __init__(self, retry_in: float, reason: str = "Nen request budget spent") -> None:
        self.retry_in = min(MAX_COUNTDOWN, max(0.05, retry_in))
        super().__init__(f"{reason}; next token in {retry_in:.2f}s")


@dataclass(frozen=True)
class Grant:
    """One answer of the bucket: ``allowed`` with a reserved token to use after ``wait`` s."""

    allowed: bool
    wait: float
    epoch: int


@cache
def _source() -> str:
    return (resources.files("nen_celery.nen") / "ratelimit.lua").read_text()


@dataclass(frozen=True)
class BucketArgs:
    """ratelimit.lua's ARGV, named and ordered as its header (tests/test_ratelimit.py)."""

    mode: str
    rate: float
    burst: float
    now: float | None  # None: the Redis clock
    arg: float

    def argv(self) -> list[str]:
        now = "" if self.now is None else repr(self.now)
        return [self.mode, repr(self.rate), repr(self.burst), now, repr(self.arg)]


class RateLimiter:
    """The shared bucket. ``take``/``pause`` are single script calls; ``acquire`` is what a
    request waits on; ``feedback`` is what a 429 calls."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        rate: float,
        burst: float,
        *,
        max_wait: float = 2.0,
        pause_default: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.redis = client
        self.key = key
        self.rate = rate
        self.burst = burst
        self.max_wait = max_wait
        self.pause_default = pause_default
        self._sleep = sleep
        self._script = client.register_script(_source())

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> RateLimiter:
        return cls(
            client,
            f"{settings.key_prefix}:ratelimit",
            settings.rate_limit,
            settings.rate_burst,
            max_wait=settings.rate_limit_max_wait,
            pause_default=settings.rate_limit_pause,
        )

    def _call(self, mode: str, now: float | None, arg: float) -> Grant:
        args = BucketArgs(mode, self.rate, self.burst, now, arg)
        flag, value, epoch = self._script(keys=[self.key], args=args.argv())
        return Grant(bool(int(flag)), float(value), int(epoch))

    def take(self, *, max_wait: float | None = None, now: float | None = None) -> Grant:
        """Reserve one token if it is ours within ``max_wait`` s; else reserve nothing."""
        return self._call("take", now, self.max_wait if max_wait is None else max_wait)

    def pause(self, seconds: float, *, now: float | None = None) -> float:
        """No token for anyone for ``seconds``; returns when tokens flow again (bucket time)."""
        return self._call("pause", now, max(0.0, seconds)).wait

    def epoch(self) -> int:
        return int(self.redis.hget(self.key, "epoch") or 0)

    def acquire(self) -> float:
        """Wait for a token (never longer than ``max_wait`` in all); returns the seconds waited.

        Raises RateLimited when the token is further away, or when Redis cannot be asked (the
        request is then not sent either: an unmetered request could overrun Nen).
        """
        waited = 0.0
        try:
            while True:
                grant = self.take(max_wait=max(0.0, self.max_wait - waited))
                if not grant.allowed:
                    raise RateLimited(grant.wait)
                if grant.wait <= 0:
                    return waited
                self._sleep(grant.wait)
                waited += grant.wait
                if self.epoch() == grant.epoch:
                    return waited
                # a 429 paused the bucket while we slept: our slot is void, ask again
        except redis.RedisError as exc:
            raise RateLimited(1.0, f"rate limiter unavailable ({type(exc).__name__})") from None

    def feedback(self, retry_after: float | None) -> None:
        """Nen answered 429: every worker holds off for Retry-After (or the default pause)."""
        # Redis down: the 429 is still retried, with its Retry-After, by the one who got it
        with contextlib.suppress(redis.RedisError):
            self.pause(retry_after if retry_after is not None else self.pause_default)


def limited(settings: Settings) -> bool:
    """Whether requests to Nen wait for the shared bucket's tokens (NEN_RATE_LIMIT > 0)."""
    return settings.rate_limit > 0


def new_limiter(settings: Settings) -> RateLimiter | None:
    """A limiter for these settings, or None when NEN_RATE_LIMIT is 0 (off). The process's
    context holds one (runtime/context.py): one Redis pool per process and settings."""
    if not limited(settings):
        return None
    # the one place that understands redis+cluster:// and redis+sentinel:// URLs
    client = redis_client(
        settings.redis_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=5
    )
    return RateLimiter.from_settings(client, settings)
