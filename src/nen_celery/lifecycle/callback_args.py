"""Does a callback's argument list fit its task? Checked by ``start_run`` before anything is stored.

A callback is called as Celery calls a signature: the finished-run dict prepended to the
signature's own args (none prepended to an immutable ``.si()`` signature), its kwargs merged.
When the task is registered in the calling process and checks its arguments (``task.typing``,
Celery's default), ``start_run`` makes the same check Celery makes in ``apply_async``
(``task.__header__(*args, **kwargs)``) with a placeholder run, so a callback that could never be
called is refused at once instead of failing in a worker after the run finished. A task known
only by name (registered in the workers alone) is not checked here; the workers' own check then
decides (``deadletter.py``: bounded retries, then the dead-letter list).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nen_celery.errors import InvalidCallback
from nen_celery.runtime.app import current

# Stands for the finished run in the check; only the number of positional arguments matters.
PLACEHOLDER_RUN: dict[str, Any] = {
    "run_id": "",
    "message_id": None,
    "workflow_id": "",
    "status": "success",
    "payload": None,
}


def call_args(sig: Mapping[str, Any], run: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The (args, kwargs) the callback's task is called with for ``run``."""
    own = tuple(sig.get("args") or ())
    kwargs = dict(sig.get("kwargs") or {})
    return (own if sig.get("immutable") else (run, *own)), kwargs


def _registered(name: str) -> Any:
    """The task registered under ``name`` in this process's Celery app, or None."""
    try:
        return current().tasks.get(name)
    except RuntimeError:  # an app that must not be finalized yet (autofinalize=False)
        return None


def check_callback_args(label: str, sig: Mapping[str, Any]) -> None:
    """Raise InvalidCallback naming ``label`` (on_complete / on_failure) and the task when the
    callback's arguments cannot fit its task; a no-op for tasks this process does not know, for
    tasks that check nothing (``typing=False``) and for canvas signatures (chain, group, ...)."""
    if sig.get("subtask_type"):
        return
    name = str(sig.get("task") or "")
    task = _registered(name) if name else None
    if task is None or not getattr(task, "typing", False):
        return
    header = getattr(task, "__header__", None)
    if header is None:
        return
    args, kwargs = call_args(sig, PLACEHOLDER_RUN)
    try:
        header(*args, **kwargs)
    except TypeError as exc:
        shape = "its own args" if sig.get("immutable") else "the finished run prepended to its own args"
        raise InvalidCallback(
            [
                (
                    label,
                    f"task {name} cannot be called with {shape} ({len(args)} positional, "
                    f"keywords {sorted(kwargs)}): {exc}",
                )
            ]
        ) from None
