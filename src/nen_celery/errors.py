"""Every error type of the package, in one module that imports nothing of ours.

ConfigurationError: a setting is missing or invalid. InvalidParams / InvalidCallback: bad input to
start_run, refused before anything is queued. NenError and its kinds: API errors carry Nen's status
code and error body, like Stripe's client does; what is stored and logged of that body is its
``error`` / ``message`` fields, cut and redacted."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = [
    "ConfigurationError",
    "InvalidCallback",
    "InvalidParams",
    "LeaseLost",
    "NenAPIError",
    "NenError",
    "NenProtocolError",
    "NenTransportError",
]



class ConfigurationError(RuntimeError):
    """A setting the requested operation needs is missing or invalid; the message names it."""


class InvalidParams(ValueError):
    """Params failed validation; ``errors`` lists ``(field, problem)`` for each bad field."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("invalid params: " + "; ".join(f"{f}: {p}" for f, p in errors))


class InvalidCallback(InvalidParams):
    """``on_complete`` / ``on_failure`` cannot be called as given: its arguments do not fit the
    task's signature (with the finished-run dict prepended), or cannot travel as UTF-8 JSON."""


class LeaseLost(RuntimeError):
    """This execution of a callback no longer holds its lease: it was paused past the lease
    (SIGSTOP, a GC pause, a starved event loop) and a redelivered copy claimed the callback
    since, with a greater fence token. Raised by ``CallbackTask.check_lease()`` before a side
    effect; the execution holding the lease decides the callback's end. ``fence`` is this
    execution's (stale) token. The message names the run, never the run's data."""

    def __init__(self, run_id: str, attempt: str, fence: int) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.fence = fence
        super().__init__(f"callback of run {run_id} attempt {attempt}: fence token {fence} lost its lease")

# What is kept of Nen's error answers (stored on the run, logged): its ``error`` and ``message``
# fields only, each with the run's secure param values replaced and cut to this many characters.
ERROR_TEXT_MAX = 500
REDACTED = "[REDACTED]"
_secure_values: ContextVar[tuple[str, ...]] = ContextVar("nen_secure_values", default=())


def _spellings(values: Iterable[str]) -> tuple[str, ...]:
    """Each value as it may appear in a message: as is, JSON-escaped (either way), repr'd;
    longest first, so a longer spelling is replaced before a shorter one inside it."""
    out: set[str] = set()
    for value in values:
        if not isinstance(value, str) or not value:
            continue
        out.update(
            {
                value,
                json.dumps(value)[1:-1],
                json.dumps(value, ensure_ascii=False)[1:-1],
                repr(value)[1:-1],
            }
        )
    out.discard("")
    return tuple(sorted(out, key=len, reverse=True))


@contextmanager
def redacting(secure_values: Iterable[str] | None) -> Iterator[None]:
    """NenAPIErrors built inside this block (in this thread / task) keep none of these values
    (the run's secure params) in their text: submit_run wraps the POST with it."""
    token = _secure_values.set(_spellings(secure_values or ()))
    try:
        yield
    finally:
        _secure_values.reset(token)


def _replace(text: str, spellings: tuple[str, ...]) -> str:
    for spelling in spellings:
        if spelling in text:
            text = text.replace(spelling, REDACTED)
    return text


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every spelling of every secret replaced by ``[REDACTED]``."""
    return _replace(text, _spellings(secrets))


def _shown(value: Any, spellings: tuple[str, ...], limit: int = ERROR_TEXT_MAX) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = _replace(text.encode("utf-8", "replace").decode("utf-8"), spellings)
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def shown_text(value: Any, secrets: Iterable[str] = (), limit: int = ERROR_TEXT_MAX) -> str | None:
    """One field of Nen's answer as nen stores and logs it: text (non-strings as JSON), lone
    surrogates replaced by ``?``, secrets redacted, then cut to ``limit`` characters (a cut
    ends in ``...``)."""
    return _shown(value, _spellings(secrets), limit)


def _fields(body: Any, spellings: tuple[str, ...]) -> tuple[str | None, str | None]:
    if isinstance(body, dict):
        return _shown(body.get("error"), spellings), _shown(body.get("message"), spellings)
    return None, _shown(body, spellings)


def error_fields(body: Any, secrets: Iterable[str] = ()) -> tuple[str | None, str | None]:
    """(error, message) of an error answer, as stored and logged (``shown_text``): Nen's own
    ``error`` / ``message`` fields of a JSON object body, nothing else of it; for any other body
    (a gateway's HTML page, plain text), no ``error`` and the start of the text as ``message``."""
    return _fields(body, _spellings(secrets))


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
    """Nen answered with an error status.

    ``body`` is its parsed error body (or text) as received, for code to inspect; nen never
    stores or logs it. ``error`` / ``message`` (and so ``str()`` and ``to_dict()``, what is
    stored and logged) are its ``error`` / ``message`` fields shaped by ``error_fields``: cut
    to ERROR_TEXT_MAX characters, with the secure values of a ``redacting`` block replaced.
    """

    def __init__(
        self,
        status_code: int,
        body: Any,
        *,
        retryable: bool,
        retry_after: float | None = None,
        maybe_sent: bool = False,
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.retryable = retryable
        self.retry_after = retry_after
        self.maybe_sent = maybe_sent
        self.error, self.message = _fields(body, _secure_values.get())
        detail = f"{self.error}: {self.message}" if self.error else (self.message or "no body")
        super().__init__(f"Nen answered {status_code} ({detail})")

    def to_dict(self) -> dict[str, Any]:
        """What is stored on the run: never the whole body, never a secure value."""
        return {
            "type": type(self).__name__,
            "status_code": self.status_code,
            "error": self.error,
            "message": self.message,
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
