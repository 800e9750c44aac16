"""``nen-celery webhook test``: one signed test delivery to NEN_WEBHOOK_URL, as Nen sends it.

The body has Nen's webhook shape with a messageId no run has (``nen-celery-test-<uuid>``) and
``"test": true``: the receiver checks it exactly as a real webhook (size, content type,
signature, body) and, finding no run bound to that messageId, parks it (202 ``parked`` by
default) until the sweep drops it; no run changes. What came back says whether Nen's webhooks
would get through: 2xx yes; 401 the receiver's secret differs; 404/405 the URL's path is wrong;
503 the receiver is not configured (or cannot queue); no answer, the URL does not reach it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from nen_celery.domain import signing
from nen_celery.settings import Settings

TEST_MESSAGE_PREFIX = "nen-celery-test-"
TEST_WORKFLOW_ID = "00000000-0000-0000-0000-000000000000"
OK, ERROR = "ok", "error"

# What an answer means for Nen's deliveries, by status code.
MEANINGS = {
    400: "the receiver could not read the body",
    401: "the receiver refused the signature: its NEN_WEBHOOK_SECRET (or NEN_WEBHOOK_SCHEME) is not "
    "this one's, so it would refuse every webhook of Nen's",
    404: "nothing answers at this path: NEN_WEBHOOK_URL must end in the receiver's route "
    "(/webhooks/nen under where it is mounted)",
    405: "this path does not take POST: NEN_WEBHOOK_URL must end in the receiver's route "
    "(/webhooks/nen under where it is mounted)",
    413: "the receiver's NEN_WEBHOOK_MAX_BODY is smaller than a small webhook",
    415: "the receiver did not take application/json",
    503: "the receiver is not ready: no (valid) NEN_WEBHOOK_SECRET there, or it cannot queue",
}


@dataclass(frozen=True)
class WebhookTest:
    level: str  # ok | error
    detail: str  # one line: where, what came back, what it means
    status_code: int | None = None
    answer: str = ""  # the receiver's answer body (cut to 300 characters)
    message_id: str = ""


def where(url: str) -> str:
    """scheme://host:port/path of ``url`` (no credentials, query or fragment)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def build_test_delivery(settings: Settings, now: float | None = None) -> tuple[bytes, dict[str, str], str]:
    """(body, headers, messageId) of one test webhook, signed under the configured scheme with
    the first NEN_WEBHOOK_SECRET entry. ValueError when there is no secret to sign with."""
    if not settings.webhook_secrets:
        raise ValueError("NEN_WEBHOOK_SECRET is not set: there is nothing to sign the test webhook with")
    message_id = f"{TEST_MESSAGE_PREFIX}{uuid.uuid4()}"
    body = json.dumps(
        {"workflow_id": TEST_WORKFLOW_ID, "message_id": message_id, "status": "processing", "test": True}
    ).encode()
    secret = settings.webhook_secrets[0]
    headers = {"Content-Type": "application/json"}
    if settings.webhook_scheme == "standard":
        headers.update(signing.standard_webhook_headers(secret, message_id, body, now or time.time()))
    else:
        headers["X-Hmac-Signature"] = signing.webhook_signature(secret, body)
    return body, headers, message_id


def send_test_webhook(
    settings: Settings, timeout: float = 5.0, http: httpx.Client | None = None
) -> WebhookTest:
    """POST one test webhook to NEN_WEBHOOK_URL and say what came back. Never raises."""
    if settings.webhook_url is None:
        return WebhookTest(ERROR, "NEN_WEBHOOK_URL is not set: no-webhook mode, there is nothing to test")
    url = settings.webhook_url
    try:
        body, headers, message_id = build_test_delivery(settings)
    except ValueError as exc:
        return WebhookTest(ERROR, str(exc))
    try:
        client = http or httpx.Client(timeout=timeout, trust_env=False)
        try:
            answer = client.post(url, content=body, headers=headers)
        finally:
            if http is None:
                client.close()
    except httpx.HTTPError as exc:
        return WebhookTest(
            ERROR,
            f"{where(url)} (NEN_WEBHOOK_URL) did not answer: {type(exc).__name__}",
            message_id=message_id,
        )
    return interpret(url, answer.status_code, answer.text, message_id)


def interpret(url: str, status_code: int, text: str, message_id: str = "") -> WebhookTest:
    """What one answer to the test webhook means."""
    shown = " ".join(text.split())[:300]
    head = f"POST {where(url)} (NEN_WEBHOOK_URL) answered {status_code} {shown}".rstrip()
    if 200 <= status_code < 300:
        meaning = (
            "the receiver verified the signature and took the webhook "
            "(no run has its messageId: nothing changed)"
        )
        return WebhookTest(OK, f"{head}: {meaning}", status_code, shown, message_id)
    meaning = MEANINGS.get(status_code, "Nen would retry, then give up: the run waits for the sweep's poll")
    return WebhookTest(ERROR, f"{head}: {meaning}", status_code, shown, message_id)
