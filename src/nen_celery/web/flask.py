"""Flask integration: an extension (``init_app`` pattern) registering the webhook Blueprint.

::

    app = Flask(__name__)
    app.config["NEN_WEBHOOK_SECRET"] = "..."     # any NEN_* setting; the rest from the environment
    nen = NenCelery(app)                          # or NenCelery() ... nen.init_app(app)
    # POST /webhooks/nen and GET /healthz (url_prefix="/nen" moves them)

``init_app`` installs the app's ``NEN_*`` config keys over the environment, process-wide
(the settings are per process, shared with ``start_run`` and in-process workers): create the
app before the worker reads its settings, and use one configured app per process. An unknown
``NEN_*`` key or an invalid value raises ``ConfigurationError`` naming it. The route is
exempted from Flask-WTF's CSRF protection when that is installed. Answers are exactly the
ASGI receiver's; the body is read up to ``NEN_WEBHOOK_MAX_BODY`` and no further.

Logging is yours: the extension adds no handler, filter or formatter. To keep nen's secrets and
URL queries out of your logs, add the redaction to your handlers::

    handler.addFilter(nen_celery.logs.redaction.RedactingFilter())
    # dictConfig: "filters": {"nen": {"()": "nen_celery.logs.redaction.RedactingFilter"}}
"""

from __future__ import annotations

from nen_celery.extras import requires_extra

with requires_extra("flask", __name__):
    from flask import Blueprint, Flask, Response, jsonify, request

from nen_celery.runtime import metrics
from nen_celery.settings import install_overrides
from nen_celery.web.answers import HEALTHY, Answer
from nen_celery.web.host import receive

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
    return _json(HEALTHY)


@blueprint.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus exposition (nen_celery.runtime.metrics)."""
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


class NenCelery:
    """The Flask extension: ``NenCelery(app)`` or ``NenCelery()`` then ``init_app(app)``."""

    def __init__(self, app: Flask | None = None, *, url_prefix: str | None = None) -> None:
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
