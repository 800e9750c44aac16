"""Request signing and webhook verification: pure functions, no I/O.

Nen's scheme (see README, "Signing"): ``x-signature`` is the lowercase hex
HMAC-SHA256 of ``METHOD\\nPATH\\nTIMESTAMP\\nsha256_hex(body)`` keyed with the
signing key; webhooks carry ``X-Hmac-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>``.
Everything signs the exact bytes that go on the wire.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime

WEBHOOK_SIGNATURE_PREFIX = "sha256="


def body_hash(body: bytes) -> str:
    """Lowercase hex SHA-256 of the exact body bytes."""
    return hashlib.sha256(body).hexdigest()


def canonical_request(method: str, path: str, timestamp: str, body: bytes) -> bytes:
    return f"{method.upper()}\n{path}\n{timestamp}\n{body_hash(body)}".encode()


def sign_request(key: str, method: str, path: str, timestamp: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256(key, canonical_request)."""
    msg = canonical_request(method, path, timestamp, body)
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def signed_headers(key: str, method: str, path: str, body: bytes, now: float) -> dict[str, str]:
    """The ``x-timestamp`` / ``x-signature`` pair for one request sent at ``now``."""
    timestamp = str(int(now))
    return {
        "x-timestamp": timestamp,
        "x-signature": sign_request(key, method, path, timestamp, body),
    }


def parse_timestamp(value: str) -> float:
    """Unix seconds from a Nen timestamp: seconds, milliseconds or ISO 8601.

    Raises ValueError naming the value when it is none of those.
    """
    text = value.strip()
    if text.isdigit():
        number = int(text)
        # Anything past year 33658 in seconds is a millisecond timestamp.
        return number / 1000.0 if number >= 10**12 else float(number)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"x-timestamp {value!r} is not Unix seconds, milliseconds or ISO 8601") from None
    if parsed.tzinfo is None:
        raise ValueError(f"x-timestamp {value!r} has no time zone")
    return parsed.timestamp()


def verify_request(
    key: str,
    method: str,
    path: str,
    timestamp: str,
    signature: str,
    body: bytes,
    now: float,
    tolerance: float = 300.0,
) -> str | None:
    """Check a signed request; return None when valid, else the reason (for the error body)."""
    try:
        sent_at = parse_timestamp(timestamp)
    except ValueError as exc:
        return str(exc)
    if abs(now - sent_at) > tolerance:
        return f"x-timestamp is {now - sent_at:+.0f}s off, outside the ±{tolerance:.0f}s window"
    expected = sign_request(key, method, path, timestamp, body)
    if not hmac.compare_digest(expected, signature.strip().lower()):
        return "x-signature does not match the request"
    return None


def webhook_signature(secret: str, body: bytes) -> str:
    """The ``X-Hmac-Signature`` header value Nen sends for ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return WEBHOOK_SIGNATURE_PREFIX + digest


def verify_webhook(secrets: str | Iterable[str], body: bytes, header: str | None) -> bool:
    """True when ``header`` is a valid signature of ``body`` under any of ``secrets``.

    Several secrets are accepted so a secret can be rotated without dropping
    deliveries. Every candidate is compared in constant time.
    """
    if not header:
        return False
    candidates = [secrets] if isinstance(secrets, str) else list(secrets)
    presented = header.strip()
    if not presented.lower().startswith(WEBHOOK_SIGNATURE_PREFIX):
        return False
    presented = WEBHOOK_SIGNATURE_PREFIX + presented[len(WEBHOOK_SIGNATURE_PREFIX) :].lower()
    valid = False
    for secret in candidates:
        if secret and hmac.compare_digest(webhook_signature(secret, body), presented):
            valid = True
    return valid
