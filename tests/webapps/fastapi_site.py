"""A FastAPI app that starts Nen runs and reports their status; Nen's webhooks come in on /nen.

A test fixture of tests/test_web_fastapi.py (the old FastAPI example); run by hand:

    uvicorn tests.webapps.fastapi_site:app --port 8000                        # API and webhook receiver
    celery -A nen_celery.worker worker -I tests.webapps.fastapi_site -l info  # worker, with run_finished

Endpoints are plain ``def``: start_run and get_run do blocking Redis I/O (milliseconds), so
FastAPI runs them in its thread pool instead of on the event loop.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

import nen_celery
from nen_celery.web.fastapi import router as nen_router
from nen_celery.worker import app as celery

log = logging.getLogger(__name__)

WORKFLOW_ID = os.environ.get("EXAMPLE_WORKFLOW_ID", "9a3e5f17-0c2b-4e8d-b6a4-51d7c8e2f093")


class PatientParams(BaseModel):
    PATIENT_NAME: str = Field(min_length=1)
    DATE_OF_BIRTH: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


nen_celery.register_workflow(WORKFLOW_ID, params=PatientParams)


@celery.task(name="fastapi_example.run_finished")
def run_finished(run: dict[str, Any]) -> None:
    """on_complete / on_failure: runs once on a worker when the run ends (store, notify, ...)."""
    log.info("run %s ended %s", run["run_id"], run["status"])


class StartRun(BaseModel):
    name: str
    dob: str


class RunStatus(BaseModel):
    run_id: str
    status: str
    finished: bool
    callback: str


app = FastAPI(title="nen-celery example")
app.include_router(nen_router, prefix="/nen")  # POST /nen/webhooks/nen, GET /nen/healthz


@app.post("/runs", status_code=202)
def start(body: StartRun) -> dict[str, str]:
    try:
        handle = nen_celery.start_run(
            WORKFLOW_ID,
            {"PATIENT_NAME": body.name, "DATE_OF_BIRTH": body.dob},
            on_complete=run_finished.s(),
            on_failure=run_finished.s(),
        )
    except nen_celery.InvalidParams as exc:
        raise HTTPException(400, {"error": "invalid_params", "fields": dict(exc.errors)}) from None
    return {"run_id": handle.run_id, "status_url": app.url_path_for("show", run_id=handle.run_id)}


@app.get("/runs/{run_id}")
def show(run_id: str) -> RunStatus:
    run = nen_celery.get_run(run_id)
    if run is None:
        raise HTTPException(404, "no such run")
    return RunStatus(run_id=run.run_id, status=run.status, finished=run.terminal, callback=run.completion)
