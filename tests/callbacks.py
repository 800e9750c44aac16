"""Callback tasks the tests hand to start_run; each records its call in Redis."""

from __future__ import annotations

import json
import os
from typing import Any

import redis

from nen_celery.worker import _dispatch_token, app

_redis: dict[int, redis.Redis] = {}


def _client() -> redis.Redis:
    pid = os.getpid()
    if pid not in _redis:
        _redis.clear()
        _redis[pid] = redis.Redis.from_url(os.environ["NEN_REDIS_URL"], decode_responses=True)
    return _redis[pid]


def calls_key(run_id: str) -> str:
    return f"{os.environ['NEN_KEY_PREFIX']}:test:callbacks:{run_id}"


@app.task(name="tests.record")
def record(run: dict[str, Any], tag: str = "") -> None:
    _client().rpush(calls_key(run["run_id"]), json.dumps({"tag": tag, "run": run}))


def calls(run_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in _client().lrange(calls_key(run_id), 0, -1)]


def dispatch_key(run_id: str) -> str:
    return f"{os.environ['NEN_KEY_PREFIX']}:test:dispatches:{run_id}"


@app.task(name="tests.record_dispatch", bind=True)
def record_dispatch(self: Any, run: dict[str, Any], tag: str = "") -> None:
    """Counts distinct dispatches that ran: a redelivery of one message counts once, as an
    idempotent user callback (keyed on the message) would see it."""
    token = _dispatch_token(self.request) or self.request.id
    _client().sadd(dispatch_key(run["run_id"]), str(token))
