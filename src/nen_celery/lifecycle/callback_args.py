"""Does a callback's argument list fit its task? Checked by ``start_run`` before anything is stored.

A callback is called as Celery calls a signature: the finished-run dict prepended to the
signature's own args (none prepended to an immutable ``.si()`` signature), its kwargs merged.
When the task is registered in the calling process and checks its arguments (``task.typing``,
Celery's default), ``start_run`` makes the same check Celery makes in ``apply_async``
(``task.__header__(*args, **kwargs)``) with a placeholder run, so a callback that could never be
called is refused at once instead of failing in a worker after the run finished. A task known
only by name (registered in the workers alone) is not checked here; the workers' own check then
decides (``deadletter.py``: bounded retries, then the dead-letter list).

Canvases: a ``group`` of plain signatures is called as Celery calls it, every member with the
finished run prepended, each member exactly once (CallbackTask keys its lease on the member's
place in the group). A ``chain`` or a ``chord`` (and a group holding one) is refused: their later
steps are sent by the worker after the guarded step ended, outside the lease, so a crash between
that end and the send loses the next step or runs it twice. Run the next steps from the callback.
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


# The finished run's fields a callback's argsrepr shows (Flower, the worker's log): the rest of
# the run (payload: Nen's body, presigned URLs included; params; error; history) is left out.
SHOWN_RUN_FIELDS = ("run_id", "status", "workflow_id", "message_id")
ARGSREPR_MAXSIZE = 1024  # Celery's own default (app.amqp.argsrepr_maxsize)


def callback_argsrepr(sig: Mapping[str, Any], run: Mapping[str, Any], maxsize: int = ARGSREPR_MAXSIZE) -> str:
    """The ``argsrepr`` of a callback's message: the user's own arguments as Celery would show
    them, after the finished run reduced to its ids and status (``{'run_id': ..., 'status': ...,
    'workflow_id': ..., 'message_id': ..., ...}``); only nen's part is hidden, never the user's."""
    from celery.utils.saferepr import saferepr

    own = tuple(sig.get("args") or ())
    if sig.get("immutable"):
        return str(saferepr(own, maxsize))
    shown = ", ".join(f"{name!r}: {run.get(name)!r}" for name in SHOWN_RUN_FIELDS)
    rest = str(saferepr(own, maxsize))[1:-1].rstrip(",")  # the tuple's items, as Celery shows them
    return "({" + shown + ", ...}" + (f", {rest})" if rest else ",)")


def _registered(name: str) -> Any:
    """The task registered under ``name`` in this process's Celery app, or None."""
    try:
        return current().tasks.get(name)
    except RuntimeError:  # an app that must not be finalized yet (autofinalize=False)
        return None


def check_callback_args(label: str, sig: Mapping[str, Any]) -> None:
    """Raise InvalidCallback naming ``label`` (on_complete / on_failure) and the task when the
    callback's arguments cannot fit its task (each member's, for a group), or naming the kind
    of a canvas that cannot be run exactly once (chain, chord, a group holding one); a no-op
    for tasks this process does not know and for tasks that check nothing (``typing=False``)."""
    kind = sig.get("subtask_type")
    if kind == "group":
        members = list((sig.get("kwargs") or {}).get("tasks") or ())
        for member in members:
            inner = member.get("subtask_type") if isinstance(member, Mapping) else "?"
            if inner:
                raise InvalidCallback([(label, f"a group holding a {inner}: {REFUSED}")])
        for member in members:
            _check_task(label, member)
        return
    if kind or sig.get("chord_size") is not None or (sig.get("options") or {}).get("chord"):
        raise InvalidCallback([(label, f"a {kind or 'chord'}: {REFUSED}")])
    _check_task(label, sig)


# Why a chain or chord is refused, in its InvalidCallback.
REFUSED = (
    "nen runs a callback exactly once per attempt, and only a plain signature or a group of plain "
    "signatures can be (a chain's or chord's later steps are sent after the guarded step ended); "
    "call the next steps from your callback"
)


def _check_task(label: str, sig: Mapping[str, Any]) -> None:
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
