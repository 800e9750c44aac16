"""The receiver's checks before anything is queued: size, content type, signature, body, run hint.

Kept apart from delivery because they are pure: nothing is read or written, so every adapter
(and a test) can call ``check`` without Redis or a broker. A refusal is counted here, in
``nen_webhooks`` and by reason in ``nen_webhook_refusals``, and logged (refusals.py), the same
way whichever adapter made it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from nen_celery import observe
from nen_celery.domain import hints, signing
from nen_celery.errors import ConfigurationError
from nen_celery.lifecycle.webhook import parse_webhook
from nen_celery.settings import Settings, get_settings
from nen_celery.web.answers import HEALTHY, NOT_CONFIGURED, Answer
from nen_celery.web.refusals import refused, shown

log = logging.getLogger("nen_celery.web")

SIGNATURE_HEADER = "x-hmac-signature"


def refused_early(answer: Answer) -> Answer:
    """A refusal an adapter makes before ``check`` runs (settings, size, body deadline): counted
    and logged like the rest."""
    if answer is NOT_CONFIGURED:
        # Never log the error text itself: a settings error may quote the values it was given.
        refused("not_configured", "the receiver's settings are invalid (see its start-up error)")
    else:
        refused(str(answer.body.get("error")), str(answer.body.get("message")))
    observe.webhook_answered(answer.status_code, answer.word)
    return answer


def readiness() -> Answer:
    """``GET /healthz``: 200, or 503 with the reason when every webhook would be refused."""
    try:
        settings = get_settings()
    except ConfigurationError:  # its text may quote values: not repeated here
        return Answer(503, {"status": "not_ready", "reason": "invalid settings (see the start-up error)"})
    if not settings.webhook_secrets:
        return Answer(503, {"status": "not_ready", "reason": "NEN_WEBHOOK_SECRET is not set"})
    return HEALTHY


def run_hint(settings: Settings, query: str | bytes) -> tuple[hints.RunRef | None, hints.Hint | None]:
    """The run attempt the query's hint names if its token checks out (hints.py), else None;
    and the refused hint (``hints.Hint``) when there was one whose token is missing or wrong."""
    hint = hints.hint_from_query(query, settings.webhook_run_param)
    if hint is None:
        return None, None
    if hints.verify(settings.hint_keys, hint):
        return hints.RunRef(hint.run_id, hint.attempt, hint.nonce), None
    return None, hint


def verify_signature(settings: Settings, body: bytes, headers: Mapping[str, str], now: float) -> str | None:
    """None when the delivery is signed under the configured scheme, else the reason.

    ``headers`` must have lower-case names. Raises ValueError for a malformed configured secret.
    """
    refusal = signature_refusal(settings, body, headers, now)
    return None if refusal is None else refusal[1]


def signature_refusal(
    settings: Settings, body: bytes, headers: Mapping[str, str], now: float
) -> tuple[str, str] | None:
    """None when the signature checks out, else (reason code, why): a sender's mistake named
    precisely (no header, no ``sha256=`` prefix, stale timestamp), never a value it sent."""
    secrets = settings.webhook_secrets
    if settings.webhook_scheme == "standard":
        why = signing.verify_standard_webhook(
            secrets, body, headers, now=now, tolerance=settings.webhook_tolerance
        )
        if why is None:
            return None
        code = "stale_timestamp" if "tolerance" in why else "signature_missing" if "required" in why else ""
        return code or "bad_signature", why
    header = headers.get(SIGNATURE_HEADER)
    if signing.verify_webhook(secrets, body, header):
        return None
    if not header:
        return "signature_missing", "X-Hmac-Signature header missing"
    if not header.strip().lower().startswith(signing.WEBHOOK_SIGNATURE_PREFIX):
        return "signature_prefix", "X-Hmac-Signature missing sha256= prefix"
    return "bad_signature", "X-Hmac-Signature does not match the body under any configured secret"


def check(
    settings: Settings, body: bytes, headers: Mapping[str, str], now: float | None = None
) -> tuple[Answer | None, dict[str, Any]]:
    """Everything short of enqueueing: (error answer or None, parsed body). No state is read or
    written; a refusal is counted in ``nen_webhooks``.

    Header names are matched case-insensitively (an adapter may pass its framework's own dict).
    """
    error, parsed = _check(settings, body, headers, now)
    if error is not None:
        observe.webhook_answered(error.status_code, error.word)
    return error, parsed


def _refusal(reason: str, status: int, error: str, message: str, detail: str = "") -> Answer:
    refused(reason, detail or message)
    return Answer(status, {"error": error, "message": message})


def _check(
    settings: Settings, body: bytes, headers: Mapping[str, str], now: float | None
) -> tuple[Answer | None, dict[str, Any]]:
    headers = {name.lower(): value for name, value in headers.items()}

    if len(body) > settings.webhook_max_body:
        message = f"limit is {settings.webhook_max_body} bytes"
        return _refusal("body_too_large", 413, "body_too_large", message), {}
    # no Content-Type is refused too (docs/security.md): Nen always sends application/json
    declared = headers.get("content-type")
    if declared is None or declared.split(";")[0].strip().lower() != "application/json":
        detail = "no Content-Type" if declared is None else f"Content-Type {shown(declared)}"
        return _refusal(
            "unsupported_media_type", 415, "unsupported_media_type", "expected application/json", detail
        ), {}
    if not settings.webhook_secrets:
        message = "receiver has no webhook secret"
        return _refusal("no_secret", 503, "not_configured", message, "NEN_WEBHOOK_SECRET is not set"), {}
    try:
        refusal = signature_refusal(settings, body, headers, time.time() if now is None else now)
    except ValueError:
        detail = "NEN_WEBHOOK_SECRET is not valid for NEN_WEBHOOK_SCHEME"
        return _refusal("invalid_secret", 503, "not_configured", "receiver secret is invalid", detail), {}
    if refusal is not None:
        return _refusal(refusal[0], 401, "invalid_signature", refusal[1]), {}
    try:
        return None, parse_webhook(body)
    except ValueError as exc:
        message = str(exc)
    except RecursionError:  # signed JSON nested deeper than the parser goes
        message = "body is nested too deeply"
    except Exception:  # any other failure on the sender's bytes is a 400, never a 500
        message = "body could not be parsed"
    return _refusal("invalid_body", 400, "invalid_body", message), {}
