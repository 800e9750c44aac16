"""Tasks the benchmark workers load (`-I bench.tasks`): the on_complete callback that stamps
when it started, and the bare-Celery baseline (a no-op task that enqueues the next)."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from bench.common import BOOK_URL
from nen_celery.worker import app

_clients: dict[int, redis.Redis] = {}


def book() -> redis.Redis:
    """One bookkeeping connection per process (a fork gets its own)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients.clear()
        _clients[pid] = redis.Redis.from_url(BOOK_URL, decode_responses=True)
    return _clients[pid]


def stamp(key: str, what: str) -> None:
    """Count one finished unit and keep when it started: '<what> <unix time>'."""
    pipe = book().pipeline(transaction=False)
    pipe.rpush(f"{key}:t", f"{what} {time.time():.6f}")
    pipe.incr(f"{key}:n")
    pipe.execute()


@app.task(name="bench.done")
def done(run: dict[str, Any], key: str) -> None:
    stamp(key, str(run.get("message_id")))


@app.task(name="bench.step")
def step(key: str, left: int, sent: float = 0.0) -> None:
    """Hop ``left`` more times; the last hop stamps when it started (and when the first was sent)."""
    if left > 0:
        step.apply_async((key, left - 1, sent))
    else:
        stamp(key, f"{sent:.6f}")


def finished(key: str) -> int:
    return int(book().get(f"{key}:n") or 0)


def stamps(key: str) -> list[tuple[str, float]]:
    out = []
    for line in book().lrange(f"{key}:t", 0, -1):
        what, at = str(line).rsplit(" ", 1)
        out.append((what, float(at)))
    return out
