"""The receiver's checks before anything is queued: size, content type, signature, body, run hint.

Kept apart from delivery because they are pure: nothing is read or written, so every adapter
(and a test) can call ``check`` without Redis or a broker. A refusal is counted here, in
``nen_webhooks``, the same way whichever adapter made it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from nen_celery.domain import hints, signing
from nen_celery.lifecycle.webhook import parse_webhook
from nen_celery.runtime import metrics
from nen_celery.settings import Settings
from nen_celery.web.answers import NOT_CONFIGURED, Answer

log = logging.getLogger("nen_celery.web")

SIGNATURE_HEADER = "x-hmac-signature"


def refused_early(answer: Answer) -> Answer:
    """A refusal an adapter makes before ``check`` runs (settings, size): counted like the rest."""
    if answer is NOT_CONFIGURED:
        # Never log the error text itself: a settings error may quote the values it was given.
        log.error("webhook refused: the receiver's settings are invalid (see its start-up error)")
    metrics.webhook_answered(answer.status_code, answer.body)
    return answer


def run_hint(settings: Settings, query: str | bytes) -> tuple[tuple[str, int] | None, hints.Hint | None]:
    """(run id, attempt) of the query's run hint if its token checks out (hints.py), else None;
    and the refused hint (``hints.Hint``) when there was one whose token is missing or wrong."""
    hint = hints.hint_from_query(query, settings.webhook_run_param)
    if hint is None:
        return None, None
    if hints.verify(settings.hint_keys, hint):
        return (hint.run_id, hint.attempt), None
    return None, hint


def verify_signature(settings: Settings, body: bytes, headers: Mapping[str, str], now: float) -> str | None:
    """None when the delivery is signed under the configured scheme, else the reason.

    ``headers`` must have lower-case names. Raises ValueError for a malformed configured secret.
    """
    secrets = settings.webhook_secrets
    if settings.webhook_scheme == "standard":
        return signing.verify_standard_webhook(
            secrets, body, headers, now=now, tolerance=settings.webhook_tolerance
        )
    if signing.verify_webhook(secrets, body, headers.get(SIGNATURE_HEADER)):
        return None
    return "X-Hmac-Signature missing or wrong"


def check(
    settings: Settings, body: bytes, headers: Mapping[str, str], now: float | None = None
) -> tuple[Answer | None, dict[str, Any]]:
    """Everything short of enqueueing: (error answer or None, parsed body). No state is read or
    written; a refusal is counted in ``nen_webhooks``.

    Header names are matched case-insensitively (an adapter may pass its framework's own dict).
    """
    error, parsed = _check(settings, body, headers, now)
    if error is not None:
        metrics.webhook_answered(error.status_code, error.body)
    return error, parsed


def _check(
    settings: Settings, body: bytes, headers: Mapping[str, str], now: float | None
) -> tuple[Answer | None, dict[str, Any]]:
    headers = {name.lower(): value for name, value in headers.items()}

    if len(body) > settings.webhook_max_body:
        return Answer(
            413, {"error": "body_too_large", "message": f"limit is {settings.webhook_max_body} bytes"}
        ), {}
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        return Answer(415, {"error": "unsupported_media_type", "message": "expected application/json"}), {}
    if not settings.webhook_secrets:
        log.error("webhook refused: NEN_WEBHOOK_SECRET is not set on the receiver")
        return Answer(503, {"error": "not_configured", "message": "receiver has no webhook secret"}), {}
    try:
        reason = verify_signature(settings, body, headers, time.time() if now is None else now)
    except ValueError:
        log.error("webhook refused: NEN_WEBHOOK_SECRET is not valid for NEN_WEBHOOK_SCHEME")
        return Answer(503, {"error": "not_configured", "message": "receiver secret is invalid"}), {}
    if reason is not None:
        log.info("webhook refused (401): %s", reason)
        return Answer(401, {"error": "invalid_signature", "message": reason}), {}
    try:
        parsed = parse_webhook(body)
    except ValueError as exc:
        return Answer(400, {"error": "invalid_body", "message": str(exc)}), {}
    return None, parsed
