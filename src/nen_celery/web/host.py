"""The webhook endpoint for synchronous (WSGI) frameworks: Django and Flask call ``receive``.

Same steps and answers as the ASGI receiver: settings, size limit while reading, ``check``,
``deliver``. The framework only supplies the raw body reader and the headers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from .. import metrics
from ..config import ConfigurationError
from ..context import get_context
from .receiver import Answer, check, deliver, run_lookup

log = logging.getLogger("nen_celery.web")

Read = Callable[[int], bytes]

HEALTHY = Answer(200, {"status": "ok"})
NOT_CONFIGURED = Answer(503, {"error": "not_configured", "message": "receiver is misconfigured"})


def too_large(limit: int) -> Answer:
    return Answer(413, {"error": "body_too_large", "message": f"limit is {limit} bytes"})


def read_limited(read: Read, declared: str | None, limit: int) -> bytes | None:
    """At most ``limit`` bytes from ``read``; None once the body is (or says it is) larger."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = read(limit + 1 - size)  # a stream may answer short: loop until EOF or past the limit
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


def _counted(answer: Answer) -> Answer:
    """A refusal made before ``check`` ran: counted here, as check/deliver count theirs."""
    metrics.webhook_answered(answer.status_code, answer.body)
    return answer


def receive(read: Read, declared_length: str | None, headers: Mapping[str, str]) -> Answer:
    """Handle one ``POST /webhooks/nen``: the answer the ASGI receiver gives for the same request.

    ``read(n)`` returns up to n bytes of the raw body (b"" at the end); ``declared_length`` is
    the Content-Length header, if any; header names may be in any case.
    """
    try:
        ctx = get_context()
    except ConfigurationError:
        # Never log the error text itself: a settings error may quote the values it was given.
        log.error("webhook refused: the receiver's settings are invalid (see its start-up error)")
        return _counted(NOT_CONFIGURED)
    limit = ctx.settings.webhook_max_body
    body = read_limited(read, declared_length, limit)
    if body is None:
        return _counted(too_large(limit))
    error, parsed = check(ctx.settings, body, headers)
    if error is not None:
        return error
    return deliver(
        run_lookup(ctx),
        ctx.sealer,
        body,
        parsed,
        ctx.settings.publish_timeout,
        ctx.settings.webhook_parked_status,
    )
