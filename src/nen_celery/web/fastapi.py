"""FastAPI integration: the ASGI receiver's own endpoints as an ``APIRouter``.

::

    from nen_celery.web.fastapi import router
    app.include_router(router, prefix="/nen")     # POST /nen/webhooks/nen, GET /nen/healthz

``GET /nen/metrics`` answers only with ``NEN_RECEIVER_METRICS=true`` (404 otherwise: it shows
volumes and refusal counts); ``GET /nen/healthz`` is 503 ``not_ready`` while no secret is set.

or mount the whole Starlette receiver: ``app.mount("/nen", nen_celery.web.asgi.create_app())``.
Both run the very endpoint functions of ``nen_celery.web.asgi`` (same answers, same streamed
size limit); settings come from the environment (``NEN_*``). The webhook is left out of the
OpenAPI schema: it is for Nen, not for your API's clients.

Logging is yours: nothing here adds a handler, filter or formatter. To keep nen's secrets and URL
queries out of your logs, add ``nen_celery.logs.redaction.RedactingFilter()`` to your handlers
(``handler.addFilter(...)``; under uvicorn, its ``default`` and ``access`` handlers too).
"""

from __future__ import annotations

from nen_celery.extras import requires_extra

with requires_extra("fastapi", __name__):
    from fastapi import APIRouter

from nen_celery.web.asgi import healthz, webhook
from nen_celery.web.metrics import receiver_metrics


def create_router() -> APIRouter:
    """A fresh router with ``POST /webhooks/nen``, ``GET /healthz`` and the opt-in ``GET /metrics``."""
    router = APIRouter(tags=["nen-celery"])
    router.add_api_route("/webhooks/nen", webhook, methods=["POST"], include_in_schema=False)
    router.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    router.add_api_route("/metrics", receiver_metrics, methods=["GET"], include_in_schema=False)
    return router


router = create_router()
