"""Applying one verified webhook to its run (the ingest_webhook task)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from nen_celery import observe
from nen_celery.domain.hints import RunRef
from nen_celery.lifecycle.completion import apply_nen_status, dispatch_completion
from nen_celery.lifecycle.webhook import RECEIVED_AT_HEADER, REUSED, log_hinted, parse_webhook
from nen_celery.runtime.app import request_header
from nen_celery.runtime.context import get_context
from nen_celery.runtime.faults import failpoint

log = logging.getLogger("nen_celery.lifecycle")


def ingest(task: Task, sealed_body: str, hint: RunRef | None = None) -> dict[str, Any]:
    """Apply one webhook. ``hint``: the run attempt its URL named (hints.py; the receiver checked
    the hint's token), if any."""
    ctx = get_context()
    body = parse_webhook(ctx.sealer.open(sealed_body))
    message_id, status = body["message_id"], body["status"]
    observe.run_ids(message_id=message_id, workflow_id=body.get("workflow_id"))
    if hint is not None:
        result = _ingest_hinted(task, hint, body, sealed_body)
        if result["verdict"] != REUSED:
            return result
        # the URL was made for another record of this run id (or before records had a nonce):
        # the messageId says which run it is, if any still is
    run_id = ctx.store.find_or_park(message_id, sealed_body)
    observe.run_ids(run_id=run_id)
    if run_id is None:
        log.info("webhook %s for message %s parked: messageId not bound yet", status, message_id)
        return {"message_id": message_id, "status": status, "verdict": "parked"}
    failpoint("ingest:before_apply")
    received_at = request_header(task.request, RECEIVED_AT_HEADER)
    verdict, now = apply_nen_status(run_id, body, source="webhook", received_at=received_at)
    log.info("run %s webhook %s: %s (now %s)", run_id, status, verdict, now)
    return {"run_id": run_id, "message_id": message_id, "verdict": verdict, "status": now}


def _ingest_hinted(task: Task, hint: RunRef, body: dict[str, Any], sealed_body: str) -> dict[str, Any]:
    """One script applies the webhook and, if it ended the run, claims the completion: the
    callback is dispatched from here, with no complete_run hop."""
    ctx = get_context()
    run_id = hint.run_id
    observe.run_ids(run_id=run_id)
    message_id, status = body["message_id"], body["status"]
    failpoint("ingest:before_apply")
    holder = str(task.request.id)
    verdict, now, completion, data = ctx.store.ingest(
        hint, body, sealed_body, source="webhook", holder=holder
    )
    result = {"run_id": run_id, "message_id": message_id, "verdict": verdict, "status": now}
    log_hinted(log, verdict, now, run_id, hint.attempt, status, message_id)
    if completion == "claimed":
        result["callback_task_id"] = dispatch_completion(task, run_id, holder, data)
    return result
