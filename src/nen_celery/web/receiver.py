"""Framework-free webhook handling: verify, validate, enqueue. Each web adapter wraps this."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .. import signing
from ..config import Settings
from ..crypto import Sealer

log = logging.getLogger("nen_celery.web")

SIGNATURE_HEADER = "x-hmac-signature"


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, Any] = field(default_factory=dict)


def check(settings: Settings, body: bytes, headers: dict[str, str]) -> tuple[Answer | None, dict[str, Any]]:
    """Everything short of enqueueing: (error answer or None, parsed body). Pure, no state."""
    from ..tasks import parse_webhook

    if len(body) > settings.webhook_max_body:
        return Answer(
            413, {"error": "body_too_large", "message": f"limit is {settings.webhook_max_body} bytes"}
        ), {}
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        return Answer(415, {"error": "unsupported_media_type", "message": "expected application/json"}), {}
    secrets = settings.webhook_secrets
    if not secrets:
        log.error("webhook refused: NEN_WEBHOOK_SECRET is not set on the receiver")
        return Answer(503, {"error": "not_configured", "message": "receiver has no webhook secret"}), {}
    if not signing.verify_webhook(secrets, body, headers.get(SIGNATURE_HEADER)):
        return Answer(401, {"error": "invalid_signature", "message": "X-Hmac-Signature missing or wrong"}), {}
    try:
        parsed = parse_webhook(body)
    except ValueError as exc:
        return Answer(400, {"error": "invalid_body", "message": str(exc)}), {}
    return None, parsed


def enqueue(sealer: Sealer, body: bytes, parsed: dict[str, Any], publish_timeout: float) -> Answer:
    """Queue ingest_webhook; 503 when the broker cannot take it, so Nen redelivers."""
    from ..tasks import ingest_webhook

    sealed = sealer.seal_if_enabled(body)
    try:
        ingest_webhook.apply_async(
            args=(sealed,),
            argsrepr=f"(message_id={parsed['message_id']!r}, status={parsed['status']!r})",
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0.1,
                "interval_step": 0.2,
                "interval_max": publish_timeout / 2,
            },
        )
    except Exception as exc:  # broker down: any kombu/redis/socket error
        log.error("webhook for message %s not queued: %s: %s", parsed["message_id"], type(exc).__name__, exc)
        return Answer(503, {"error": "unavailable", "message": "could not queue the webhook; retry"})
    return Answer(200, {"status": "queued"})
