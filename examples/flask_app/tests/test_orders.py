"""An order starts a Nen run from the view; its callback updates the order once, whatever Nen does."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from flask_example.tasks import order_done, order_failed
from flask_example.workflows import CHECK_WORKFLOW_ID

JANE = {"name": "Jane Doe", "dob": "1990-01-15", "email": "jane@example.com"}


def order(client: FlaskClient) -> dict[str, Any]:
    answer = client.post("/orders", data=JANE)
    assert answer.status_code == 201, answer.get_json()
    return dict(answer.get_json())


def test_an_order_is_confirmed(fake_nen: Any, client: FlaskClient) -> None:
    fake_nen.succeed(CHECK_WORKFLOW_ID, result={"files": [{"name": "check.pdf"}]})
    created = order(client)
    call = fake_nen.assert_callback_once(created["run_id"], order_done, status="success")
    assert call.args == [created["order"]]
    assert call.run["payload"]["result"] == {"files": [{"name": "check.pdf"}]}
    shown = client.get(created["url"]).get_json()
    assert (shown["status"], shown["callbacks"], shown["run_status"]) == ("success", "1", "success")


def test_a_failed_check_fails_the_order_once(fake_nen: Any, client: FlaskClient) -> None:
    fake_nen.fail(CHECK_WORKFLOW_ID)
    fake_nen.duplicate_webhooks(2)
    created = order(client)
    fake_nen.assert_callback_once(created["run_id"], order_failed, status="failed")
    shown = client.get(created["url"]).get_json()
    assert (shown["status"], shown["callbacks"]) == ("failed", "1")


def test_a_504_after_create_confirms_the_order_once(fake_nen: Any, client: FlaskClient) -> None:
    fake_nen.error_after_create(504)
    created = order(client)
    fake_nen.assert_callback_once(created["run_id"], order_done, status="success")
    assert fake_nen.stats()["posts"] == 1
    assert client.get(created["url"]).get_json()["callbacks"] == "1"


def test_bad_parameters_send_nothing(fake_nen: Any, client: FlaskClient) -> None:
    answer = client.post("/orders", data={**JANE, "dob": "15/01/1990"})
    assert answer.status_code == 400
    assert "params.DATE_OF_BIRTH" in answer.get_json()["fields"]
    fake_nen.settle()
    assert fake_nen.stats()["posts"] == 0
