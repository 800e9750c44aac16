"""The run store's one clock: Redis's ``TIME``, read now and then and carried forward on this
host's monotonic clock.

Why: a lease, ``unknown_at`` or a timer is written by one host and compared by another (a
worker's submit lease by another worker, a run's ``unknown_at`` by beat's sweep). Host wall clocks
differ, by seconds where NTP is missing, and step when NTP corrects them: a comparison across
hosts must be on one clock, the run store's. Reading ``TIME`` on every write would add a round
trip to each; instead each process reads it every ``resync`` seconds and counts the time since on
``time.monotonic()``, which a wall-clock step never moves and whose rate errs by the oscillator's
tens of ppm (about 1 ms over 30 s). A child forked by a prefork pool keeps its parent's reading:
the monotonic clock is the machine's, not the process's.

``TIME`` is read by a one-line script on a fixed key, so that on a Redis Cluster every process
asks the same node; a Sentinel failover moves it to the new primary at the next reading.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("nen_celery.store")

RESYNC_SECONDS = 30.0
TIME_SCRIPT = "return redis.call('TIME')"


class StoreClock:
    """``time()``: seconds since the epoch by the run store's clock (see the module docstring)."""

    def __init__(
        self,
        read_time: Callable[[], tuple[int, int]],
        resync: float = RESYNC_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_time = read_time
        self.resync = resync
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._reading: tuple[float, float] | None = None  # (store time, monotonic) at the reading
        self._tried = float("-inf")  # monotonic time of the last attempt to read

    def time(self) -> float:
        reading = self._reading
        if reading is None or self._monotonic() - self._tried >= self.resync:
            reading = self._read(reading)
        base, at = reading
        return base + (self._monotonic() - at)

    def _read(self, previous: tuple[float, float] | None) -> tuple[float, float]:
        with self._lock:
            if self._reading is not previous:  # another thread read it meanwhile
                assert self._reading is not None
                return self._reading
            before = self._monotonic()
            self._tried = before
            try:
                seconds, micros = self._read_time()
            except Exception:
                if previous is None:
                    raise  # the store is down: the call this was for would fail too
                log.debug("run store clock: TIME failed, carrying the last reading forward", exc_info=True)
                return previous
            after = self._monotonic()
            self._reading = (int(seconds) + int(micros) / 1e6, (before + after) / 2)
            return self._reading
