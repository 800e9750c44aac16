"""The plugin's options: ini keys, command-line flags and environment variables (docs/testing.md).

Standard library and pytest only: read by the fixtures when a test asks for one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
WORKER_MODES = ("thread", "process")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("nen_celery", "nen-celery testing (docs/testing.md)")
    group.addoption(
        "--nen-redis-url",
        dest="nen_redis_url",
        default=None,
        help="Redis for run state and the test broker; its DB is FLUSHED at start "
        f"(else $NEN_TESTING_REDIS_URL, else ini nen_redis_url, else {DEFAULT_REDIS_URL})",
    )
    group.addoption(
        "--nen-worker",
        dest="nen_worker",
        choices=WORKER_MODES,
        default=None,
        help="thread: an in-process worker (default); process: a real `celery worker` process",
    )
    parser.addini("nen_celery_app", "your Celery app, as for `celery -A` (proj.celery:app)", default="")
    parser.addini("nen_redis_url", "Redis for the tests' run state and broker (DB flushed)", default="")
    parser.addini("nen_worker", "thread (default) or process", default="")


class SetupError(RuntimeError):
    """The stack cannot start as the project is set up; the message says what to change."""


@dataclass(frozen=True)
class Options:
    redis_url: str
    celery_app: str
    worker: str


def read_options(config: pytest.Config) -> Options:
    """Command line first, then the environment, then the ini file, then the defaults."""
    redis_url = (
        config.getoption("nen_redis_url")
        or os.environ.get("NEN_TESTING_REDIS_URL")
        or str(config.getini("nen_redis_url"))
        or DEFAULT_REDIS_URL
    )
    worker = (
        config.getoption("nen_worker")
        or os.environ.get("NEN_TESTING_WORKER")
        or str(config.getini("nen_worker"))
        or "thread"
    )
    if worker not in WORKER_MODES:
        raise pytest.UsageError(f"nen_worker must be one of {', '.join(WORKER_MODES)}, not {worker!r}")
    celery_app = os.environ.get("NEN_TESTING_CELERY_APP") or str(config.getini("nen_celery_app"))
    return Options(redis_url=redis_url, celery_app=celery_app, worker=worker)
