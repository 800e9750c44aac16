from __future__ import annotations

import os

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.middleware.csrf import get_token
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_POST
from pydantic import BaseModel, Field

import nen_celery

from .tasks import run_finished

WORKFLOW_ID = os.environ.get("EXAMPLE_WORKFLOW_ID", "2b7d0c91-58a4-4f3e-9d6b-7c1e0f4a8b23")


class PatientParams(BaseModel):
    PATIENT_NAME: str = Field(min_length=1)
    DATE_OF_BIRTH: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


nen_celery.register_workflow(WORKFLOW_ID, params=PatientParams)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        format_html(
            '<form method="post" action="{}"><input type="hidden" name="csrfmiddlewaretoken" value="{}">'
            '<input name="name" placeholder="Patient name"> <input name="dob" placeholder="1990-01-15">'
            "<button>Start run</button></form>",
            reverse("start"),
            get_token(request),
        )
    )


@require_POST
def start(request: HttpRequest) -> HttpResponse:
    params = {"PATIENT_NAME": request.POST.get("name", ""), "DATE_OF_BIRTH": request.POST.get("dob", "")}
    try:
        handle = nen_celery.start_run(
            WORKFLOW_ID, params, on_complete=run_finished.s(), on_failure=run_finished.s()
        )
    except nen_celery.InvalidParams as exc:
        return JsonResponse({"error": "invalid_params", "fields": dict(exc.errors)}, status=400)
    return HttpResponseRedirect(reverse("show", args=[handle.run_id]), status=303)  # never waits on Nen


@require_GET
def show(request: HttpRequest, run_id: str) -> HttpResponse:
    run = nen_celery.get_run(run_id)
    if run is None:
        raise Http404("no such run")
    refresh = "" if run.terminal else '<meta http-equiv="refresh" content="1">'
    page = (
        "<!doctype html>" + refresh + '<title>Run {}</title><p>Run <code>{}</code>: <strong id="status">{}'
        '</strong></p><p>Callback: <span id="callback">{}</span></p>'
    )
    return HttpResponse(format_html(page, run.run_id, run.run_id, run.status, run.completion or "not yet"))
