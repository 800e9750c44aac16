"""Why a webhook was refused: one WARNING per reason at most every ``INTERVAL`` s, and a count.

A webhook Nen cannot deliver (a wrong secret, a wrong URL, no secret set) otherwise leaves only
access-log 401/404 lines while the run waits for the poll. A prober or a misconfigured sender
sends many: each reason logs at most once per interval, and its next line says how many were
left out. The reason is a fixed code (a metric label); the detail is our own text, never a
secret, a signature, a header's value or a body.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from nen_celery import observe

log = logging.getLogger("nen_celery.web")

INTERVAL = 60.0  # seconds between two WARNINGs of one reason


class RateLimitedLog:
    """At most one line per reason per ``interval``; the suppressed ones are counted into the
    next. Thread-safe: WSGI servers refuse from many threads."""

    def __init__(
        self, logger: logging.Logger, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warn(self, reason: str, detail: str) -> bool:
        """Log ``detail`` for ``reason`` unless one was logged within the interval; True if logged."""
        with self._lock:
            now = self.clock()
            last = self._last.get(reason)
            if last is not None and now - last < self.interval:
                self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
                return False
            self._last[reason] = now
            suppressed = self._suppressed.pop(reason, 0)
        more = f" ({suppressed} more in the last {self.interval:.0f} s not logged)" if suppressed else ""
        self.logger.warning("webhook refused (%s): %s%s", reason, detail, more)
        return True


LOG = RateLimitedLog(log)


def refused(reason: str, detail: str) -> None:
    """Count a refused delivery under ``reason`` and warn (rate-limited)."""
    observe.webhook_refused(reason)
    LOG.warn(reason, detail)


def shown(value: str, limit: int = 100) -> str:
    """A caller-chosen value (a path, a content type) fit for one log line: quoted, cut."""
    return repr(value[:limit] + ("..." if len(value) > limit else ""))
