"""The worker that runs your app during the tests: in this process (celery.contrib.testing's
``start_worker``, the one celery.contrib.pytest's fixtures use; a thread pool) or a real
``celery worker`` process. Either consumes every queue of your app and nen's, on the tests' Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from nen_celery.testing.options import SetupError
from nen_celery.testing.recorder import ENV as RECORDER_ENV
from nen_celery.testing.waits import wait_until

if TYPE_CHECKING:
    from celery import Celery

    from nen_celery.testing.options import Options
    from nen_celery.testing.recorder import Recorder

READY_TIMEOUT = 30.0


@contextmanager
def start_worker(
    app: Celery, options: Options, recorder: Recorder, parameters: dict[str, Any]
) -> Iterator[Any]:
    """In this process (``options.worker == "thread"``) or as a process; stopped on exit."""
    if options.worker == "process":
        with _worker_process(options.celery_app, recorder) as process:
            yield process
        return
    from celery.contrib.testing.worker import start_worker as celery_start_worker

    arguments: dict[str, Any] = {
        "pool": "threads",
        "concurrency": 4,
        "perform_ping_check": False,
        "loglevel": "WARNING",
        "shutdown_timeout": 30,
        **parameters,
    }
    with celery_start_worker(app, **arguments) as worker:
        yield worker


@contextmanager
def _worker_process(spec: str, recorder: Recorder) -> Iterator[subprocess.Popen[bytes]]:
    if not spec:
        raise SetupError("a worker process needs your app's name: set `nen_celery_app` in the ini file")
    env = {
        **os.environ,
        RECORDER_ENV: f"{recorder.redis_url} {recorder.prefix}",
        "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),
    }
    command = [
        sys.executable, "-m", "celery", "-A", spec, "-b", recorder.redis_url, "worker",
        "-P", "threads", "-c", "4", "-l", "WARNING", "-I", "nen_celery.testing.recorder",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env)  # noqa: S603 - our own interpreter and arguments
    try:
        _wait_ready(recorder, process)
        yield process
    finally:
        process.terminate()  # warm shutdown: the worker finishes what it runs
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_ready(recorder: Recorder, process: subprocess.Popen[bytes]) -> None:
    """Until the worker's recorder marks it ready (worker_ready), or it exits, or the deadline passes."""

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the celery worker process exited with {process.returncode} at start")
        return recorder.worker_ready()

    wait_until(ready, READY_TIMEOUT, "the celery worker process to be ready", interval=0.05)
