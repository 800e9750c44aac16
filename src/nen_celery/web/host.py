"""The webhook endpoint for synchronous (WSGI) frameworks: Django and Flask call ``receive``.

Same steps and answers as the ASGI receiver: settings, size limit and deadline while reading,
``check``, then the same plan (decide.py), every effect blocking (``delivery.deliver``). The
framework only supplies the raw body reader and the headers.

The deadline (``NEN_WEBHOOK_BODY_TIMEOUT``) is checked between reads of at most ``CHUNK`` bytes:
a body trickled in for longer is cut (408) instead of holding a worker thread for the whole
trickle. A single read that gets no bytes at all blocks inside the WSGI server, out of the
app's reach: bound it there (gunicorn's ``--timeout``, a buffering proxy; docs/operations.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from nen_celery.errors import ConfigurationError
from nen_celery.runtime.context import get_context
from nen_celery.web.answers import NOT_CONFIGURED, Answer, body_timeout, too_large
from nen_celery.web.receiver import handle
from nen_celery.web.verify import refused_early

Read = Callable[[int], bytes]

# bytes per read: a WSGI stream's read(n) waits for all n, so the deadline is checked at least
# every CHUNK bytes (a webhook body is a few KiB: one or two reads)
CHUNK = 16 * 1024


def read_limited(read: Read, declared: str | None, limit: int, timeout: float | None = None) -> bytes | None:
    """At most ``limit`` bytes from ``read``; None once the body is (or says it is) larger.
    TimeoutError once ``timeout`` s have passed and the body is still coming."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = read(min(CHUNK, limit + 1 - size))  # a stream may answer short: loop until EOF
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"body not received within {timeout:g} s")
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
    limit, timeout = ctx.settings.webhook_max_body, ctx.settings.webhook_body_timeout
    try:
        body = read_limited(read, declared_length, limit, timeout)
    except TimeoutError:
        return refused_early(body_timeout(timeout))
    if body is None:
        return refused_early(too_large(limit))
    return handle(ctx, body, headers, query)
