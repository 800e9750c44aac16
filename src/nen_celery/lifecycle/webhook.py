"""What a verified webhook carries from the receiver to the ingest task: its body's shape and
the header that times it. Pure and light: the receiver checks bodies without importing Celery.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from nen_celery import observe
from nen_celery.domain.status import WEBHOOK_STATUSES

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


# ingest.lua's verdicts for a webhook whose run hint does not fit its signed body, and why
MISFIT_REASONS = {
    "mismatch": "the run is bound to another messageId",
    "stale": "the hint is of an attempt before the run was redriven",
    "missing": "no such run",
    "foreign": "the body's workflow is not the run's",
    "taken": "its messageId is bound to another run",
    "full": "the run keeps no more webhooks before its binding",
}
MISFITS = frozenset(MISFIT_REASONS)
# ingest.lua's verdict for a hint whose nonce is not its record's: the URL was made for an earlier
# record of that run id (expired, the id used again) or before records had a nonce. The ingest
# task looks the messageId up instead; a receiver applies nothing for it.
REUSED = "reused"


def log_hinted(
    log: logging.Logger, verdict: str, now: str, run_id: str, attempt: int, status: str, message_id: str
) -> None:
    """How ingest.lua applied a webhook that named its run, logged alike by the ingest task and
    the receiver."""
    if verdict == REUSED:
        log.info(
            "webhook %s for message %s names run %s (attempt %d) of another record of that id: "
            "looked up by messageId",
            status,
            message_id,
            run_id,
            attempt,
        )
    elif verdict in MISFITS:
        # Nen signs the body only: a hint that does not fit the signed body is refused.
        log.warning(
            "webhook %s for message %s names run %s (attempt %d): ignored, %s (%s)",
            status,
            message_id,
            run_id,
            attempt,
            MISFIT_REASONS[verdict],
            verdict,
        )
    elif verdict == "late":
        # the run ended submit_failed ("may have started in Nen"), and Nen did start it
        observe.late_webhook(run_id, status)
        log.error(
            "run %s ended submit_failed as 'may have started in Nen', and Nen now reports %s for "
            "message %s: recorded on the run; no second callback (its on_failure already ran)",
            run_id,
            status,
            message_id,
        )
    elif verdict == "parked":
        log.info("run %s webhook %s kept with the run: its messageId is not bound yet", run_id, status)
    else:
        log.info("run %s webhook %s: %s (now %s)", run_id, status, verdict, now)
