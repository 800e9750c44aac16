"""The webhook endpoint for synchronous (WSGI) frameworks: Django and Flask call ``receive``.

Same steps and answers as the ASGI receiver: settings, size limit while reading, ``check``,
``deliver``. The framework only supplies the raw body reader and the headers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from nen_celery.errors import ConfigurationError
from nen_celery.runtime.context import get_context
from nen_celery.web.answers import NOT_CONFIGURED, Answer, too_large
from nen_celery.web.receiver import handle
from nen_celery.web.verify import refused_early

Read = Callable[[int], bytes]


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


def receive(
    read: Read, declared_length: str | None, headers: Mapping[str, str], query: str | bytes = ""
) -> Answer:
    """Handle one ``POST /webhooks/nen``: the answer the ASGI receiver gives for the same request.

    ``read(n)`` returns up to n bytes of the raw body (b"" at the end); ``declared_length`` is
    the Content-Length header, if any; header names may be in any case; ``query`` is the raw
    query string (it may name the run, hints.py).
    """
    try:
        ctx = get_context()
    except ConfigurationError:
        return refused_early(NOT_CONFIGURED)
    limit = ctx.settings.webhook_max_body
    body = read_limited(read, declared_length, limit)
    if body is None:
        return refused_early(too_large(limit))
    return handle(ctx, body, headers, query)
