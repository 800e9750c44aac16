"""Framework-free webhook handling: verify, validate, look up, enqueue. Each web adapter wraps this.

1. ``check`` (verify.py): size (413), content type (415), signature (401; scheme
   ``NEN_WEBHOOK_SCHEME``), body shape (400). Pure: nothing is read or written.
2. ``deliver`` (delivery.py): a webhook whose URL names its run (``?nen_run=``, hints.py; every
   run this package starts has one) with a valid token is queued for that run at once: 200, no
   Redis read; a ``processing`` one is applied here instead, with one script (apply.py): 200
   ``applied``. A hint whose token is missing or wrong is ignored (logged at WARNING, counted
   as ``hint_refused``): the webhook goes the messageId way. Otherwise one GET
   of the messageId index (bounded by ``NEN_PUBLISH_TIMEOUT``), then ``ingest_webhook`` is
   queued whatever the lookup said. Known messageId: 200. Unknown:
   ``NEN_WEBHOOK_PARKED_STATUS`` (202) ``{"status": "parked"}``: the ingest task parks it for
   the binding / reconciliation; not an error, so no retry storm from Nen. Lookup failed
   (Redis down): still queued, 200. Broker down: 503, so Nen redelivers.

The run store, publisher and appliers each process keeps are in resources.py. This module
also keeps every one of those names importable from here, where callers have found them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from nen_celery.web.answers import Answer
from nen_celery.web.delivery import (
    deliver,
    deliver_checked,
    deliver_hinted,
    enqueue,
    ingest_message,
    publish_with_celery,
)
from nen_celery.web.resources import (
    Lookup,
    async_apply,
    blocking_apply,
    direct_publisher,
    run_lookup,
    run_store,
)
from nen_celery.web.verify import SIGNATURE_HEADER, check, refused_early, run_hint, verify_signature

if TYPE_CHECKING:
    from nen_celery.runtime.context import Context

__all__ = [
    "SIGNATURE_HEADER",
    "Lookup",
    "async_apply",
    "blocking_apply",
    "check",
    "deliver",
    "deliver_checked",
    "deliver_hinted",
    "direct_publisher",
    "enqueue",
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
    return deliver_checked(ctx, body, parsed, query)
