"""Typed errors. API errors carry Nen's status code and error body, like Stripe's client does."""

from __future__ import annotations

from typing import Any

from .config import ConfigurationError
from .params import InvalidParams

__all__ = [
    "ConfigurationError",
    "InvalidParams",
    "NenAPIError",
    "NenError",
    "NenProtocolError",
    "NenTransportError",
]


class NenError(Exception):
    """Base of every error talking to Nen.

    ``retryable``: resending is known to be safe and may succeed.
    ``maybe_sent``: Nen may have received (and acted on) the request.
    """

    retryable: bool = False
    maybe_sent: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": str(self)}


class NenAPIError(NenError):
    """Nen answered with an error status; ``body`` is its parsed error body (or text)."""

    def __init__(
        self,
        status_code: int,
        body: Any,
        *,
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.retryable = retryable
        self.retry_after = retry_after
        self.maybe_sent = False
        self.error = body.get("error") if isinstance(body, dict) else None
        self.message = body.get("message") if isinstance(body, dict) else None
        detail = f"{self.error}: {self.message}" if self.error else str(body)[:200]
        super().__init__(f"Nen answered {status_code} ({detail})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "status_code": self.status_code,
            "error": self.error,
            "message": self.message,
            "body": self.body,
        }


class NenTransportError(NenError):
    """The request failed below HTTP; ``maybe_sent`` tells whether Nen may have got it."""

    def __init__(self, message: str, *, maybe_sent: bool, retryable: bool) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent
        self.retryable = retryable

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": str(self), "maybe_sent": self.maybe_sent}


class NenProtocolError(NenError):
    """Nen accepted the request (2xx) but the answer is unusable, e.g. a 202 that is not JSON."""

    maybe_sent = True

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code
