"""Run ids on every log record, and a JSON formatter, so one grep follows a run everywhere.

``bind(run_id=..., message_id=..., workflow_id=...)`` sets the ids for the current context (a
task, a webhook request); ``RunIdFilter`` on a handler stamps them on every record it emits as
``record.nen`` (a dict; a namespaced attribute, so a caller's own ``extra={"run_id": ...}``
never collides). A handler filter, not a LogRecord factory: nen_celery changes nothing
process-wide in a process it does not own, so the filter goes on handlers: yours (add it to your
logging config), or those of the processes nen starts itself (``configure``). Importing this
module changes no logging. The tasks bind what they know as soon as they know it, through the
observer hook (``observe.run_ids``; its built-in ``RunLogContext`` calls ``bind_ids``); Celery's
task_prerun/postrun clear it so a pool thread never lends one task's ids to the next.

``NEN_LOG_FORMAT=json`` makes the worker, beat and receiver log one JSON object per line:
``ts, level, logger, message, run_id, message_id, workflow_id, task_name, task_id`` (+ ``exc``).
Where the handler also has ``logging_filters.RedactingFilter``, records are redacted before
this formatter sees them (tracebacks included: ``exc`` is the cleaned ``exc_text``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

IDS = ("run_id", "message_id", "workflow_id")

_ids: ContextVar[dict[str, str] | None] = ContextVar("nen_celery_run_ids", default=None)


def current() -> dict[str, str]:
    return dict(_ids.get() or {})


def _merged(ids: dict[str, str | None]) -> dict[str, str]:
    return {**(_ids.get() or {}), **{k: str(v) for k, v in ids.items() if v}}


def _with(run_id: str | None, message_id: str | None, workflow_id: str | None) -> dict[str, str]:
    """``_merged`` for the three ids, positionally: no keyword dict on the observer's hot path."""
    merged = dict(_ids.get() or {})
    if run_id:
        merged["run_id"] = str(run_id)
    if message_id:
        merged["message_id"] = str(message_id)
    if workflow_id:
        merged["workflow_id"] = str(workflow_id)
    return merged


def bind(**ids: str | None) -> None:
    """Add ids to the current context (None values are ignored)."""
    _ids.set(_merged(ids))


def bind_ids(run_id: str | None, message_id: str | None, workflow_id: str | None) -> None:
    """``bind`` of the three ids (None: not known here)."""
    _ids.set(_with(run_id, message_id, workflow_id))


def clear() -> None:
    _ids.set(None)


class _Bound:
    """The ids added for a block, the context's own restored at its end (``bound_ids``; a class,
    cheaper than ``bound``'s generator on every webhook delivery)."""

    __slots__ = ("ids", "token")

    def __init__(self, ids: tuple[str | None, str | None, str | None]) -> None:
        self.ids = ids

    def __enter__(self) -> None:
        self.token = _ids.set(_with(*self.ids))

    def __exit__(self, *exc: object) -> None:
        _ids.reset(self.token)


@contextlib.contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    token = _ids.set(_merged(ids))
    try:
        yield
    finally:
        _ids.reset(token)


def bound_ids(
    run_id: str | None, message_id: str | None, workflow_id: str | None
) -> AbstractContextManager[None]:
    """``bound`` of the three ids, positionally."""
    return _Bound((run_id, message_id, workflow_id))


class RunIdFilter(logging.Filter):
    """Stamps the ids bound in the emitting context on the record (handlers emit synchronously)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _ids.get()
        if ids and not hasattr(record, "nen"):
            record.nen = dict(ids)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the run ids come from ``record.nen`` or the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids: dict[str, Any] = dict(getattr(record, "nen", None) or {})
        for name in IDS:
            value = getattr(record, name, None) or ids.get(name)
            if value:
                out[name] = value
        for name in ("task_name", "task_id"):
            value = getattr(record, name, None)
            if value and value != "???":
                out[name] = value
        if record.exc_text:  # set (and cleaned) by the redaction filter, or by another formatter
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(log_format: str, *loggers: logging.Logger) -> None:
    """On every handler of ``loggers`` (default: root): the id stamping, and the JSON formatter
    when ``log_format == "json"`` (idempotent)."""
    formatter = JsonFormatter() if log_format == "json" else None
    for logger in loggers or (logging.getLogger(),):
        for handler in logger.handlers:
            if not any(isinstance(f, RunIdFilter) for f in handler.filters):
                handler.addFilter(RunIdFilter())
            if formatter is not None:
                handler.setFormatter(formatter)
