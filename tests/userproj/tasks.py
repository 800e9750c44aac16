"""The user's tasks: one of their own, and the callbacks they hand to start_run."""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery import current_app, shared_task


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["PROJ_RECORD_URL"], decode_responses=True)


def key(name: str) -> str:
    return f"{os.environ['PROJ_RECORD_PREFIX']}:{name}"


def record_run(task_name: str) -> None:
    _redis().hincrby(key("ran"), task_name, 1)


@shared_task(name="proj.send_email", bind=True)
def send_email(self: Any, to: str) -> None:
    """An unrelated task of the user's: records where and how it ran."""
    seen = {
        "to": to,
        "app": self.app.main,
        "current_app": current_app.main,
        "broker": str(self.app.conf.broker_url).split("@")[-1],
        "acks_late": bool(self.acks_late),
        "queue": (self.request.delivery_info or {}).get("routing_key"),
        "hostname": self.request.hostname,
    }
    _redis().rpush(key("emails"), json.dumps(seen))


@shared_task(name="proj.order_done", bind=True)
def order_done(self: Any, run: dict[str, Any], order: str) -> None:
    """The user's on_complete / on_failure callback."""
    entry = {
        "order": order,
        "run_id": run["run_id"],
        "status": run["status"],
        "task_id": self.request.id,
        "hostname": self.request.hostname,
        "app": self.app.main,
    }
    _redis().rpush(key("callbacks"), json.dumps(entry))
