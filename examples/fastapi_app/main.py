"""A FastAPI app that starts Nen runs through its Celery app (worker.py); Nen's webhooks come in on /nen.

    uvicorn main:app --port 8000          # the API and the webhook receiver
    celery -A worker worker -l INFO       # the worker

Endpoints are plain ``def``: start_run and get_run do blocking Redis I/O (milliseconds), so
FastAPI runs them in its thread pool instead of on the event loop.
"""

from __future__ import annotations

import os
import uuid

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from worker import db, render_pdf, report_finished, report_key

import nen_celery
from nen_celery.web.fastapi import router as nen_router

REPORT_WORKFLOW_ID = os.environ.get("EXAMPLE_WORKFLOW_ID", "9a3e5f17-0c2b-4e8d-b6a4-51d7c8e2f093")


class ReportParams(BaseModel):
    PATIENT_NAME: str = Field(min_length=1)
    DATE_OF_BIRTH: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


nen_celery.register_workflow(REPORT_WORKFLOW_ID, params=ReportParams)


class NewReport(BaseModel):
    name: str
    dob: str


class Report(BaseModel):
    report_id: str
    run_id: str
    status: str
    run_status: str | None
    callbacks: int


app = FastAPI(title="reports")
app.include_router(nen_router, prefix="/nen")  # POST /nen/webhooks/nen, GET /nen/healthz


@app.post("/reports", status_code=202)
def create_report(body: NewReport) -> dict[str, str]:
    report_id = uuid.uuid4().hex
    db.hset(report_key(report_id), "status", "running")
    try:
        handle = nen_celery.start_run(
            REPORT_WORKFLOW_ID,
            {"PATIENT_NAME": body.name, "DATE_OF_BIRTH": body.dob},
            on_complete=report_finished.s(report_id),
            on_failure=report_finished.s(report_id),
        )
    except nen_celery.InvalidParams as exc:  # nothing was queued
        db.delete(report_key(report_id))
        raise HTTPException(400, {"error": "invalid_params", "fields": dict(exc.errors)}) from None
    db.hset(report_key(report_id), "run_id", handle.run_id)
    render_pdf.delay(report_id)
    url = app.url_path_for("show_report", report_id=report_id)
    return {"report_id": report_id, "run_id": handle.run_id, "url": url}


@app.get("/reports/{report_id}")
def show_report(report_id: str) -> Report:
    report = db.hgetall(report_key(report_id))
    if not report:
        raise HTTPException(404, "no such report")
    run = nen_celery.get_run(report["run_id"]) if report.get("run_id") else None
    return Report(
        report_id=report_id,
        run_id=report.get("run_id", ""),
        status=report["status"],
        run_status=run.status if run else None,
        callbacks=int(report.get("callbacks", 0)),
    )
