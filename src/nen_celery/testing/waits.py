"""Waiting on a condition with a deadline: the only way the plugin waits (no fixed sleeps)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold by its deadline; the message says which, and what was seen last."""


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.01,
    seen: Callable[[], str] | None = None,
) -> T:
    """Call ``condition`` until it returns something true; return that. WaitTimeout past ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"; last seen: {seen()}" if seen is not None else ""
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}{detail}")
        pause.wait(interval)  # the polling period, not a synchronisation: the condition decides
