"""Issue 25's reproduced findings, one named regression case each (the numbers are the issue's).

Each case failed on 28c121c, the commit before the fix.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from nen_celery.domain.hints import hint_from_query
from nen_celery.domain.signing import webhook_signature
from tests.conftest import SIM_WEBHOOK_SECRET, Stack

WF = "12345678-1234-1234-1234-123456789abc"


@pytest.mark.parametrize("attempt", ["²", "٣", "1²", "１", "+1", " 1", "1_0", "1234567"])  # noqa: RUF001
def test_finding_10_a_hint_attempt_is_ascii_digits_only(attempt: str) -> None:
    assert hint_from_query(f"nen_run=abc~{attempt}~tok", "nen_run") is None
    assert hint_from_query("nen_run=abc~12~tok", "nen_run") is not None


@pytest.mark.integration
@pytest.mark.parametrize("attempt", ["%C2%B2", "%D9%A3"])  # "²" and "٣", URL-encoded
def test_finding_10_an_odd_hint_on_a_signed_webhook_is_no_server_error(stack: Stack, attempt: str) -> None:
    stack.counter.wait_idle()
    body = json.dumps({"workflow_id": WF, "message_id": f"odd-{uuid.uuid4()}", "status": "processing"})
    headers = {
        "X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body.encode()),
        "Content-Type": "application/json",
    }
    url = f"{stack.webhook_url}?nen_run=abc~{attempt}~AAAAAAAAAAAAAAAAAAAAAA"
    answer = httpx.post(url, content=body, headers=headers, timeout=10)
    assert answer.status_code < 500, answer.text
    stack.counter.wait_idle()


@pytest.mark.parametrize(
    "body",
    [
        {"timestamp": "2026-12-06T10:00:00Z", "status": 503, "error": "Service Unavailable", "path": "/runs"},
        {"status": 503, "error": "Service Unavailable"},
        {"error": "Service Unavailable", "message": "upstream"},
        {"error": "service_unavailable", "message": "x", "requestId": "abc"},
        {"error": "", "message": "x"},
        {"error": ["x"], "message": "x"},
    ],
)
def test_finding_12_a_gateways_json_503_is_not_taken_for_nens_and_resent(body: dict[str, object]) -> None:
    from nen_celery.nen.retryable import classify_status

    error = classify_status(503, body, retryable_statuses=frozenset({429, 503}), retry_after=None, now=0.0)
    assert not error.retryable and error.maybe_sent
    nens = classify_status(
        503,
        {"error": "service_unavailable", "message": "try later"},
        retryable_statuses=frozenset({429, 503}),
        retry_after=None,
        now=0.0,
    )
    assert nens.retryable and not nens.maybe_sent
