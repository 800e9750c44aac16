"""The demo's completion callbacks (``celery ... worker -I nen_celery.ops.demo_tasks``)."""

from __future__ import annotations

import json
from typing import Any

from nen_celery.runtime.context import get_context
from nen_celery.worker import app


def callbacks_key() -> str:
    return f"{get_context().settings.key_prefix}:demo:callbacks"


@app.task(name="nen_celery.demo.record")
def record(run: dict[str, Any], tag: str) -> None:
    """Store which callback fired for which run (status only: payloads hold presigned URLs)."""
    entry = {"run_id": run["run_id"], "tag": tag, "status": run["status"]}
    get_context().redis.rpush(callbacks_key(), json.dumps(entry))
