"""What the worker did, kept in the test Redis so a test can wait on it, whichever process ran it.

Every task publish and every task end is counted (``published`` / ``ran``: equal, and the fake Nen
quiet, means nothing is left to happen), and each execution of a callback (a task whose first
argument is a finished run) is kept under its run id with its arguments, state, return value or error.

The in-process worker's fixture connects a ``Recorder`` itself; a real ``celery worker`` process
loads this module with ``-I nen_celery.testing.recorder``, which connects one from
``$NEN_TESTING_RECORDER`` (``<redis url> <key prefix>``) and marks the worker ready.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass
from typing import Any

import redis
from celery import signals

ENV = "NEN_TESTING_RECORDER"
_FINAL = ("SUCCESS", "FAILURE")


@dataclass(frozen=True)
class CallbackCall:
    """One execution of a callback task for a run."""

    task: str
    task_id: str
    run: dict[str, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    state: str
    result: Any = None
    error: str | None = None
    traceback: str | None = None

    @property
    def final(self) -> bool:
        """Ran to its end (SUCCESS or FAILURE); a RETRY is not a final execution."""
        return self.state in _FINAL

    @classmethod
    def from_json(cls, raw: str | bytes) -> CallbackCall:
        return cls(**json.loads(raw))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


class Recorder:
    """Signal handlers writing to ``<prefix>:*`` keys of one Redis database."""

    def __init__(self, url: str, prefix: str) -> None:
        self.redis_url = url
        self.redis = redis.Redis.from_url(url)
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def connect(self) -> None:
        uid = f"nen_celery.testing.{self.prefix}"
        signals.after_task_publish.connect(self._published, weak=False, dispatch_uid=uid)
        signals.task_postrun.connect(self._ran, weak=False, dispatch_uid=uid)
        signals.worker_ready.connect(self._ready, weak=False, dispatch_uid=uid)

    def disconnect(self) -> None:
        uid = f"nen_celery.testing.{self.prefix}"
        signals.after_task_publish.disconnect(dispatch_uid=uid)
        signals.task_postrun.disconnect(dispatch_uid=uid)
        signals.worker_ready.disconnect(dispatch_uid=uid)

    def _published(self, **_: Any) -> None:
        self.redis.incr(self.key("published"))

    def _ready(self, **_: Any) -> None:
        self.redis.set(self.key("ready"), os.getpid())

    def _ran(
        self,
        task_id: str = "",
        task: Any = None,
        args: Any = (),
        kwargs: Any = None,
        retval: Any = None,
        state: str | None = None,
        **_: Any,
    ) -> None:
        args = list(args or ())
        if args and isinstance(args[0], dict) and "run_id" in args[0] and "status" in args[0]:
            call = self._call(task_id, getattr(task, "name", str(task)), args, kwargs or {}, retval, state)
            run_id = str(args[0]["run_id"])
            self.redis.rpush(self.key("calls", run_id), json.dumps(call, default=repr))
        self.redis.incr(self.key("ran"))

    @staticmethod
    def _call(
        task_id: str, name: str, args: list[Any], kwargs: dict[str, Any], retval: Any, state: str | None
    ) -> dict[str, Any]:
        call: dict[str, Any] = {
            "task": name,
            "task_id": task_id,
            "run": _jsonable(args[0]),
            "args": _jsonable(args[1:]),
            "kwargs": _jsonable(kwargs),
            "state": state or "UNKNOWN",
        }
        if isinstance(retval, BaseException):
            call["error"] = f"{type(retval).__name__}: {retval}"
            call["traceback"] = "".join(traceback.format_exception(retval))
        else:
            call["result"] = _jsonable(retval)
        return call

    def calls(self, run_id: str) -> list[CallbackCall]:
        return [CallbackCall.from_json(raw) for raw in self.redis.lrange(self.key("calls", run_id), 0, -1)]

    def counts(self) -> tuple[int, int]:
        """(tasks published, task executions ended) so far, in every process of the session."""
        published, ran = self.redis.mget(self.key("published"), self.key("ran"))
        return int(published or 0), int(ran or 0)

    def worker_ready(self) -> bool:
        return bool(self.redis.exists(self.key("ready")))

    def close(self) -> None:
        self.redis.close()


def _from_environment() -> Recorder | None:
    """In a worker process started by the fixture: record to the session's Redis."""
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    url, _, prefix = spec.partition(" ")
    recorder = Recorder(url, prefix)
    recorder.connect()
    return recorder


RECORDER = _from_environment()
