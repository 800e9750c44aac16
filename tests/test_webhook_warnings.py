"""Issue 26 item 3, the receiver's part: a refused webhook is loud (one WARNING naming why,
rate-limited, counted by reason) and never logs a secret, a signature or a body; /healthz is
503 not_ready while no webhook secret is set."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from nen_celery.domain.signing import standard_webhook_headers
from nen_celery.runtime.metrics import REGISTRY
from nen_celery.web.asgi import create_app
from tests.conftest import SIM_WEBHOOK_SECRET, Stack, env
from tests.web_support import signed, webhook_body

pytestmark = pytest.mark.integration

STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-test-key-32b!!").decode()


@pytest.fixture(autouse=True)
def fresh_limiter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no reason logged in the last interval."""
    from nen_celery.web import refusals

    monkeypatch.setattr(refusals, "LOG", refusals.RateLimitedLog(refusals.log))
    yield


def _refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("nen_webhook_refusals_total", {"reason": reason}) or 0.0


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    return httpx.post(url, content=body, headers=headers, timeout=10).status_code


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nen_celery.web" and r.levelname == "WARNING"]


def _case(name: str, body: bytes) -> tuple[dict[str, str], dict[str, str | None]]:
    """(headers, settings) of one kind of refused delivery."""
    good = signed(body)["X-Hmac-Signature"]
    now = time.time()
    cases: dict[str, tuple[dict[str, str], dict[str, str | None]]] = {
        "bad_signature": (signed(body, "not-the-secret"), {}),
        "signature_prefix": ({**signed(body), "X-Hmac-Signature": good.removeprefix("sha256=")}, {}),
        "signature_missing": ({"Content-Type": "application/json"}, {}),
        "no_secret": (signed(body), {"NEN_WEBHOOK_SECRET": None}),
        "stale_timestamp": (
            {
                **standard_webhook_headers(STANDARD_SECRET, "msg-1", body, now - 3600),
                "Content-Type": "application/json",
            },
            {"NEN_WEBHOOK_SCHEME": "standard", "NEN_WEBHOOK_SECRET": STANDARD_SECRET},
        ),
    }
    return cases[name]


@pytest.mark.parametrize(
    ("reason", "status", "words"),
    [
        ("bad_signature", 401, "does not match"),
        ("signature_prefix", 401, "missing sha256= prefix"),
        ("signature_missing", 401, "header missing"),
        ("no_secret", 503, "NEN_WEBHOOK_SECRET is not set"),
        ("stale_timestamp", 401, "tolerance"),
    ],
)
def test_each_refusal_logs_one_warning_with_its_reason_and_counts_it(
    stack: Stack, caplog: pytest.LogCaptureFixture, reason: str, status: int, words: str
) -> None:
    body = webhook_body(f"loud-{uuid.uuid4()}")
    headers, settings = _case(reason, body)
    before = _refusals(reason)
    with env(**settings), caplog.at_level("WARNING", logger="nen_celery.web"):
        assert _post(stack.webhook_url, body, headers) == status
        assert _post(stack.webhook_url, body, headers) == status  # within the interval: not logged
    lines = _warnings(caplog)
    assert len(lines) == 1, lines
    assert f"webhook refused ({reason})" in lines[0] and words in lines[0], lines[0]
    assert _refusals(reason) == before + 2
    for secret_or_value in (SIM_WEBHOOK_SECRET, STANDARD_SECRET, body.decode(), *headers.values()):
        if secret_or_value not in ("application/json",):
            assert secret_or_value not in caplog.text, secret_or_value


def test_a_post_to_a_wrong_path_under_the_mount_is_logged(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    body = webhook_body(f"lost-{uuid.uuid4()}")
    before = _refusals("unknown_path")
    with caplog.at_level("WARNING", logger="nen_celery.web"):
        assert _post(stack.receiver_url + "/webhook/nen?nen_run=x~0~tok", body, signed(body)) == 404
        assert httpx.get(stack.receiver_url + "/robots.txt", timeout=10).status_code == 404  # not a webhook
    lines = _warnings(caplog)
    assert len(lines) == 1 and "(unknown_path)" in lines[0] and "'/webhook/nen'" in lines[0], lines
    assert "tok" not in caplog.text  # the query (a run hint's token) is never logged
    assert _refusals("unknown_path") == before + 1


def test_warnings_are_rate_limited_per_reason_and_say_how_many_were_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from nen_celery.web.refusals import RateLimitedLog

    now = [1000.0]
    limiter = RateLimitedLog(logging.getLogger("nen_celery.web"), interval=60, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="nen_celery.web"):
        assert limiter.warn("bad_signature", "first")
        assert not limiter.warn("bad_signature", "second")
        assert not limiter.warn("bad_signature", "third")
        assert limiter.warn("no_secret", "another reason is logged on its own")
        now[0] += 60
        assert limiter.warn("bad_signature", "after the interval")
    lines = _warnings(caplog)
    assert lines == [
        "webhook refused (bad_signature): first",
        "webhook refused (no_secret): another reason is logged on its own",
        "webhook refused (bad_signature): after the interval (2 more in the last 60 s not logged)",
    ]


def test_healthz_is_not_ready_without_a_webhook_secret(stack: Stack) -> None:
    with TestClient(create_app()) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        with env(NEN_WEBHOOK_SECRET=None):
            response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "not_ready", "reason": "NEN_WEBHOOK_SECRET is not set"}
        with env(NEN_API_URL="ftp://not-http"):
            assert client.get("/healthz").json()["status"] == "not_ready"
