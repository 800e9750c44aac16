"""Framework-free webhook handling: verify, validate, look up, enqueue. Each web adapter wraps this.

1. ``check`` (verify.py): size (413), content type (415), signature (401; scheme
   ``NEN_WEBHOOK_SCHEME``), body shape (400). Pure: nothing is read or written.
2. ``deliver`` (delivery.py; the ASGI app: ``deliver_async``), one plan for both (decide.py):
   a webhook whose URL names its run (``?nen_run=``, hints.py; every run this package starts
   has one) with a valid token is applied here with one script (apply.py): a ``processing`` one
   200 ``applied``; a terminal one ends its run, and when it claimed the run's completion its
   callback is published before the 200. With ``NEN_WEBHOOK_APPLY_PROCESSING=false``, a run
   store that fails, or a webhook that would bind an ``unknown`` run, it is queued for that run
   instead: 200 ``queued``, no Redis read. A hint whose token is missing or wrong is ignored
   (logged at WARNING, counted as ``hint_refused``): the webhook goes the messageId way. Then one
   GET of the messageId index (bounded by ``NEN_PUBLISH_TIMEOUT``), and ``ingest_webhook`` is
   queued whatever the lookup said. Known messageId: 200. Unknown:
   ``NEN_WEBHOOK_PARKED_STATUS`` (202) ``{"status": "parked"}``: the ingest task parks it for
   the binding / reconciliation; not an error, so no retry storm from Nen. Lookup failed
   (Redis down): still queued, 200. Broker down: 503, so Nen redelivers. Nothing is answered
   2xx before what it wrote is durable (store/durable.py; 503 otherwise).

The run store, publisher and appliers each process keeps are in resources.py. This module
also keeps every one of those names importable from here, where callers have found them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from nen_celery.web.answers import Answer
from nen_celery.web.delivery import deliver, deliver_async, ingest_message, publish_with_celery
from nen_celery.web.resources import Lookup, async_apply, direct_publisher, run_lookup, run_store
from nen_celery.web.verify import SIGNATURE_HEADER, check, refused_early, run_hint, verify_signature

if TYPE_CHECKING:
    from nen_celery.runtime.context import Context

__all__ = [
    "SIGNATURE_HEADER",
    "Lookup",
    "async_apply",
    "check",
    "deliver",
    "deliver_async",
    "direct_publisher",
    "handle",
    "ingest_message",
    "publish_with_celery",
    "refused_early",
    "run_hint",
    "run_lookup",
    "run_store",
    "verify_signature",
]


def handle(ctx: Context, body: bytes, headers: Mapping[str, str], query: str | bytes = "") -> Answer:
    """``check`` then ``deliver``: the whole answer to a body read within the limit (blocking).

    ``query``: the request's raw query string (it may carry the run hint).
    """
    error, parsed = check(ctx.settings, body, headers)
    if error is not None:
        return error
    return deliver(ctx, body, parsed, query)
