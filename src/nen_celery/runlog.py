"""Deprecated home of ``RunIdFilter`` and ``JsonFormatter`` (kept so logging configurations
naming ``nen_celery.runlog.*`` keep working): use ``nen_celery.logs``."""

from __future__ import annotations

import warnings
from typing import Any

from nen_celery.logs import runlog


def __getattr__(name: str) -> Any:
    value = getattr(runlog, name)  # AttributeError for a name that never lived here
    warnings.warn(
        f"nen_celery.runlog.{name} moved to nen_celery.logs.{name}", DeprecationWarning, stacklevel=2
    )
    return value
