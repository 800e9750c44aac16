"""A callback task for the security scans, importable by a worker process (``-I``).

Unlike tests.callbacks.record it keeps only the outcome: the finished run it receives holds the
presigned result URLs, which the scan looks for everywhere.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from nen_celery.worker import app


def noted_key(run_id: str) -> str:
    return f"{os.environ['NEN_KEY_PREFIX']}:scan:noted:{run_id}"


@app.task(name="tests.security_scan.noted")
def noted(run: dict[str, Any], tag: str = "") -> None:
    client = redis.Redis.from_url(os.environ["NEN_REDIS_URL"])
    try:
        client.set(noted_key(run["run_id"]), f"{tag}:{run['status']}", ex=3600)
    finally:
        client.close()
