from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, request, url_for

import nen_celery

from . import orders
from .tasks import order_done, order_failed, send_receipt
from .workflows import CHECK_WORKFLOW_ID

bp = Blueprint("shop", __name__)


@bp.post("/orders")
def create_order() -> tuple[dict[str, Any], int]:
    """Save the order, start its Nen run and answer at once: the run goes on in the workers."""
    params = {"PATIENT_NAME": request.form.get("name", ""), "DATE_OF_BIRTH": request.form.get("dob", "")}
    order_id = orders.create(params["PATIENT_NAME"], params["DATE_OF_BIRTH"], request.form.get("email", ""))
    try:
        handle = nen_celery.start_run(
            CHECK_WORKFLOW_ID, params, on_complete=order_done.s(order_id), on_failure=order_failed.s(order_id)
        )
    except nen_celery.InvalidParams as exc:  # nothing was queued
        orders.delete(order_id)
        return {"error": "invalid_params", "fields": dict(exc.errors)}, 400
    orders.update(order_id, run_id=handle.run_id)
    send_receipt.delay(order_id)
    return {
        "order": order_id,
        "run_id": handle.run_id,
        "url": url_for("shop.show_order", order_id=order_id),
    }, 201


@bp.get("/orders/<int:order_id>")
def show_order(order_id: int) -> dict[str, Any]:
    order = orders.get(order_id)
    if not order:
        abort(404)
    run = nen_celery.get_run(order["run_id"]) if order.get("run_id") else None
    return {"order": order_id, **order, "run_status": run.status if run else None}
