"""``GET /metrics`` as an ASGI endpoint: served alone on worker hosts (``nen-celery metrics
serve``, always on), and on the receiver's mounts only with ``NEN_RECEIVER_METRICS=true``.

Why opt-in there: the exposition shows business volume and refusal counts (a prober could
watch its ``invalid_signature`` probes register), and the receiver is public. Each scrape reads
the run store (two Redis reads): it runs on the scrape thread of its own (runtime/metrics.py),
never on the thread pool the webhooks use.
"""

from __future__ import annotations

import asyncio

from nen_celery.extras import requires_extra

with requires_extra("receiver", __name__):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

from nen_celery.runtime import metrics


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition (see nen_celery.runtime.metrics; multiprocess with PROMETHEUS_MULTIPROC_DIR)."""
    loop = asyncio.get_running_loop()
    body, content_type = await loop.run_in_executor(metrics.scrape_executor(), metrics.render)
    return Response(body, media_type=content_type)


async def receiver_metrics(request: Request) -> Response:
    """The receiver's ``GET /metrics``: 404, as if absent, unless NEN_RECEIVER_METRICS is on."""
    if not metrics.public_on_receiver():
        return PlainTextResponse("Not Found", 404)
    return await metrics_endpoint(request)


def create_metrics_app() -> Starlette:
    return Starlette(routes=[Route("/metrics", metrics_endpoint, methods=["GET"])])


def serve_metrics(host: str, port: int) -> None:  # pragma: no cover - blocking server
    with requires_extra("receiver", __name__):
        import uvicorn

    uvicorn.run(create_metrics_app(), host=host, port=port, log_level="warning")
