"""Clock-skew check: Nen refuses signatures whose ``x-timestamp`` is more than ±5 minutes off.

A worker whose clock drifts would see every signed POST refused with 401s that look like a bad
key. ``check_clock`` compares the local clock with the ``Date`` header of one answer from
``NEN_API_URL`` and logs a warning when they differ by more than ``NEN_CLOCK_SKEW_MAX`` seconds.
``skew_seconds`` and ``skew_problem`` are the pure parts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx

from nen_celery.settings import Settings

log = logging.getLogger("nen_celery.checks.clock")

# HTTP dates have one-second resolution: a server at 12:00:00.999 says 12:00:00.
DATE_RESOLUTION = 1.0
NEN_SIGNATURE_WINDOW = 300.0


def parse_http_date(value: str) -> float:
    """Unix seconds of an RFC 9110 ``Date`` header; ValueError when it is not one."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"Date header {value[:64]!r} is not an HTTP date") from None
    if parsed.tzinfo is None:
        raise ValueError(f"Date header {value[:64]!r} has no time zone")
    return parsed.timestamp()


def skew_seconds(date_header: str, sent_at: float, received_at: float) -> float:
    """How far the server's clock is ahead of ours (negative: behind), in seconds.

    The server stamped its answer somewhere between ``sent_at`` and ``received_at`` (local
    clock) and truncated it to the second, so the skew is only known to within that interval
    plus one second; this returns the value of least magnitude consistent with it (0 when the
    clocks may agree).
    """
    server = parse_http_date(date_header)
    earliest = server - received_at  # server stamped at the last moment, at the start of its second
    latest = server + DATE_RESOLUTION - sent_at  # stamped at once, at the end of its second
    if earliest > 0:
        return earliest
    if latest < 0:
        return latest
    return 0.0


def skew_problem(skew: float, limit: float) -> str | None:
    """A warning naming the skew when ``|skew| > limit``, else None."""
    if abs(skew) <= limit:
        return None
    direction = "behind" if skew > 0 else "ahead of"
    severity = (
        "Nen refuses every signed request (±5 min window)"
        if abs(skew) > NEN_SIGNATURE_WINDOW
        else f"close to Nen's ±{NEN_SIGNATURE_WINDOW:.0f}s signature window"
    )
    return (
        f"local clock is {abs(skew):.0f}s {direction} the Nen API's clock (NEN_CLOCK_SKEW_MAX="
        f"{limit:.0f}s): {severity}; fix NTP on this host"
    )


def check_clock(
    settings: Settings,
    http: httpx.Client | None = None,
    *,
    path: str = "/healthz",
    clock: Callable[[], float] = time.time,
) -> float | None:
    """GET ``NEN_API_URL + path`` (no credentials sent), warn on skew; return the skew or None.

    Any answer carrying a ``Date`` header will do (a 404 too). Never raises: a failed check is
    logged and returns None, it must not stop a worker from starting.
    """
    url = settings.api_url + path
    owns = http is None
    client = http or httpx.Client(timeout=settings.connect_timeout + settings.read_timeout)
    try:
        sent_at = clock()
        response = client.get(url)
        received_at = clock()
        date = response.headers.get("date")
        if date is None:
            log.info("clock check: %s answered without a Date header; skipped", settings.api_url)
            return None
        skew = skew_seconds(date, sent_at, received_at)
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("clock check against %s skipped: %s", settings.api_url, type(exc).__name__)
        return None
    finally:
        if owns:
            client.close()
    problem = skew_problem(skew, settings.clock_skew_max)
    if problem is not None:
        log.warning("clock skew: %s", problem)
    else:
        log.info("clock check: within %.0fs of %s", settings.clock_skew_max, settings.api_url)
    return skew
