"""Flask integration: an extension (``init_app`` pattern) registering the webhook Blueprint.

::

    app = Flask(__name__)
    app.config["NEN_WEBHOOK_SECRET"] = "..."     # any NEN_* setting; the rest from the environment
    nen = NenCelery(app)                          # or NenCelery() ... nen.init_app(app)
    # POST /nen/webhooks/nen, GET /nen/healthz, /nen/metrics (url_prefix= moves them; None: the root)

``init_app`` installs the app's ``NEN_*`` config keys over the environment, process-wide
(the settings are per process, shared with ``start_run`` and in-process workers): create the
app before the worker reads its settings, and use one configured app per process. An unknown
``NEN_*`` key or an invalid value raises ``ConfigurationError`` naming it. The route is
exempted from Flask-WTF's CSRF protection when that is installed. Answers are exactly the
ASGI receiver's; the body is read up to ``NEN_WEBHOOK_MAX_BODY`` and no further, within
``NEN_WEBHOOK_BODY_TIMEOUT`` (408 past it; checked between reads, see web/host.py: give your WSGI
server a timeout too, docs/operations.md). ``GET .../healthz`` is 503 ``not_ready`` with the
reason while no webhook secret is set; ``GET .../metrics`` answers only with
``app.config["NEN_RECEIVER_METRICS"] = True`` (404 otherwise: it shows volumes and refusals).

Logging is yours: the extension adds no handler, filter or formatter. To keep nen's secrets and
URL queries out of your logs, add the redaction to your handlers::

    handler.addFilter(nen_celery.logs.redaction.RedactingFilter())
    # dictConfig: "filters": {"nen": {"()": "nen_celery.logs.redaction.RedactingFilter"}}
"""

from __future__ import annotations

from nen_celery.extras import requires_extra

with requires_extra("flask", __name__):
    from flask import Blueprint, Flask, Response, abort, jsonify, request

from nen_celery.runtime import metrics
from nen_celery.settings import install_overrides
from nen_celery.web.answers import Answer
from nen_celery.web.host import receive
from nen_celery.web.verify import readiness

blueprint = Blueprint("nen_celery", __name__)


def _json(answer: Answer) -> tuple[Response, int]:
    return jsonify(answer.body), answer.status_code


@blueprint.post("/webhooks/nen")
def webhook() -> tuple[Response, int]:
    """Verify the signature on the raw body, queue the webhook, answer within Nen's 5 s."""
    headers = dict(request.headers.items())
    length = request.headers.get("Content-Length")
    return _json(receive(request.stream.read, length, headers, request.query_string))


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    return _json(readiness())


@blueprint.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus exposition (nen_celery.runtime.metrics), only with NEN_RECEIVER_METRICS (else
    404); rendered on the scrape thread, waited for at most 5 s."""
    if not metrics.public_on_receiver():
        abort(404)
    try:
        body, content_type = metrics.render_apart(5.0)
    except TimeoutError:
        return Response("metrics timed out", status=503, content_type="text/plain")
    return Response(body, content_type=content_type)


class NenCelery:
    """The Flask extension: ``NenCelery(app)`` or ``NenCelery()`` then ``init_app(app)``."""

    def __init__(self, app: Flask | None = None, *, url_prefix: str | None = "/nen") -> None:
        self.url_prefix = url_prefix
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        install_overrides({key: value for key, value in app.config.items() if key.startswith("NEN_")})
        app.register_blueprint(blueprint, url_prefix=self.url_prefix)
        csrf = app.extensions.get("csrf")  # Flask-WTF's CSRFProtect: Nen cannot send a token
        if csrf is not None and hasattr(csrf, "exempt"):
            csrf.exempt(blueprint)
        app.extensions["nen_celery"] = self
