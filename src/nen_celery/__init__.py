"""Run Nen workflow runs from Celery workers, reliably."""

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
from nen_celery.lifecycle.api import MayHaveStarted, RunConflict, RunHandle, get_run, redrive_run, start_run
from nen_celery.settings import Settings, get_settings

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
    "Run",
    "RunConflict",
    "RunHandle",
    "Settings",
    "Status",
    "get_run",
    "get_settings",
    "init_celery",
    "redrive_run",
    "register_workflow",
    "start_run",
    "unregister_workflow",
]
__version__ = "0.1.0"
