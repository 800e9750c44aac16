"""The real receiver over HTTP: header case, unknown message ids, lookups, the Standard scheme."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from nen_celery import get_run, start_run
from nen_celery.domain.hints import RunRef
from nen_celery.domain.signing import standard_webhook_headers, webhook_signature
from nen_celery.runtime.context import get_context
from nen_celery.settings import get_settings
from nen_celery.store.runs import RunStore
from nen_celery.web.decide import Webhook as Checked
from nen_celery.web.decide import plan
from nen_celery.web.delivery import BlockingEffects, drive
from nen_celery.web.resources import run_lookup
from nen_celery.web.verify import check
from tests.callbacks import calls, record
from tests.conftest import SIM_WEBHOOK_SECRET, Stack, env
from tests.helpers import free_port, wait_for
from tests.security_support import published, settled_snapshot

pytestmark = pytest.mark.integration

WF = "12345678-1234-1234-1234-123456789abc"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-test-key-32b!!").decode()


def body_for(message_id: str, status: str = "processing") -> bytes:
    return json.dumps({"workflow_id": WF, "message_id": message_id, "status": status}).encode()


def post(stack: Stack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    # Nen always sends its Content-Type; a delivery without one is refused (415)
    headers = {"Content-Type": "application/json", **headers}
    return httpx.post(stack.webhook_url, content=body, headers=headers, timeout=10)


@pytest.fixture
def idle(stack: Stack) -> Iterator[Stack]:
    stack.counter.wait_idle()
    yield stack
    stack.counter.wait_idle()


@pytest.mark.parametrize(
    "name", ["x-hmac-signature", "X-HMAC-SIGNATURE", "X-Hmac-Signature", "x-HmAc-sIgNaTuRe"]
)
def test_signature_header_name_is_case_insensitive(idle: Stack, name: str) -> None:
    stack = idle
    message_id = f"case-{uuid.uuid4()}"
    body = body_for(message_id)
    before, sent = settled_snapshot(stack), published(stack)
    wrong = post(
        stack, body, {name: webhook_signature("not-the-secret", body), "Content-Type": "application/json"}
    )
    assert wrong.status_code == 401
    assert settled_snapshot(stack) == before and published(stack) == sent
    good = post(
        stack, body, {name: webhook_signature(SIM_WEBHOOK_SECRET, body), "Content-Type": "application/json"}
    )
    assert good.status_code == 202, good.text
    assert published(stack) == sent + 1


@pytest.mark.parametrize("name", ["x-hmac-signature", "X-HMAC-SIGNATURE"])
def test_check_lowercases_header_names_itself(name: str) -> None:
    # The framework-free core, as a Flask/Django adapter would call it with its own header dict.
    body = body_for("m")
    headers = {name: webhook_signature(SIM_WEBHOOK_SECRET, body), "content-type": "application/json"}
    error, parsed = check(get_settings(), body, headers)
    assert error is None and parsed["message_id"] == "m"


def test_unknown_message_id_is_202_parked_not_an_error(idle: Stack) -> None:
    stack = idle
    store = get_context().store
    message_id = f"orphan-{uuid.uuid4()}"
    body = body_for(message_id, "success")
    response = post(stack, body, {"X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body)})
    assert response.status_code == 202
    assert response.json() == {"status": "parked"}
    wait_for(lambda: stack.redis.exists(store.parked_key(message_id)), 10, "the webhook parked")
    stack.counter.wait_idle()
    assert not stack.redis.exists(store.msg_key(message_id))  # no run invented for it
    # a delivery storm for the same unknown id stays bounded and answered 2xx
    codes = {
        post(stack, body, {"X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body)}).status_code
        for _ in range(30)
    }
    assert codes == {202}
    stack.counter.wait_idle()
    assert int(stack.redis.llen(store.parked_key(message_id))) <= 20


def test_known_message_id_is_200_and_a_replay_changes_nothing(idle: Stack) -> None:
    stack = idle
    handle = start_run(WF, {"A": "b"}, on_complete=record.s(tag="complete"))
    run = handle.wait(timeout=20)
    assert run.status == "success" and run.message_id
    wait_for(lambda: calls(handle.run_id), 20, "the callback")
    stack.counter.wait_idle()
    # Nen signs no timestamp: an attacker holding one genuine delivery can replay it at will.
    replay = json.dumps(run.payload).encode()
    headers = {"X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, replay)}
    for status in ("processing", "failed"):
        older = json.dumps({**(run.payload or {}), "status": status}).encode()
        assert (
            post(stack, older, {"X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, older)}).status_code
            == 200
        )
    response = post(stack, replay, headers)
    assert response.status_code == 200 and response.json() == {"status": "queued"}
    stack.counter.wait_idle()
    after = get_run(handle.run_id)
    assert after is not None and after.status == "success"
    assert after.history == run.history  # dedupe + monotonic statuses: the replay was a no-op
    assert len(calls(handle.run_id)) == 1


def _deliver(store: RunStore, body: bytes, hint: RunRef | None = None) -> Any:
    """The blocking driver on ``store`` (its lookup and apply), publishing with apply_async."""
    ctx = get_context()
    webhook = Checked(
        body=body,
        parsed=json.loads(body),
        hint=hint,
        refused=None,
        received_at=repr(time.time()),
        apply=True,
        barrier=False,
        covers_broker=False,
        parked_status=202,
    )
    return drive(plan(webhook), BlockingEffects(store, ctx.sealer, ctx.settings.publish_timeout).run)


def test_lookup_failure_still_queues_and_answers_200(idle: Stack) -> None:
    stack = idle
    ctx = get_context()
    import redis

    dead = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    dead_store = RunStore(dead, ctx.settings, ctx.sealer)
    message_id = f"lookup-down-{uuid.uuid4()}"
    body = body_for(message_id)
    sent = published(stack)
    answer = _deliver(dead_store, body)
    assert answer.status_code == 200 and answer.body == {"status": "queued"}
    assert published(stack) == sent + 1
    # the queued webhook still reaches the store: parked, for reconciliation
    wait_for(lambda: stack.redis.exists(ctx.store.parked_key(message_id)), 10, "the webhook parked")


def test_a_processing_webhook_is_queued_when_the_run_store_cannot_apply_it(idle: Stack) -> None:
    """The thread path (Flask, Django, a clustered run store): applying fails -> queued, 200."""
    stack = idle
    ctx = get_context()
    import redis

    dead = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    dead_store = RunStore(dead, ctx.settings, ctx.sealer)
    body = body_for(f"apply-down-{uuid.uuid4()}", "processing")
    sent = published(stack)
    answer = _deliver(dead_store, body, RunRef("no-such-run", 0))
    assert answer.status_code == 200 and answer.body == {"status": "queued"}
    assert published(stack) == sent + 1
    stack.counter.wait_idle()  # the worker drops it: the hint names no run


def test_run_lookup_uses_bounded_timeouts_and_follows_the_context(stack: Stack) -> None:
    ctx = get_context()
    lookup = run_lookup(ctx)
    assert run_lookup(ctx) == lookup
    client = lookup.__self__.redis  # type: ignore[attr-defined]
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == ctx.settings.publish_timeout
    with env(NEN_PUBLISH_TIMEOUT="0.5"):
        other = run_lookup(get_context())
        assert other.__self__.redis.connection_pool.connection_kwargs["socket_timeout"] == 0.5  # type: ignore[attr-defined]


def test_parked_status_is_a_setting(idle: Stack) -> None:
    stack = idle
    body = body_for(f"orphan-{uuid.uuid4()}")
    with env(NEN_WEBHOOK_PARKED_STATUS="200"):
        response = post(stack, body, {"X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body)})
    assert response.status_code == 200 and response.json() == {"status": "parked"}


def standard_env() -> Any:
    return env(NEN_WEBHOOK_SCHEME="standard", NEN_WEBHOOK_SECRET=f"{STANDARD_SECRET}")


def test_standard_scheme_on_the_real_receiver(idle: Stack) -> None:
    stack = idle
    message_id = f"std-{uuid.uuid4()}"
    body = body_for(message_id)
    now = int(time.time())
    theirs = Webhook(STANDARD_SECRET).sign(message_id, datetime.fromtimestamp(now, tz=UTC), body.decode())
    signed = {
        "Webhook-Id": message_id,
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": theirs,
        "content-type": "application/json",
    }
    refused: list[tuple[str, bytes, dict[str, str]]] = [
        ("nen scheme header", body, {"X-Hmac-Signature": webhook_signature(STANDARD_SECRET, body)}),
        ("tampered body", body.replace(b"processing", b"success"), signed),
        ("tampered timestamp", body, {**signed, "Webhook-Timestamp": str(now + 1)}),
        ("tampered id", body, {**signed, "Webhook-Id": message_id + "0"}),
        ("too old", body, standard_webhook_headers(STANDARD_SECRET, message_id, body, now - 301)),
        ("no headers", body, {}),
    ]
    with standard_env():
        before, sent = settled_snapshot(stack), published(stack)
        for what, data, headers in refused:
            response = post(stack, data, headers)
            assert response.status_code == 401, what
            assert response.json()["error"] == "invalid_signature", what
        assert settled_snapshot(stack) == before and published(stack) == sent
        accepted = post(stack, body, signed)
        assert accepted.status_code == 202, accepted.text
        assert published(stack) == sent + 1
        ours = standard_webhook_headers(STANDARD_SECRET, message_id, body, time.time())
        assert post(stack, body, ours).status_code == 202
    # back on the default scheme, a Standard-signed delivery is refused
    assert post(stack, body, signed).status_code == 401


def test_standard_tolerance_is_a_setting(idle: Stack) -> None:
    stack = idle
    body = body_for(f"std-{uuid.uuid4()}")
    old = standard_webhook_headers(STANDARD_SECRET, "id-1", body, time.time() - 120)
    with standard_env():
        assert post(stack, body, old).status_code == 202
        with env(NEN_WEBHOOK_TOLERANCE="60"):
            assert post(stack, body, old).status_code == 401


def test_misconfigured_receiver_answers_503_without_echoing_settings(idle: Stack) -> None:
    body = body_for("m")
    with env(NEN_WEBHOOK_SCHEME="bogus"):
        response = post(idle, body, {"X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body)})
    assert response.status_code == 503 and response.json()["error"] == "not_configured"
    assert SIM_WEBHOOK_SECRET not in response.text


def test_receiver_process_with_invalid_settings_fails_at_start(tmp_path: Path) -> None:
    env_vars = {
        **os.environ,
        "NEN_WEBHOOK_SCHEME": "standard",
        "NEN_WEBHOOK_SECRET": "whsec_not*base64*secret",
    }
    argv = [
        str(Path(sys.executable).parent / "uvicorn"),
        "nen_celery.web.asgi:app",
        "--port",
        str(free_port()),
    ]
    done = subprocess.run(argv, env=env_vars, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "NEN_WEBHOOK_SECRET entry 1" in output and "not*base64*secret" not in output
