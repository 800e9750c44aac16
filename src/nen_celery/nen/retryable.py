"""Which failures towards Nen are retried: pure classification, tested without I/O."""

from __future__ import annotations

import email.utils
import re
from typing import Any

import httpx

from nen_celery.errors import NenAPIError, NenTransportError

# Nothing reached the server: always safe to resend.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.LocalProtocolError)
# The request (or part of it) was on the wire and no answer came back: Nen may have started the
# workflow. Resending could start it twice, so it is retried only when NEN_RETRY_READ_TIMEOUT=true.
MAYBE_SENT = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


def classify_transport(exc: httpx.TransportError, *, retry_read_timeout: bool) -> NenTransportError:
    """``retry_read_timeout``: the opt-in (NEN_RETRY_AMBIGUOUS) to resend when Nen may have it."""
    name = type(exc).__name__
    if isinstance(exc, NOT_SENT):
        return NenTransportError(f"{name}: request not sent ({exc})", maybe_sent=False, retryable=True)
    if isinstance(exc, MAYBE_SENT):
        return NenTransportError(
            f"{name}: no answer after the request was sent ({exc})",
            maybe_sent=True,
            retryable=retry_read_timeout,
        )
    return NenTransportError(f"{name}: {exc}", maybe_sent=False, retryable=False)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


# Nen's ``error`` is a machine code (``hmac_required_for_secure_params``, ``rate_limited``); a
# gateway's is a reason phrase (Spring: ``{"status": 503, "error": "Service Unavailable", ...}``).
_NEN_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,99}")


def is_nen_error_body(body: Any) -> bool:
    """Nen's documented error shape exactly: ``{"error": "<code>", "message": "<detail>"}`` (a
    missing ``message`` tolerated), no other key, ``error`` a snake_case code. Only then does the
    answer come from Nen itself; anything else may be a gateway's after Nen got the request."""
    return (
        isinstance(body, dict)
        and set(body) <= {"error", "message"}
        and isinstance(body.get("error"), str)
        and _NEN_ERROR_CODE.fullmatch(body["error"]) is not None
        and isinstance(body.get("message", ""), str)
    )


def classify_status(
    status_code: int,
    body: Any,
    *,
    retryable_statuses: frozenset[int],
    retry_after: str | None,
    now: float,
    retry_ambiguous: bool = False,
) -> NenAPIError:
    """An error answer to a request that was sent, as a typed error.

    Only an answer proving that Nen did not act on the request is retried: a status of
    ``retryable_statuses`` (429, 503) carrying Nen's own error body. A 4xx otherwise means Nen
    (or a proxy before it) refused the run. Anything else (5xx, 408, a 429/503 without Nen's
    body: a gateway's answer after the request may have reached Nen) leaves its outcome unknown
    (``maybe_sent``): resent only with the opt-in ``retry_ambiguous``.
    """
    from_nen = is_nen_error_body(body)
    after = parse_retry_after(retry_after, now) if status_code in (429, 503) else None
    if status_code in retryable_statuses and from_nen:
        return NenAPIError(status_code, body, retryable=True, retry_after=after)
    if 400 <= status_code < 500 and status_code != 408 and (from_nen or status_code != 429):
        return NenAPIError(status_code, body, retryable=False, retry_after=after)
    return NenAPIError(status_code, body, retryable=retry_ambiguous, retry_after=after, maybe_sent=True)
