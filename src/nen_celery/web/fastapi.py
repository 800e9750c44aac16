"""FastAPI integration: the ASGI receiver's own endpoints as an ``APIRouter``.

::

    from nen_celery.web.fastapi import router
    app.include_router(router, prefix="/nen")     # POST /nen/webhooks/nen, GET /nen/healthz

or mount the whole Starlette receiver: ``app.mount("/nen", nen_celery.web.asgi.create_app())``.
Both run the very endpoint functions of ``nen_celery.web.asgi`` (same answers, same streamed
size limit); settings come from the environment (``NEN_*``). The webhook is left out of the
OpenAPI schema: it is for Nen, not for your API's clients.
"""

from __future__ import annotations

from fastapi import APIRouter

from ..logging_filters import install_redaction
from .asgi import healthz, webhook
from .metrics import metrics_endpoint


def create_router() -> APIRouter:
    """A fresh router with ``POST /webhooks/nen`` and ``GET /healthz``."""
    install_redaction()
    router = APIRouter(tags=["nen-celery"])
    router.add_api_route("/webhooks/nen", webhook, methods=["POST"], include_in_schema=False)
    router.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    router.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    return router


router = create_router()
