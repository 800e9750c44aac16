"""The app's Celery tasks (``shared_task``: they use the app ``celery_init_app`` made default)."""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import shared_task

from . import orders

log = logging.getLogger(__name__)


@shared_task
def send_receipt(order_id: int) -> None:
    """An ordinary task of the app, nothing to do with Nen (a stand-in for an email)."""
    order = orders.get(order_id)
    message = {"to": order["email"], "subject": f"Order {order_id} received"}
    orders.db().rpush(orders.key("outbox"), json.dumps(message))


@shared_task
def order_done(run: dict[str, Any], order_id: int) -> None:
    """on_complete: nen-celery calls it once when the order's run succeeded. ``run`` is the
    finished run (run_id, message_id, workflow_id, status, payload); ``order_id`` is ours."""
    orders.update(order_id, status=run["status"])
    orders.count_callback(order_id)


@shared_task
def order_failed(run: dict[str, Any], order_id: int) -> None:
    """on_failure: called once when the run failed or Nen never accepted it."""
    log.warning("order %s: run %s ended %s", order_id, run["run_id"], run["status"])
    orders.update(order_id, status=run["status"])
    orders.count_callback(order_id)
