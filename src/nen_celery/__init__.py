"""Run Nen workflow runs from Celery workers, reliably."""

from .api import MayHaveStarted, RunConflict, RunHandle, get_run, redrive_run, start_run
from .celery_app import CallbackTask, init_celery
from .config import ConfigurationError, Settings, get_settings
from .errors import NenAPIError, NenError, NenProtocolError, NenTransportError
from .models import Run
from .params import InvalidCallback, InvalidParams, register_workflow, unregister_workflow
from .status import Status

__all__ = [
    "CallbackTask",
    "ConfigurationError",
    "InvalidCallback",
    "InvalidParams",
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
