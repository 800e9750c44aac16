"""A Flask app that starts Nen runs and shows their status; the webhook comes in through the extension.

A test fixture of tests/test_web_flask.py (the old Flask example); run by hand:

    flask --app tests.webapps.flask_site run --port 5000               # the web app (and webhook receiver)
    celery -A tests.webapps.flask_site:celery worker -l info           # the worker (same settings, this task)

POST /runs starts a run and redirects to /runs/<run_id>, which shows its status until it ends.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, abort, redirect, render_template_string, request, url_for
from pydantic import BaseModel, Field
from werkzeug.wrappers import Response

import nen_celery
from nen_celery.web.flask import NenCelery
from nen_celery.worker import app as celery

log = logging.getLogger(__name__)

WORKFLOW_ID = os.environ.get("EXAMPLE_WORKFLOW_ID", "6f1c2a57-3b9e-4d1a-8c55-0a7e9b2d4f10")


class PatientParams(BaseModel):
    PATIENT_NAME: str = Field(min_length=1)
    DATE_OF_BIRTH: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


nen_celery.register_workflow(WORKFLOW_ID, params=PatientParams)


@celery.task(name="flask_example.run_finished")
def run_finished(run: dict[str, Any]) -> None:
    """on_complete / on_failure: runs once on a worker when the run ends (store, email, ...)."""
    log.info("run %s ended %s", run["run_id"], run["status"])


PAGE = """<!doctype html>
{% if not run.terminal %}<meta http-equiv="refresh" content="1">{% endif %}
<title>Run {{ run.run_id }}</title>
<p>Run <code>{{ run.run_id }}</code>: <strong id="status">{{ run.status }}</strong></p>
<p>Callback: <span id="callback">{{ run.completion or "not yet" }}</span></p>
"""


def create_app(**config: Any) -> Flask:
    """``config`` may carry NEN_* settings; whatever it leaves out comes from the environment."""
    app = Flask(__name__)
    app.config.update(config)
    NenCelery(app, url_prefix=None)  # at the site root: POST /webhooks/nen, GET /healthz

    @app.post("/runs")
    def start() -> Response | tuple[dict[str, Any], int]:
        params = {"PATIENT_NAME": request.form.get("name", ""), "DATE_OF_BIRTH": request.form.get("dob", "")}
        try:
            handle = nen_celery.start_run(
                WORKFLOW_ID, params, on_complete=run_finished.s(), on_failure=run_finished.s()
            )
        except nen_celery.InvalidParams as exc:
            return {"error": "invalid_params", "fields": dict(exc.errors)}, 400
        return redirect(url_for("show", run_id=handle.run_id), 303)  # never waits on Nen

    @app.get("/runs/<run_id>")
    def show(run_id: str) -> str:
        run = nen_celery.get_run(run_id)
        if run is None:
            abort(404)
        return render_template_string(PAGE, run=run)

    return app


# The worker imports this module so it shares the app's settings and knows run_finished.
app = create_app()

__all__ = ["app", "celery", "create_app"]
