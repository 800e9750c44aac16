"""Logging you can add to your own handlers: redaction of secrets and the run ids of a record.

Nothing here is installed on import: ``RedactingFilter`` and ``RunIdFilter`` are filters you add
(``handler.addFilter(...)`` or ``"()": "nen_celery.logs.RedactingFilter"`` in ``dictConfig``);
``JsonFormatter`` writes one JSON object per record with the run ids. The names resolve on first
use, so importing ``nen_celery`` (which binds run ids through runlog) does not load redaction.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nen_celery.logs.redaction import RedactingFilter, add_redaction
    from nen_celery.logs.runlog import JsonFormatter, RunIdFilter

__all__ = ["JsonFormatter", "RedactingFilter", "RunIdFilter", "add_redaction"]

_HOMES = {
    "RedactingFilter": "redaction",
    "add_redaction": "redaction",
    "JsonFormatter": "runlog",
    "RunIdFilter": "runlog",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
