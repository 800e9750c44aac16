"""Standard Webhooks: our pure functions against the independent `standardwebhooks` package."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from nen_celery.domain import signing
from nen_celery.errors import ConfigurationError
from nen_celery.settings import Settings, get_settings, reset_settings

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER = "whsec_" + base64.b64encode(b"another key, another key, yes!!").decode()
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
BODY = b'{"workflow_id":"w","message_id":"m","status":"success","expires_at":1730319600}'


def theirs_sign(secret: str, msg_id: str, at: int, body: bytes) -> dict[str, str]:
    stamp = datetime.fromtimestamp(at, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": Webhook(secret).sign(msg_id, stamp, body.decode()),
    }


def theirs_accept(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


def test_published_vector_from_the_standard_webhooks_spec() -> None:
    # The example in the Standard Webhooks reference implementations' test suites.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.standard_webhook_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        expected
    )
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": expected,
    }
    assert signing.verify_standard_webhook(secret, body, headers, now=1614265330) is None


def test_their_signature_verifies_with_ours() -> None:
    now = int(time.time())
    headers = theirs_sign(SECRET, MSG_ID, now, BODY)
    assert signing.verify_standard_webhook(SECRET, BODY, headers, now=now) is None
    # header names are case-insensitive
    upper = {k.upper(): v for k, v in headers.items()}
    assert signing.verify_standard_webhook(SECRET, BODY, upper, now=now) is None


def test_our_signature_verifies_with_theirs() -> None:
    now = time.time()
    headers = signing.standard_webhook_headers(SECRET, MSG_ID, BODY, now)
    assert headers["webhook-timestamp"] == str(int(now))
    assert headers["webhook-signature"].startswith("v1,")
    assert theirs_accept(SECRET, BODY, headers)
    # the prefix is optional in both implementations
    bare = SECRET.removeprefix("whsec_")
    assert signing.standard_webhook_headers(bare, MSG_ID, BODY, now) == headers


@pytest.mark.parametrize(
    "tamper",
    ["body", "timestamp", "id", "signature", "secret", "version", "too_old", "too_new"],
)
def test_tampered_deliveries_are_refused_by_both(tamper: str) -> None:
    now = int(time.time())
    body = BODY
    headers = signing.standard_webhook_headers(SECRET, MSG_ID, BODY, now)
    secret = SECRET
    if tamper == "body":
        body = BODY.replace(b"success", b"failed!")
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(now - 1)
    elif tamper == "id":
        headers["webhook-id"] = MSG_ID + "x"
    elif tamper == "signature":
        raw = bytearray(base64.b64decode(headers["webhook-signature"][3:]))
        raw[0] ^= 1
        headers["webhook-signature"] = "v1," + base64.b64encode(bytes(raw)).decode()
    elif tamper == "secret":
        secret = OTHER
    elif tamper == "version":
        headers["webhook-signature"] = "v2," + headers["webhook-signature"][3:]
    elif tamper in ("too_old", "too_new"):
        at = now - 301 if tamper == "too_old" else now + 301
        headers = signing.standard_webhook_headers(SECRET, MSG_ID, BODY, at)
    ours = signing.verify_standard_webhook(secret, body, headers, now=now)
    assert ours is not None, tamper
    assert not theirs_accept(secret, body, headers), tamper


def test_several_signatures_and_several_secrets_rotate() -> None:
    now = int(time.time())
    old = signing.standard_webhook_signature(OTHER, MSG_ID, now, BODY)
    new = signing.standard_webhook_signature(SECRET, MSG_ID, now, BODY)
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(now),
        "webhook-signature": f"v1a,xyz {old} {new}",
    }
    # the sender lists several signatures: any v1 one may match
    assert signing.verify_standard_webhook(SECRET, BODY, headers, now=now) is None
    assert theirs_accept(SECRET, BODY, headers)
    # the receiver holds several secrets while rotating
    single = {**headers, "webhook-signature": old}
    assert signing.verify_standard_webhook([SECRET, OTHER], BODY, single, now=now) is None
    assert signing.verify_standard_webhook([SECRET], BODY, single, now=now) is not None
    assert signing.verify_standard_webhook([], BODY, single, now=now) is not None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-id": ""}, "required"),
        ({"webhook-timestamp": "soon"}, "Unix seconds"),
        ({"webhook-timestamp": "²"}, "Unix seconds"),
        ({"webhook-timestamp": "9" * 5000}, "Unix seconds"),
        ({"webhook-signature": "v1,!!!notbase64"}, "no v1"),
        ({"webhook-signature": "garbage"}, "no v1"),
        ({"webhook-id": "\ud800"}, "not valid text"),
    ],
)
def test_malformed_headers_name_the_reason(change: dict[str, str], reason: str) -> None:
    now = int(time.time())
    headers = {**signing.standard_webhook_headers(SECRET, MSG_ID, BODY, now), **change}
    assert reason in (signing.verify_standard_webhook(SECRET, BODY, headers, now=now) or "")


def test_tolerance_is_a_parameter() -> None:
    headers = signing.standard_webhook_headers(SECRET, MSG_ID, BODY, 1000)
    assert signing.verify_standard_webhook(SECRET, BODY, headers, now=1000 + 30, tolerance=60) is None
    assert signing.verify_standard_webhook(SECRET, BODY, headers, now=1000 + 90, tolerance=60) is not None


@pytest.mark.parametrize("bad", ["whsec_", "whsec_***", "not base64 at all", ""])
def test_bad_secrets_raise_without_echoing(bad: str) -> None:
    with pytest.raises(ValueError, match="Standard Webhooks secret") as exc:
        signing.standard_secret_key(bad)
    if bad.removeprefix("whsec_"):
        assert bad.removeprefix("whsec_") not in str(exc.value)


def test_scheme_setting_validates_secrets_without_echoing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        Settings(webhook_scheme="STANDARD", webhook_secret=f"{SECRET},{OTHER}").webhook_scheme == "standard"
    )
    assert Settings().webhook_scheme == "nen"
    monkeypatch.setenv("NEN_WEBHOOK_SCHEME", "standard")
    monkeypatch.setenv("NEN_WEBHOOK_SECRET", f"{SECRET},whsec_s3cr3t-not-b64!")
    reset_settings()
    try:
        with pytest.raises(ConfigurationError, match="NEN_WEBHOOK_SECRET entry 2") as exc:
            get_settings()
        assert "s3cr3t" not in str(exc.value) and SECRET not in str(exc.value)
        monkeypatch.setenv("NEN_WEBHOOK_SCHEME", "hmac")
        reset_settings()
        with pytest.raises(ConfigurationError, match="NEN_WEBHOOK_SCHEME"):
            get_settings()
    finally:
        monkeypatch.undo()
        reset_settings()


@settings(max_examples=200, deadline=None, database=None)
@given(
    key=st.binary(min_size=1, max_size=64),
    msg_id=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    at=st.integers(min_value=0, max_value=2**33),
    body=st.binary(max_size=512),
)
def test_property_sign_then_verify_and_any_flip_breaks_it(
    key: bytes, msg_id: str, at: int, body: bytes
) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = signing.standard_webhook_headers(secret, msg_id, body, at)
    assert signing.verify_standard_webhook(secret, body, headers, now=at) is None
    tampered = body + b"\x00" if not body else bytes([body[0] ^ 1]) + body[1:]
    assert signing.verify_standard_webhook(secret, tampered, headers, now=at) is not None
    if body and _is_text(body):
        assert signing.standard_webhook_signature(secret, msg_id, at, body) == Webhook(secret).sign(
            msg_id, datetime.fromtimestamp(at, tz=UTC), body.decode()
        )


def _is_text(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True
