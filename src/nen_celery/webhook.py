"""What a verified webhook carries from the receiver to the ingest task: its body's shape and
the header that times it. Pure and light: the receiver checks bodies without importing Celery.
"""

from __future__ import annotations

import json
from typing import Any

from .status import WEBHOOK_STATUSES

# Unix time the receiver got a webhook: rides ingest_webhook -> complete_run for a latency metric.
RECEIVED_AT_HEADER = "nen_received_at"

_STATUS_ERROR = f"status must be one of {sorted(s.value for s in WEBHOOK_STATUSES)}"


def parse_webhook(raw: bytes) -> dict[str, Any]:
    """The webhook body as a dict with a str message_id and a known status, or ValueError."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError("body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("body is not a JSON object")
    if not isinstance(body.get("message_id"), str) or not body["message_id"]:
        raise ValueError("message_id missing or not a string")
    if body.get("status") not in WEBHOOK_STATUSES:
        raise ValueError(_STATUS_ERROR)
    return body
