"""The shop's Celery tasks: found by app.autodiscover_tasks(), run by ``celery -A proj worker``."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.core.mail import send_mail
from django.db.models import F
from django.utils import timezone

from .models import Order

log = logging.getLogger(__name__)


@shared_task
def send_email(to: str, subject: str, body: str) -> None:
    """An ordinary task of the project, nothing to do with Nen."""
    send_mail(subject, body, None, [to])


@shared_task
def purge_abandoned_orders() -> int:
    """The project's own periodic task (CELERY_BEAT_SCHEDULE)."""
    cutoff = timezone.now() - timedelta(days=30)
    deleted, _ = Order.objects.filter(status="checking", created__lt=cutoff).delete()
    return deleted


@shared_task
def order_done(run: dict[str, Any], order_id: int) -> None:
    """on_complete: nen-celery calls it once when the order's run succeeded. ``run`` is the
    finished run (run_id, message_id, workflow_id, status, payload); ``order_id`` is ours."""
    Order.objects.filter(pk=order_id).update(status=run["status"], callbacks=F("callbacks") + 1)
    order = Order.objects.get(pk=order_id)
    send_email.delay(order.email, f"Order {order_id} is confirmed", "Thank you, your check has passed.")


@shared_task
def order_failed(run: dict[str, Any], order_id: int) -> None:
    """on_failure: called once when the run failed or Nen never accepted it."""
    log.warning("order %s: run %s ended %s", order_id, run["run_id"], run["status"])
    Order.objects.filter(pk=order_id).update(status=run["status"], callbacks=F("callbacks") + 1)
