"""An order starts a Nen run from the view; its callback updates the order once, whatever Nen does.
settings.NEN_CELERY names the site's webhook URL: the plugin's receiver takes its place in tests."""

from __future__ import annotations

from typing import Any

from django.test import Client
from shop.models import Order
from shop.tasks import order_done, order_failed
from shop.workflows import CHECK_WORKFLOW_ID

JANE = {"name": "Jane Doe", "dob": "1990-01-15", "email": "jane@example.com"}


def order() -> dict[str, Any]:
    answer = Client().post("/orders/", data=JANE)
    assert answer.status_code == 201, answer.content
    return dict(answer.json())


def test_an_order_is_confirmed(fake_nen: Any) -> None:
    fake_nen.succeed(CHECK_WORKFLOW_ID)
    created = order()
    call = fake_nen.assert_callback_once(created["run_id"], order_done, status="success")
    assert call.args == [created["order"]]
    saved = Order.objects.get(pk=created["order"])
    assert (saved.status, saved.callbacks, saved.run_id) == ("success", 1, created["run_id"])


def test_lost_webhooks_still_end_the_order_once(fake_nen: Any, nen_beat: None) -> None:
    fake_nen.fail(CHECK_WORKFLOW_ID)
    fake_nen.drop_webhooks()
    created = order()
    fake_nen.assert_callback_once(created["run_id"], order_failed, status="failed")
    assert Order.objects.get(pk=created["order"]).callbacks == 1


def test_a_refused_run_fails_the_order(fake_nen: Any) -> None:
    fake_nen.reject(403, error="forbidden", message="workflow not enabled")
    created = order()
    call = fake_nen.assert_callback_once(created["run_id"], order_failed, status="rejected")
    assert call.run["error"]["error"] == "forbidden"
    assert Order.objects.get(pk=created["order"]).status == "rejected"
