"""Asking Nen about a run: the retrieval endpoint (poll) and the Idempotency-Key lookup."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from nen_celery.domain.status import WEBHOOK_STATUSES, Status, is_terminal
from nen_celery.errors import NenError
from nen_celery.lifecycle.completion import apply_nen_status
from nen_celery.lifecycle.submit import bind_accepted, enqueue_submit
from nen_celery.runtime.context import get_context

log = logging.getLogger("nen_celery.lifecycle")


def poll(task: Task, run_id: str) -> dict[str, Any]:
    """Ask the retrieval endpoint once; the reconcile sweep decides when to ask again."""
    ctx = get_context()
    data = ctx.store.raw(run_id)
    if not data or is_terminal(data["status"]) or not data.get("message_id"):
        return {"run_id": run_id, "status": data.get("status") if data else "missing"}
    try:
        body = ctx.client.retrieve_run(data["message_id"])
    except NenError as exc:
        log.warning("run %s: retrieval failed: %s", run_id, exc)
        return {"run_id": run_id, "status": data["status"], "error": type(exc).__name__}
    if body.get("status") not in WEBHOOK_STATUSES:
        log.warning("run %s: retrieval answered an unknown status", run_id)
        return {"run_id": run_id, "status": data["status"]}
    body.setdefault("message_id", data["message_id"])
    verdict, now = apply_nen_status(run_id, body, source="poll")
    return {"run_id": run_id, "status": now, "verdict": verdict}


def lookup(task: Task, run_id: str) -> dict[str, Any]:
    """Resolve an `unknown` run: did Nen get our POST? Asks NEN_LOOKUP_PATH by Idempotency-Key."""
    ctx = get_context()
    data = ctx.store.raw(run_id)
    if not data or data.get("status") != Status.UNKNOWN:
        return {"run_id": run_id, "status": data.get("status") if data else "missing"}
    try:
        body = ctx.client.lookup_run(data.get("idem_key") or run_id)
    except NenError as exc:
        log.warning("run %s: lookup failed: %s", run_id, exc)
        return {"run_id": run_id, "status": Status.UNKNOWN.value, "error": type(exc).__name__}
    if body is None:
        # Nen never saw it: the POST did not land, so sending it now starts the workflow once.
        log.info("run %s: Nen has no run for its key; resubmitting", run_id)
        ctx.store.redrive(run_id, force=True)  # Nen said it has none; keeps the Idempotency-Key
        enqueue_submit(run_id, data["workflow_id"])
        return {"run_id": run_id, "status": "resubmitted"}
    message_id = body.get("message_id") or body.get("messageId")
    if not isinstance(message_id, str):
        return {"run_id": run_id, "status": Status.UNKNOWN.value, "error": "no message_id"}
    status = bind_accepted(run_id, message_id, {"messageId": message_id, "via": "lookup"})
    if body.get("status") in WEBHOOK_STATUSES:
        _, status = apply_nen_status(run_id, {**body, "message_id": message_id}, source="lookup")
    return {"run_id": run_id, "status": status, "message_id": message_id}
