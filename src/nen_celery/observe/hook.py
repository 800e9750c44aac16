"""The one observer hook: every lifecycle event nen reports goes through here, once, to the
built-in observers (metrics, run-log ids) and to the ones the user added.

Cheap on the hot path: each event reads one tuple of handlers, built when an observer is added
or removed, and calls them in turn; an observer that does not override an event is not in its
tuple. A user's observer is guarded: its exception is logged once per observer and event, and
never reaches the run or the answer to Nen. Nothing is added on import: ``add_observer`` is the
only way in, per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from nen_celery.observe.builtin import PrometheusMetrics, RunLogContext
from nen_celery.observe.observer import Observer

log = logging.getLogger("nen_celery.observe")

Scope = Callable[[str | None, str | None, str | None], AbstractContextManager[None]]
ObserverT = TypeVar("ObserverT", bound=Observer)


@dataclass(frozen=True, slots=True)
class _Handlers:
    """Per event, the methods to call, in registration order (built-ins first)."""

    run_started: tuple[Callable[[str, str], None], ...]
    run_accepted: tuple[Callable[[str, str], None], ...]
    submit_finished: tuple[Callable[[str, str, float], None], ...]
    run_completed: tuple[Callable[[str, str, float | None], None], ...]
    webhook_answered: tuple[Callable[[int, str, bool], None], ...]
    webhook_refused: tuple[Callable[[str], None], ...]
    reconciled: tuple[Callable[[Mapping[str, int]], None], ...]
    callback_dead_lettered: tuple[Callable[[str, str], None], ...]
    late_webhook: tuple[Callable[[str, str], None], ...]
    process_exited: tuple[Callable[[int], None], ...]
    run_ids: tuple[Callable[[str | None, str | None, str | None], None], ...]
    run_scope: tuple[Scope, ...]


EVENTS = tuple(f.name for f in dataclasses.fields(_Handlers))
BUILTIN: tuple[Observer, ...] = (PrometheusMetrics(), RunLogContext())


class _Guarded:
    """A user observer's method: its exception is logged (once) and swallowed."""

    __slots__ = ("event", "method", "observer", "reported")

    def __init__(self, observer: Observer, event: str) -> None:
        self.observer, self.event = observer, event
        self.method: Callable[..., Any] = getattr(observer, event)
        self.reported = False

    def __call__(self, *args: Any) -> Any:
        try:
            return self.method(*args)
        except Exception:
            self.failed()
            return None

    def failed(self) -> None:
        with _lock:
            if self.reported:
                return
            self.reported = True
        log.exception(
            "observer %s failed on %s; ignored (logged once per observer and event)",
            type(self.observer).__qualname__,
            self.event,
        )

    def scope(self, run_id: str | None, message_id: str | None, workflow_id: str | None) -> _GuardedScope:
        return _GuardedScope(self, (run_id, message_id, workflow_id))


class _GuardedScope:
    """A user observer's ``run_scope``: entering or leaving it never raises into the block."""

    __slots__ = ("cm", "guard", "ids")

    def __init__(self, guard: _Guarded, ids: tuple[str | None, str | None, str | None]) -> None:
        self.guard, self.ids = guard, ids
        self.cm: AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        try:
            cm = self.guard.method(*self.ids)
            cm.__enter__()
            self.cm = cm
        except Exception:
            self.guard.failed()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.cm is not None:
            try:
                self.cm.__exit__(kind, exc, tb)  # it may not swallow the block's exception
            except Exception as error:
                if error is not exc:  # the block's own exception, passed through: not its failure
                    self.guard.failed()


def _overrides(observer: Observer, event: str) -> bool:
    own = getattr(type(observer), event, None)
    if event == "run_scope":  # the default scope calls run_ids
        return own is not Observer.run_scope or _overrides(observer, "run_ids")
    return own is not None and own is not getattr(Observer, event)


def _handler(observer: Observer, event: str, guarded: bool) -> Callable[..., Any]:
    if not guarded:
        method: Callable[..., Any] = getattr(observer, event)
        return method
    guard = _Guarded(observer, event)
    return guard.scope if event == "run_scope" else guard


def _build(added: tuple[Observer, ...]) -> _Handlers:
    every = [(o, False) for o in BUILTIN] + [(o, True) for o in added]
    handlers = {e: tuple(_handler(o, e, g) for o, g in every if _overrides(o, e)) for e in EVENTS}
    return _Handlers(**handlers)


_lock = threading.Lock()
_added: tuple[Observer, ...] = ()
_on = _build(_added)


def add_observer(observer: Observer) -> None:
    """Have ``observer`` hear every lifecycle event of this process from now on (once, however
    often it is added). Explicit and per process: call it where your app or worker is set up."""
    global _added, _on
    if not isinstance(observer, Observer):
        raise TypeError(f"an observer is a nen_celery.Observer, not {type(observer).__name__}")
    with _lock:
        if not any(o is observer for o in _added):
            _added = (*_added, observer)
            _on = _build(_added)


def remove_observer(observer: Observer) -> None:
    """Stop calling ``observer`` (nothing if it was not added)."""
    global _added, _on
    with _lock:
        if any(o is observer for o in _added):
            _added = tuple(o for o in _added if o is not observer)
            _on = _build(_added)


def observers() -> tuple[Observer, ...]:
    """The observers added in this process (the built-ins are not listed)."""
    return _added


@contextlib.contextmanager
def observing(observer: ObserverT) -> Iterator[ObserverT]:
    """``observer`` added for the block (tests, a script)."""
    add_observer(observer)
    try:
        yield observer
    finally:
        remove_observer(observer)


# The events, as the code reports them: each calls its handlers in turn (the built-ins first).


def run_started(run_id: str, workflow_id: str) -> None:
    for handler in _on.run_started:
        handler(run_id, workflow_id)


def run_accepted(run_id: str, message_id: str) -> None:
    for handler in _on.run_accepted:
        handler(run_id, message_id)


def submit_finished(run_id: str, outcome: str, seconds: float) -> None:
    for handler in _on.submit_finished:
        handler(run_id, outcome, seconds)


def run_completed(run_id: str, status: str, webhook_to_callback_seconds: float | None) -> None:
    for handler in _on.run_completed:
        handler(run_id, status, webhook_to_callback_seconds)


def webhook_answered(status_code: int, answer: str, hint_refused: bool = False) -> None:
    for handler in _on.webhook_answered:
        handler(status_code, answer, hint_refused)


def webhook_refused(reason: str) -> None:
    for handler in _on.webhook_refused:
        handler(reason)


def reconciled(counts: Mapping[str, int]) -> None:
    for handler in _on.reconciled:
        handler(counts)


def callback_dead_lettered(run_id: str, reason: str) -> None:
    for handler in _on.callback_dead_lettered:
        handler(run_id, reason)


def late_webhook(run_id: str, status: str) -> None:
    for handler in _on.late_webhook:
        handler(run_id, status)


def process_exited(pid: int) -> None:
    for handler in _on.process_exited:
        handler(pid)


def run_ids(run_id: str | None = None, message_id: str | None = None, workflow_id: str | None = None) -> None:
    for handler in _on.run_ids:
        handler(run_id, message_id, workflow_id)


def run_scope(
    run_id: str | None = None, message_id: str | None = None, workflow_id: str | None = None
) -> AbstractContextManager[None]:
    """Every observer's scope around the block (with the built-ins only: the run log's own)."""
    handlers = _on.run_scope
    if len(handlers) == 1:
        return handlers[0](run_id, message_id, workflow_id)
    return _Scopes(handlers, (run_id, message_id, workflow_id))


class _Scopes:
    """Each observer's scope, entered in order and left in reverse (an ExitStack, without its
    generator: a delivery pays for this on every webhook once a user observer is added)."""

    __slots__ = ("entered", "handlers", "ids")

    def __init__(self, handlers: tuple[Scope, ...], ids: tuple[str | None, str | None, str | None]) -> None:
        self.handlers, self.ids = handlers, ids
        self.entered: list[AbstractContextManager[None]] = []

    def __enter__(self) -> None:
        try:
            for handler in self.handlers:
                scope = handler(*self.ids)
                scope.__enter__()
                self.entered.append(scope)
        except BaseException as exc:  # only a built-in's can raise (a user's is guarded)
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        while self.entered:
            self.entered.pop().__exit__(kind, exc, tb)
