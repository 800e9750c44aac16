"""Callback tasks the tests hand to start_run; each records its call in Redis."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import redis

from nen_celery.connections import redis_client
from nen_celery.worker import app

log = logging.getLogger("tests.callbacks")
_redis: dict[tuple[int, str], redis.Redis] = {}


def _client() -> redis.Redis:
    """The run store's Redis (standalone or Cluster), one client per process and URL."""
    key = (os.getpid(), os.environ["NEN_REDIS_URL"])
    if key not in _redis:
        _redis.clear()
        _redis[key] = redis_client(key[1], decode_responses=True)
    return _redis[key]


def calls_key(run_id: str) -> str:
    return f"{os.environ['NEN_KEY_PREFIX']}:test:callbacks:{run_id}"


@app.task(name="tests.record", bind=True)
def record(self: Any, run: dict[str, Any], tag: str = "") -> None:
    log.info("callback %s for a %s run", tag, run.get("status"))
    entry = {"tag": tag, "run": run, "task_id": self.request.id}
    _client().rpush(calls_key(run["run_id"]), json.dumps(entry))


def calls(run_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in _client().lrange(calls_key(run_id), 0, -1)]


def dispatch_key(run_id: str) -> str:
    return f"{os.environ['NEN_KEY_PREFIX']}:test:dispatches:{run_id}"


def executions_key(run_id: str) -> str:
    return f"{os.environ['NEN_KEY_PREFIX']}:test:executions:{run_id}"


@app.task(name="tests.record_dispatch", bind=True)
def record_dispatch(self: Any, run: dict[str, Any], tag: str = "") -> None:
    """Counts the distinct callback task ids that ran (one per dispatch of an attempt: a
    redelivery, or a re-dispatch after a crash, carries the same id, as a user callback
    deduplicating on it would see it) and every execution."""
    _client().sadd(dispatch_key(run["run_id"]), str(self.request.id))
    _client().incr(executions_key(run["run_id"]))


def attempts_key(run_id: str) -> str:
    return f"{os.environ['NEN_KEY_PREFIX']}:test:attempts:{run_id}"


@app.task(name="tests.retry_once", bind=True)
def retry_once(self: Any, run: dict[str, Any], tag: str = "") -> None:
    """Asks for one retry (as a callback using self.retry or autoretry_for would), then records
    the call; each attempt notes what Flower and the logs were shown of its arguments."""
    seen = {"retries": self.request.retries, "argsrepr": self.request.argsrepr}
    _client().rpush(attempts_key(run["run_id"]), json.dumps({**seen, "kwargsrepr": self.request.kwargsrepr}))
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    record(run, tag)


def attempts(run_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in _client().lrange(attempts_key(run_id), 0, -1)]


@app.task(name="tests.record_outside", bind=True)
def record_outside(self: Any, run: dict[str, Any], tag: str = "") -> None:
    """One JSON line per execution in the file NEN_TEST_CALLBACK_FILE names: a count kept outside
    the run store's Redis, for tests where that Redis loses its last writes (record's list would
    be lost with them)."""
    entry = {"run_id": run["run_id"], "task_id": self.request.id, "tag": tag, "at": time.time()}
    with open(os.environ["NEN_TEST_CALLBACK_FILE"], "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")  # one write: appends from several processes stay whole


def outside_calls(path: str) -> list[dict[str, Any]]:
    """record_outside's entries, in the order they were written."""
    try:
        with open(path, encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.endswith("\n")]
    except FileNotFoundError:
        return []


def spans_key(run_id: str) -> str:
    return f"{os.environ['NEN_KEY_PREFIX']}:test:spans:{run_id}"


@app.task(name="tests.slow_record", bind=True)
def slow_record(self: Any, run: dict[str, Any], tag: str = "") -> None:
    """A callback whose own work takes NEN_TEST_CALLBACK_SECONDS (the user's code, not test
    synchronisation); notes each execution's start and end (task id, pid, time), then records
    the call as ``record`` does."""
    entry = {"task_id": self.request.id, "pid": os.getpid()}
    _client().rpush(spans_key(run["run_id"]), json.dumps({**entry, "event": "start", "at": time.time()}))
    time.sleep(float(os.environ.get("NEN_TEST_CALLBACK_SECONDS", "0")))
    _client().rpush(spans_key(run["run_id"]), json.dumps({**entry, "event": "end", "at": time.time()}))
    record(run, tag)


def spans(run_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in _client().lrange(spans_key(run_id), 0, -1)]
