"""A guest in the user's process (issue 16): importing nen_celery and using its web integrations
changes nothing process-wide: no LogRecord factory, no handler, filter or formatter on the root
or uvicorn loggers, no root level, no garbage-collector freeze. Only the standalone receiver
(``uvicorn nen_celery.web.asgi:app``, a process nen runs itself) puts the redaction on its own
handlers when it starts.

Each check runs in a fresh interpreter: this test process has long been touched by others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

API_KEY = "guest-api-key-5c1e7a"
ENV = {
    "NEN_API_URL": "http://127.0.0.1:9/",
    "NEN_API_KEY": API_KEY,
    "NEN_SIGNING_KEY": "guest-signing-key-77d2",
    "NEN_WEBHOOK_SECRET": "guest-webhook-secret-9e41",
    "NEN_REDIS_URL": "redis://127.0.0.1:9/0",  # never connected to: nothing here needs Redis
}

PRELUDE = """
import gc, json, logging, sys

def snapshot():
    def handler(h):
        return {"id": id(h), "type": type(h).__name__, "filters": [id(f) for f in h.filters],
                "filter_types": [type(f).__name__ for f in h.filters], "formatter": id(h.formatter),
                "level": h.level}
    out = {"factory": id(logging.getLogRecordFactory()), "root_level": logging.root.level,
           "gc_enabled": gc.isenabled(), "gc_frozen": gc.get_freeze_count(),
           "last_resort": handler(logging.lastResort)}
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        out[name or "root"] = {"handlers": [handler(h) for h in logger.handlers],
                               "filters": [id(f) for f in logger.filters], "level": logger.level}
    return out

# a host that configured its own logging before importing nen_celery
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
logging.getLogger("uvicorn").addHandler(logging.StreamHandler(sys.stdout))
"""

GUEST = """
before = snapshot()

import nen_celery, nen_celery.logs.redaction, nen_celery.logs.runlog, nen_celery.observe
import nen_celery.web.asgi, nen_celery.web.fastapi, nen_celery.web.flask
from starlette.testclient import TestClient

mounted = nen_celery.web.asgi.create_app()
router = nen_celery.web.fastapi.create_router()

import flask
from nen_celery.web.flask import NenCelery
flask_app = flask.Flask("guest")
NenCelery(flask_app)

import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["nen_celery.web.django.NenCeleryConfig"], NEN_CELERY={})
django.setup()
from django.apps import apps
assert apps.get_app_config("nen_celery").name == "nen_celery.web.django"
apps.get_app_config("nen_celery").ready()  # once more, explicitly

with TestClient(nen_celery.web.asgi.create_app()) as client:  # its lifespan runs
    assert client.get("/healthz").status_code == 200

import fastapi
host = fastapi.FastAPI()
host.include_router(router, prefix="/nen")
host.mount("/mounted", mounted)
with TestClient(host) as client:
    assert client.get("/nen/healthz").status_code == 200
    assert client.get("/mounted/healthz").status_code == 200

flask_client = flask_app.test_client()
assert flask_client.get("/nen/healthz").status_code == 200  # the blueprint's default prefix

logging.getLogger("guest").info("a line after everything")
print(json.dumps({"before": before, "after": snapshot()}))
"""

STANDALONE = """
import io, os
before = snapshot()
import nen_celery.web.asgi as asgi
from nen_celery.logs.redaction import RedactingFilter
from nen_celery.logs.runlog import RunIdFilter
from starlette.testclient import TestClient

imported = snapshot()
out = io.StringIO()
logging.root.handlers[0].setStream(out)
with TestClient(asgi.app) as client:
    assert client.get("/healthz").status_code == 200
    during = snapshot()
    logging.getLogger("guest").warning("key %s", os.environ["NEN_API_KEY"])
print(json.dumps({"before": before, "imported": imported, "during": during,
                  "root_output": out.getvalue()}))
"""


def run(script: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("NEN_", "DJANGO_"))}
    env.update(ENV)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PRELUDE) + textwrap.dedent(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_and_using_the_integrations_changes_nothing_process_wide() -> None:
    result = run(GUEST)
    before, after = result["before"], result["after"]
    # the snapshot is real: the host's own handlers and levels are in it
    assert before["root"]["handlers"][0]["type"] == "StreamHandler"
    assert before["uvicorn"]["handlers"][0]["type"] == "StreamHandler"
    assert before["root_level"] == 20
    assert before["gc_enabled"] is True and before["gc_frozen"] == 0
    for key in before:
        assert after[key] == before[key], key
    assert after == before


def test_the_standalone_receiver_redacts_its_own_handlers() -> None:
    """``uvicorn nen_celery.web.asgi:app`` is nen's own process: its lifespan adds the filters."""
    result = run(STANDALONE)
    before, imported, during = result["before"], result["imported"], result["during"]
    assert imported == before  # importing the module (which builds ``app``) changes nothing
    for name in ("root", "uvicorn"):
        (handler,) = during[name]["handlers"]
        assert handler["id"] == before[name]["handlers"][0]["id"]  # the same handler, filtered
        assert handler["filter_types"] == ["RedactingFilter", "RunIdFilter"], (name, handler)
    assert during["last_resort"]["filter_types"] == ["RedactingFilter"]
    assert during["factory"] == before["factory"]  # a filter, never the record factory
    assert during["gc_frozen"] > 0  # its own collector: the long-lived modules frozen out
    output = result["root_output"]
    assert "WARNING guest key" in output and "[REDACTED]" in output, output
    assert API_KEY not in output, output
