from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_POST

import nen_celery

from .models import Order
from .tasks import order_done, order_failed, send_email
from .workflows import CHECK_WORKFLOW_ID


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        format_html(
            '<form method="post" action="{}"><input type="hidden" name="csrfmiddlewaretoken" value="{}">'
            '<input name="name" placeholder="Name"> <input name="dob" placeholder="1990-01-15"> '
            '<input name="email" placeholder="you@example.com"> <button>Order</button></form>',
            reverse("create_order"),
            get_token(request),
        )
    )


@require_POST
def create_order(request: HttpRequest) -> HttpResponse:
    """Save the order, start its Nen run and answer at once: the run goes on in the workers."""
    params = {"PATIENT_NAME": request.POST.get("name", ""), "DATE_OF_BIRTH": request.POST.get("dob", "")}
    try:
        with transaction.atomic():
            order = Order.objects.create(
                name=params["PATIENT_NAME"],
                date_of_birth=params["DATE_OF_BIRTH"],
                email=request.POST.get("email", ""),
            )
            handle = nen_celery.start_run(
                CHECK_WORKFLOW_ID,
                params,
                on_complete=order_done.s(order.pk),
                on_failure=order_failed.s(order.pk),
            )
            order.run_id = handle.run_id
            order.save(update_fields=["run_id"])
    except nen_celery.InvalidParams as exc:  # nothing saved, nothing queued
        return JsonResponse({"error": "invalid_params", "fields": dict(exc.errors)}, status=400)
    send_email.delay(order.email, f"Order {order.pk} received", "We are checking your order.")
    url = reverse("order_detail", args=[order.pk])
    return JsonResponse({"order": order.pk, "run_id": order.run_id, "url": url}, status=201)


@require_GET
def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    order = get_object_or_404(Order, pk=pk)
    run = nen_celery.get_run(order.run_id)
    return JsonResponse(
        {
            "order": order.pk,
            "status": order.status,
            "run_id": order.run_id,
            "run_status": run.status if run else None,
        }
    )
