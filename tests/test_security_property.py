"""Property: whatever bytes and headers reach the real receiver, it never answers 5xx, and
without a valid signature it changes no Redis state and publishes no task."""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nen_celery.domain.signing import webhook_signature
from tests.conftest import SIM_WEBHOOK_SECRET, TEST_REDIS_URL, Stack
from tests.security_support import KeyEvents, published, settled_snapshot

pytestmark = pytest.mark.integration

# Header names are tokens; values are visible latin-1 text (what an HTTP client can put on the wire).
TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te", "trailer"}
names = st.text(TOKEN, min_size=1, max_size=24).filter(lambda n: n.lower() not in RESERVED)
values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)
signature_values = st.one_of(
    values,
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256=" + h),
    st.text("0123456789abcdefABCDEF=sha", max_size=80),
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain", ""]
)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
webhook_like = st.fixed_dictionaries(
    {"message_id": st.one_of(st.text(max_size=30), st.integers(), st.none())},
    optional={
        "status": st.sampled_from(["processing", "success", "failed", "done", ""]),
        "workflow_id": st.text(max_size=36),
        "result": json_like,
    },
).map(lambda d: json.dumps(d).encode())
bodies = st.one_of(
    st.binary(max_size=2048),
    json_like.map(lambda v: json.dumps(v).encode()),
    webhook_like,
    st.just(b"{" * 5000),
    st.just(b"x" * (1024 * 1024 + 1)),
)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, dict[str, str], bool]:
    body = draw(bodies)
    headers = draw(st.dictionaries(names, values, max_size=6))
    headers = {k: v for k, v in headers.items() if k.lower() not in ("x-hmac-signature", "content-type")}
    spelling = draw(st.sampled_from(["X-Hmac-Signature", "x-hmac-signature", "X-HMAC-SIGNATURE"]))
    choice = draw(st.sampled_from(["random", "random", "none", "wrong-secret", "valid"]))
    if choice == "random":
        headers[spelling] = draw(signature_values)
    elif choice == "wrong-secret":
        headers[spelling] = webhook_signature(draw(st.text(min_size=1, max_size=20)), body)
    elif choice == "valid":
        headers[spelling] = webhook_signature(SIM_WEBHOOK_SECRET, body)
    if draw(st.booleans()):
        headers["Content-Type"] = draw(content_types)
    return body, headers, choice == "valid"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def writes(stack: Stack) -> Iterator[KeyEvents]:
    """Keyspace notifications of the test DB; proven to see a write before it is trusted."""
    events = KeyEvents(TEST_REDIS_URL)
    try:
        probe = f"nen-test-probe-{uuid.uuid4()}"
        stack.redis.set(probe, "1")
        stack.redis.delete(probe)
        assert events.drain() == [("set", probe), ("del", probe)]
        yield events
    finally:
        events.close()


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(delivery=deliveries())
def test_receiver_never_5xx_and_never_changes_state_unsigned(
    stack: Stack, http: httpx.Client, writes: KeyEvents, delivery: tuple[bytes, dict[str, str], bool]
) -> None:
    body, headers, signed = delivery
    stack.counter.wait_idle()
    writes.drain()  # what earlier (signed) examples caused in the worker
    sent = published(stack)
    # latin-1 bytes on the wire; HTTP strips leading/trailing whitespace of a value itself
    raw = [(k.encode(), v.strip(" \t").encode("latin-1")) for k, v in headers.items()]
    response = http.post(stack.webhook_url, content=body, headers=raw)
    assert response.status_code < 500, (response.status_code, response.text)
    assert isinstance(response.json(), dict)
    if signed and response.status_code in (200, 202):
        assert published(stack) == sent + 1  # a verified, well-formed webhook is queued, once
        return
    assert published(stack) == sent, (response.status_code, response.text)
    assert writes.drain() == [], (response.status_code, response.text)
    if not signed:
        assert response.status_code in (401, 413, 415), (response.status_code, response.text)


def test_unsigned_requests_leave_the_whole_db_as_it_was(stack: Stack, http: httpx.Client) -> None:
    """The same check by full snapshot, for a fixed batch of forged deliveries."""
    forged = [
        (b'{"message_id":"m","status":"success"}', {"X-Hmac-Signature": "sha256=" + "0" * 64}),
        (b'{"message_id":"m","status":"success"}', {"x-hmac-signature": webhook_signature("guess", b"")}),
        (b"\xff\xfe garbage", {"content-type": "application/json"}),
        (b"{}", {"content-type": "text/plain", "X-Hmac-Signature": "sha256="}),
    ]
    before, sent = settled_snapshot(stack), published(stack)
    for body, headers in forged:
        assert http.post(stack.webhook_url, content=body, headers=headers).status_code in (401, 415)
    assert published(stack) == sent
    assert settled_snapshot(stack) == before
