"""``GET /metrics`` as an ASGI endpoint, mounted by the receiver and served alone on worker hosts."""

from __future__ import annotations

from nen_celery.extras import requires_extra

with requires_extra("receiver", __name__):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

from nen_celery.runtime import metrics


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition (see nen_celery.runtime.metrics; multiprocess with PROMETHEUS_MULTIPROC_DIR)."""
    body, content_type = await run_in_threadpool(metrics.render)
    return Response(body, media_type=content_type)


def create_metrics_app() -> Starlette:
    return Starlette(routes=[Route("/metrics", metrics_endpoint, methods=["GET"])])


def serve_metrics(host: str, port: int) -> None:  # pragma: no cover - blocking server
    with requires_extra("receiver", __name__):
        import uvicorn

    uvicorn.run(create_metrics_app(), host=host, port=port, log_level="warning")
