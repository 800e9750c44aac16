"""Which failures towards Nen are retried: pure classification, tested without I/O."""

from __future__ import annotations

import email.utils
from typing import Any

import httpx

from .errors import NenAPIError, NenTransportError

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


def classify_status(
    status_code: int,
    body: Any,
    *,
    retryable_statuses: frozenset[int],
    retry_after: str | None,
    now: float,
) -> NenAPIError:
    """An error response as a typed error. 4xx outside the retry list mean Nen refused the run."""
    retryable = status_code in retryable_statuses
    after = parse_retry_after(retry_after, now) if status_code in (429, 503) else None
    return NenAPIError(status_code, body, retryable=retryable, retry_after=after)
