"""Keep secrets out of log output: a ``logging.Filter`` for the handlers that need it.

``RedactingFilter`` cleans each record a handler emits, before that handler's formatter sees it.
Add it to your own handlers (``handler.addFilter(RedactingFilter())``, or ``"filters"`` in a
``dictConfig``). nen_celery is a guest in your process: importing it, mounting its receiver or
initialising its Flask/Django/FastAPI integration changes no logging (no LogRecord factory, no
handler, filter or formatter on your loggers). Only processes nen starts itself (the standalone
receiver ``uvicorn nen_celery.web.asgi:app``, the ready-made worker) put the filter on their own
handlers, with ``add_redaction()``.

What is removed from the message (``msg % args``), the traceback text and the stack text:

- the configured secrets, read from the environment, the installed framework settings (Django's
  ``NEN_CELERY``, Flask's ``NEN_*`` config: from the moment they are installed) and the loaded
  settings when the record is filtered: ``NEN_API_KEY``,
  ``NEN_SIGNING_KEY``, every ``NEN_WEBHOOK_SECRET`` and ``NEN_SECRETS_KEY`` entry (and the base64
  part of a ``whsec_`` secret), passwords in ``NEN_REDIS_URL`` / ``NEN_BROKER_URL`` /
  ``NEN_RESULT_BACKEND``, plus anything registered with ``add_secret()``; also their
  ``repr``/JSON-escaped and URL-encoded spellings;
- the query string and fragment of every URL, and its ``user:password@`` part: presigned
  download URLs are credentials; ``scheme://host/path`` is kept; a bare ``/path?query`` (an
  access log line) loses its query too;
- the value of credential headers however they are printed: ``x-api-key``, ``authorization``,
  ``proxy-authorization``, ``cookie``, ``set-cookie`` (httpx/httpcore debug output, a logged
  headers dict).

Secure params cannot be recognised by value: the code never logs them, and
``tests/test_security_scan.py`` checks that with a marker.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import SecretStr

from nen_celery.settings import Settings, installed_override_values, loaded_settings

REDACTED = "[REDACTED]"

_URL_RE = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)"
    r"(?P<userinfo>[^\s/?#@'\"<>\\]*@)?"
    r"(?P<hostpath>[^\s?#'\"<>\\]*)"
    r"(?P<rest>[?#][^\s'\"<>\\]*)?"
)
_BARE_PATH_QUERY_RE = re.compile(r"(?P<lead>(?:^|[\s\"'(=]))(?P<path>/[^\s?#'\"<>\\]*)\?[^\s#'\"<>\\]+")
_HEADER_RE = re.compile(
    r"(?P<name>\b(?:x-api-key|proxy-authorization|authorization|set-cookie|cookie))"
    r"(?P<sep>['\"]?\s*[:=,]\s*(?:b?['\"])?)"
    # a value already replaced by a secret's [REDACTED] is taken whole, so it is not redacted twice
    r"(?P<value>\[REDACTED\]|(?:(?:Bearer|Basic|Token)\s+)?(?:\[REDACTED\]|[^'\"\s,)}\]]+))",
    re.IGNORECASE,
)
_MIN_VARIANT = 1  # any non-empty secret is redacted, however short

_lock = threading.Lock()


def _reinit_lock_after_fork() -> None:
    # Celery's prefork pool forks the worker at any time: a child must not inherit this lock
    # held by another thread of its parent, or its first log line would wait forever.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reinit_lock_after_fork)

_extra_secrets: set[str] = set()
_pattern_cache: dict[tuple[str, ...], re.Pattern[str] | None] = {}


def add_secret(value: str) -> None:
    """Redact ``value`` from every log record from now on (e.g. a key your own code holds)."""
    if value:
        with _lock:
            _extra_secrets.add(value)
            _pattern_cache.clear()


def _url_password(url: str | None) -> list[str]:
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password] if password else []


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold, in the spellings a log line may show."""
    values: list[str] = []
    for secret in (settings.api_key, settings.signing_key, settings.webhook_secret, settings.secrets_key):
        if secret is not None and secret.get_secret_value():
            values.append(secret.get_secret_value())
    for entry in [*settings.webhook_secrets, *settings.secrets_keys]:
        values.append(entry)
        if entry.startswith("whsec_"):
            values.append(entry[len("whsec_") :])
    for url in (settings.redis_url, settings.broker_url, settings.result_backend):
        values += _url_password(url)
    return values


def _variants(value: str) -> set[str]:
    out = {value, repr(value)[1:-1], json.dumps(value)[1:-1], quote(value, safe="")}
    return {v for v in out if len(v) >= _MIN_VARIANT}


def _pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    key = tuple(sorted(set(secrets)))
    with _lock:
        if key in _pattern_cache:
            return _pattern_cache[key]
    spellings: set[str] = set()
    for secret in key:
        spellings |= _variants(secret)
    pattern = (
        re.compile("|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True)))
        if spellings
        else None
    )
    with _lock:
        if len(_pattern_cache) > 64:
            _pattern_cache.clear()
        _pattern_cache[key] = pattern
    return pattern


_SECRET_ENV = frozenset({"nen_api_key", "nen_signing_key", "nen_webhook_secret", "nen_secrets_key"})
_URL_ENV = frozenset({"nen_redis_url", "nen_broker_url", "nen_result_backend"})


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values in the ``NEN_*`` environment (names matched case-insensitively)."""
    values: list[str] = []
    for name, value in (os.environ if environ is None else environ).items():
        lowered = name.lower()
        if lowered in _SECRET_ENV and value.strip():
            values.append(value)
            for entry in (part.strip() for part in value.split(",")):
                if entry:
                    values.append(entry)
                    if entry.startswith("whsec_"):
                        values.append(entry[len("whsec_") :])
        elif lowered in _URL_ENV:
            values += _url_password(value)
    return values


def settings_override_secrets(values: Mapping[str, Any]) -> list[str]:
    """The secret values among installed overrides (Django's ``NEN_CELERY``, Flask's config),
    keyed by setting name: redacted from the moment they are installed, before settings load."""
    environ = {f"nen_{name}": str(value) for name, value in values.items() if isinstance(value, str)}
    environ.update(
        {
            f"nen_{name}": value.get_secret_value()
            for name, value in values.items()
            if isinstance(value, SecretStr)
        }
    )
    return env_secrets(environ)


def _current_secrets() -> list[str]:
    """The secrets in the environment, in installed overrides and in the loaded settings, read
    without side effects.

    Settings are used only once something loaded them (``get_settings`` is never called from
    here: doing so would cache settings read from whatever the environment is at that moment).
    """
    values = env_secrets()
    values += settings_override_secrets(installed_override_values())
    loaded = loaded_settings()
    if loaded is not None:
        values += settings_secrets(loaded)
    with _lock:
        values += _extra_secrets
    return values


def _strip_url(match: re.Match[str]) -> str:
    rest = f"?{REDACTED}" if match.group("rest") else ""
    return f"{match.group('scheme')}{match.group('hostpath')}{rest}"


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` without secrets, URL queries/credentials or credential header values.

    ``secrets`` defaults to the configured ones (see the module docstring).
    """
    pattern = _pattern(_current_secrets() if secrets is None else secrets)
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _URL_RE.sub(_strip_url, text)
    text = _BARE_PATH_QUERY_RE.sub(lambda m: f"{m.group('lead')}{m.group('path')}?{REDACTED}", text)
    return _HEADER_RE.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", text)


_exception_formatter = logging.Formatter()


def _redact_traces(record: logging.LogRecord) -> None:
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = _exception_formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Clean one record in place: message (args merged in), traceback and stack text."""
    try:
        message = record.getMessage()
    except Exception:  # bad format args: keep both, or logging would print them raw later
        message = f"{record.msg!s} (args: {record.args!r})"
    record.msg = redact(message)
    record.args = None
    _redact_traces(record)
    return record


class RedactingFilter(logging.Filter):
    """Cleans every record its handler emits (see the module docstring); never drops one.

    The rendered message is exactly ``redact(msg % args)``. A record with nothing to remove
    keeps its ``msg`` and ``args``, and so does one whose arguments can be cleaned one by one
    to the same text (uvicorn's access formatter unpacks ``args``); any other is stored merged
    and cleaned, as ``redact_record`` does. Tracebacks and stack text are cleaned too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            redact_record(record)
            return True
        cleaned = redact(message)
        if cleaned != message and not _redact_args(record, cleaned):
            record.msg, record.args = cleaned, None
        _redact_traces(record)
        return True


def _redact_args(record: logging.LogRecord, cleaned: str) -> bool:
    """Clean a tuple of string arguments one by one, if that renders exactly ``cleaned``."""
    if not (isinstance(record.msg, str) and isinstance(record.args, tuple) and record.args):
        return False
    msg = redact(record.msg)
    args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
    try:
        same = msg % args == cleaned
    except Exception:
        return False
    if same:
        record.msg, record.args = msg, args
    return same


def add_redaction(*targets: logging.Handler | logging.Logger) -> None:
    """Put a ``RedactingFilter`` on each handler given and on every handler of each logger given
    (idempotent: a handler that has one gets no second). For processes nen starts itself."""
    for target in targets:
        handlers = target.handlers if isinstance(target, logging.Logger) else [target]
        for handler in handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
