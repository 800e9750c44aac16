"""The pipeline a user writes by hand, without nen-celery (issue 28): the hand-written baseline
of the lifecycle benchmark. Plain Celery tasks on the bench's app and a plain Starlette view
(bench/hand_web.py), the same simulator: a submit task POSTs the run with httpx (the same
API key and request signing), the view checks the webhook's HMAC and enqueues an ingest task,
the ingest task stores the status (one HSET) and, for a terminal one, enqueues the callback.
3 queue hops per run, one POST, two webhooks; no guarantee beyond what Celery gives (a lost
answer, a duplicate or a crash is the user's problem).

Settings from the environment the benchmark gives its processes: NEN_API_URL, NEN_API_KEY,
NEN_SIGNING_KEY, NEN_WEBHOOK_SECRET, NEN_REDIS_URL, and HAND_WEBHOOK_URL (the view's URL).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import redis

from bench.tasks import done
from nen_celery.domain.signing import signed_headers
from nen_celery.worker import app

_per_process: dict[str, Any] = {}


def _made(name: str, build: Any) -> Any:
    """One HTTP client and one Redis client per process (a fork gets its own)."""
    key = f"{os.getpid()}:{name}"
    if key not in _per_process:
        _per_process[key] = build()
    return _per_process[key]


def _store() -> redis.Redis:
    client: redis.Redis = _made(
        "redis", lambda: redis.Redis.from_url(os.environ["NEN_REDIS_URL"], decode_responses=True)
    )
    return client


@app.task(name="hand.submit")
def submit(run_id: str, params: dict[str, Any], key: str) -> None:
    hook = f"{os.environ['HAND_WEBHOOK_URL']}?{urlencode({'run': run_id, 'key': key})}"
    body = json.dumps(
        {"workflow_id": os.environ["HAND_WORKFLOW"], "workflow_params": params, "webhook_callback": hook},
        separators=(",", ":"),
    ).encode()
    headers = {
        "x-api-key": os.environ["NEN_API_KEY"],
        "content-type": "application/json",
        "idempotency-key": run_id,
        **signed_headers(os.environ["NEN_SIGNING_KEY"], "POST", "/runs", body, time.time()),
    }
    http = _made("http", lambda: httpx.Client(base_url=os.environ["NEN_API_URL"], timeout=10))
    answer = http.post("/runs", content=body, headers=headers)
    answer.raise_for_status()
    _store().hset(f"hand:{run_id}", mapping={"status": "submitted", "message_id": answer.json()["messageId"]})


@app.task(name="hand.ingest")
def ingest(body: str, run_id: str, key: str) -> None:
    webhook = json.loads(body)
    status = webhook["status"]
    _store().hset(f"hand:{run_id}", "status", status)
    if status in ("success", "failed"):
        run = {"run_id": run_id, "message_id": webhook["message_id"], "status": status}
        done.apply_async((run,), {"key": key})
