"""What the simulator holds about a run, and the JSON bodies it shows for one.

Plain data and pure functions, so the state, the routes and the webhook delivery share them without
importing one another.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

ACCEPTED = "accepted"  # internal only: reported as "processing" by GET /runs/{id}
PROCESSING = "processing"
SUCCESS = "success"
FAILED = "failed"

#: The Idempotency-Key recorded for a POST that carried none.
NO_IDEMPOTENCY_KEY = "<none>"

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class RunRequest:
    """A validated ``POST /runs`` body, minus the secure values."""

    workflow_id: str
    callback_url: str | None
    has_secure_params: bool
    secure_param_keys: tuple[str, ...]


@dataclass
class Run:
    """One accepted run. Holds no secure param values, only their key names."""

    message_id: str
    workflow_id: str
    idempotency_key: str
    callback_url: str | None
    outcome: str
    secure_param_keys: tuple[str, ...]
    status: str
    payload: JSONDict
    never_terminal: bool = False


def run_payload(run: Run, status: str, ttl: int) -> JSONDict:
    """The body of ``GET /runs/{id}`` and of the webhook for ``run`` at ``status``.

    A success carries a presigned-looking result URL that expires ``ttl`` seconds from now, as Nen's do.
    """
    payload: JSONDict = {
        "workflow_id": run.workflow_id,
        "message_id": run.message_id,
        "status": status,
        "expires_at": int(time.time()) + ttl,
    }
    if status == SUCCESS:
        signature = secrets.token_hex(32)
        url = (
            f"https://files.sim.invalid/{run.message_id}/output.json"
            f"?X-Amz-Signature={signature}&X-Amz-Expires={ttl}"
        )
        payload["result"] = {"files": [{"name": "output.json", "url": url}]}
    elif status == FAILED:
        payload["error"] = {"code": "workflow_failed", "message": "simulated failure"}
    return payload


def accepted_body(run: Run) -> JSONDict:
    """The body of the 202 that accepts ``run``."""
    return {
        "message": "Job accepted for processing.",
        "messageId": run.message_id,
        "workflowId": run.workflow_id,
    }
