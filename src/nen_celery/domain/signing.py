"""Request signing and webhook verification: pure functions, no I/O.

Nen's scheme (docs/security.md, "Test vectors"): ``x-signature`` is the lowercase hex
HMAC-SHA256 of ``METHOD\\nPATH\\nTIMESTAMP\\nsha256_hex(body)`` keyed with the
signing key; webhooks carry ``X-Hmac-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>``.
Everything signs the exact bytes that go on the wire.

Standard Webhooks (https://www.standardwebhooks.com, opt-in with ``NEN_WEBHOOK_SCHEME=standard``):
headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(space-separated ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``), keyed with the
base64-decoded part of a ``whsec_<base64>`` secret; timestamps outside a tolerance are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
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
    if text.isascii() and text.isdigit():
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
    return WEBHOOK_SIGNATURE_PREFIX + hmac.digest(secret.encode(), body, "sha256").hex()


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


# -- Standard Webhooks -----------------------------------------------------------------------

STANDARD_SECRET_PREFIX = "whsec_"
STANDARD_VERSION = "v1"
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def standard_secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` (optional) + base64.

    Raises ValueError when the secret is not base64 or decodes to nothing; the message never
    contains the secret.
    """
    text = secret.strip()
    if text.startswith(STANDARD_SECRET_PREFIX):
        text = text[len(STANDARD_SECRET_PREFIX) :]
    text += "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret must be 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("a Standard Webhooks secret must not be empty")
    return key


def _standard_digest(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return hmac.new(key, content, hashlib.sha256).digest()


def standard_webhook_signature(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """One ``webhook-signature`` entry: ``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``."""
    digest = _standard_digest(standard_secret_key(secret), msg_id, str(timestamp), body)
    return f"{STANDARD_VERSION},{base64.b64encode(digest).decode()}"


def standard_webhook_headers(secret: str, msg_id: str, body: bytes, now: float) -> dict[str, str]:
    """The three headers a Standard Webhooks sender puts on ``body`` sent at ``now``."""
    timestamp = str(int(now))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": standard_webhook_signature(secret, msg_id, timestamp, body),
    }


def _presented_signatures(header: str) -> list[bytes]:
    """Decoded ``v1`` signatures of a ``webhook-signature`` header; other versions are skipped."""
    out: list[bytes] = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != STANDARD_VERSION or not encoded:
            continue
        try:
            out.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return out


def verify_standard_webhook(
    secrets: str | Iterable[str],
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    tolerance: float = 300.0,
) -> str | None:
    """Check a Standard Webhooks delivery; None when valid, else the reason (never a secret).

    ``headers`` names are matched case-insensitively. Any listed secret may match (rotation),
    any ``v1`` entry of the signature header may match (the sender's rotation); every candidate
    is compared in constant time. Raises ValueError only for a malformed configured secret.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id, timestamp, signature = (lowered.get(name, "") for name in STANDARD_HEADERS)
    if not (msg_id and timestamp and signature):
        return "webhook-id, webhook-timestamp and webhook-signature are required"
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "webhook-timestamp is not Unix seconds"
    if abs(now - int(timestamp)) > tolerance:
        return f"webhook-timestamp is outside the ±{tolerance:.0f}s tolerance"
    try:
        msg_id.encode()
    except UnicodeEncodeError:
        return "webhook-id is not valid text"
    presented = _presented_signatures(signature)
    if not presented:
        return "webhook-signature has no v1 signature"
    keys = [standard_secret_key(s) for s in ([secrets] if isinstance(secrets, str) else secrets) if s]
    valid = False
    for key in keys:
        expected = _standard_digest(key, msg_id, timestamp, body)
        for candidate in presented:
            if hmac.compare_digest(expected, candidate):
                valid = True
    return None if valid else "webhook-signature does not match"
