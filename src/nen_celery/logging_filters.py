"""Deprecated home of ``RedactingFilter`` (kept so logging configurations naming
``nen_celery.logging_filters.RedactingFilter`` keep working): use ``nen_celery.logs``."""

from __future__ import annotations

import warnings
from typing import Any

from nen_celery.logs import redaction


def __getattr__(name: str) -> Any:
    value = getattr(redaction, name)  # AttributeError for a name that never lived here
    warnings.warn(
        f"nen_celery.logging_filters.{name} moved to nen_celery.logs.{name}",
        DeprecationWarning,
        stacklevel=2,
    )
    return value
