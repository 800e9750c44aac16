"""Run Nen workflow runs from Celery workers, reliably.

The names below load on first use (PEP 562): ``import nen_celery`` alone, as pytest does for the
``nen_celery.testing`` plugin, imports neither Celery nor redis-py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nen_celery.celery.callback_task import CallbackTask
    from nen_celery.celery.install import init_celery
    from nen_celery.domain.models import Run
    from nen_celery.domain.params import register_workflow, unregister_workflow
    from nen_celery.domain.status import Status
    from nen_celery.errors import (
        ConfigurationError,
        InvalidCallback,
        InvalidParams,
        LeaseLost,
        NenAPIError,
        NenError,
        NenProtocolError,
        NenTransportError,
    )
    from nen_celery.lifecycle.api import (
        MayHaveStarted,
        RunConflict,
        RunHandle,
        get_run,
        redrive_run,
        start_run,
    )
    from nen_celery.observe import Observer, add_observer, remove_observer
    from nen_celery.settings import Settings, get_settings

_EXPORTS = {
    "CallbackTask": "nen_celery.celery.callback_task",
    "ConfigurationError": "nen_celery.errors",
    "InvalidCallback": "nen_celery.errors",
    "InvalidParams": "nen_celery.errors",
    "LeaseLost": "nen_celery.errors",
    "MayHaveStarted": "nen_celery.lifecycle.api",
    "NenAPIError": "nen_celery.errors",
    "NenError": "nen_celery.errors",
    "NenProtocolError": "nen_celery.errors",
    "NenTransportError": "nen_celery.errors",
    "Observer": "nen_celery.observe",
    "Run": "nen_celery.domain.models",
    "RunConflict": "nen_celery.lifecycle.api",
    "RunHandle": "nen_celery.lifecycle.api",
    "Settings": "nen_celery.settings",
    "Status": "nen_celery.domain.status",
    "add_observer": "nen_celery.observe",
    "get_run": "nen_celery.lifecycle.api",
    "get_settings": "nen_celery.settings",
    "init_celery": "nen_celery.celery.install",
    "redrive_run": "nen_celery.lifecycle.api",
    "register_workflow": "nen_celery.domain.params",
    "remove_observer": "nen_celery.observe",
    "start_run": "nen_celery.lifecycle.api",
    "unregister_workflow": "nen_celery.domain.params",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nen_celery' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "CallbackTask",
    "ConfigurationError",
    "InvalidCallback",
    "InvalidParams",
    "LeaseLost",
    "MayHaveStarted",
    "NenAPIError",
    "NenError",
    "NenProtocolError",
    "NenTransportError",
    "Observer",
    "Run",
    "RunConflict",
    "RunHandle",
    "Settings",
    "Status",
    "add_observer",
    "get_run",
    "get_settings",
    "init_celery",
    "redrive_run",
    "register_workflow",
    "remove_observer",
    "start_run",
    "unregister_workflow",
]
__version__ = "0.1.0"
