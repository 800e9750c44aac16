"""Signing test vectors (computed independently with `openssl dgst -sha256 -hmac`)."""

from __future__ import annotations

import pytest

from nen_celery.domain import signing

BODY = b'{"workflow_id":"12345678-1234-1234-1234-123456789abc","workflow_params":{"PATIENT_NAME":"Jane Doe"}}'

VECTORS = [
    # key, timestamp, body, expected x-signature
    (
        "test-signing-key",
        "1730319600",
        BODY,
        "69a6a4f1375b0a18eed69bddbea9e5051e3594721491e3330c43cf0acfd339b2",
    ),
    (
        "test-signing-key",
        "1730319600",
        b"",
        "6c14f932218788ad236be81c618d3a2a4579c5b17b79fb1806ad1c3044656ca3",
    ),
]
WEBHOOK_BODY = b'{"workflow_id":"w","message_id":"m","status":"success","expires_at":1730319600}'
WEBHOOK_SIG = "sha256=eac4b8f2851fd8f5341a191d3919d431e9a0e844110982d30a9c02cc8e91e34b"


def test_body_hash_is_sha256_hex_of_exact_bytes() -> None:
    assert signing.body_hash(BODY) == "c68725c5f917f85e424ecc8c0df654bc786d8e4b4b24170c8611d356c770b387"
    assert signing.body_hash(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_canonical_request_layout() -> None:
    assert signing.canonical_request("post", "/runs", "1730319600", b"") == (
        b"POST\n/runs\n1730319600\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize(("key", "ts", "body", "expected"), VECTORS)
def test_request_signature_vectors(key: str, ts: str, body: bytes, expected: str) -> None:
    assert signing.sign_request(key, "POST", "/runs", ts, body) == expected


def test_signed_headers_use_unix_seconds() -> None:
    headers = signing.signed_headers("test-signing-key", "POST", "/runs", BODY, 1730319600.9)
    assert headers == {"x-timestamp": "1730319600", "x-signature": VECTORS[0][3]}


def test_one_changed_byte_changes_the_signature() -> None:
    assert (
        signing.sign_request("test-signing-key", "POST", "/runs", "1730319600", BODY + b" ") != VECTORS[0][3]
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1730319600", 1730319600.0),
        ("1730319600123", 1730319600.123),
        ("2024-10-30T20:20:00Z", 1730319600.0),
        ("2024-10-30T21:20:00+01:00", 1730319600.0),
    ],
)
def test_parse_timestamp_formats(value: str, expected: float) -> None:
    assert signing.parse_timestamp(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["", "yesterday", "2024-10-30T20:20:00", "-5"])
def test_parse_timestamp_rejects_bad_values(value: str) -> None:
    with pytest.raises(ValueError, match="x-timestamp"):
        signing.parse_timestamp(value)


def test_verify_request_accepts_valid_and_names_each_failure() -> None:
    key, ts, body, sig = VECTORS[0]
    assert signing.verify_request(key, "POST", "/runs", ts, sig, body, now=1730319700) is None
    assert "window" in (signing.verify_request(key, "POST", "/runs", ts, sig, body, now=1730320000) or "")
    assert "does not match" in (
        signing.verify_request(key, "POST", "/runs", ts, "0" * 64, body, now=1730319600) or ""
    )


def test_webhook_signature_vector() -> None:
    assert signing.webhook_signature("whsec-test", WEBHOOK_BODY) == WEBHOOK_SIG


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (WEBHOOK_SIG, True),
        (WEBHOOK_SIG.upper().replace("SHA256=", "sha256="), True),
        ("SHA256=" + WEBHOOK_SIG[7:], True),
        (WEBHOOK_SIG[7:], False),
        ("sha256=" + "0" * 64, False),
        ("", False),
        (None, False),
        (WEBHOOK_SIG[:-1], False),
    ],
)
def test_verify_webhook(header: str | None, ok: bool) -> None:
    assert signing.verify_webhook("whsec-test", WEBHOOK_BODY, header) is ok


def test_verify_webhook_accepts_any_secret_during_rotation() -> None:
    assert signing.verify_webhook(["new-secret", "whsec-test"], WEBHOOK_BODY, WEBHOOK_SIG)
    assert not signing.verify_webhook(["new-secret"], WEBHOOK_BODY, WEBHOOK_SIG)
    assert not signing.verify_webhook([], WEBHOOK_BODY, WEBHOOK_SIG)
