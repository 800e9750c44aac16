"""Live checks behind ``nen-celery config check``: settings, run store, broker, Nen API, webhook.

Each probe answers ``Probe(name, level, detail)`` and never raises; details name settings and
hosts, never a secret's value (URLs are shown without credentials or query).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from nen_celery.checks.config import ERROR, WARNING, config_problems
from nen_celery.connections import redis_client
from nen_celery.errors import ConfigurationError
from nen_celery.settings import Settings, get_settings

OK = "ok"


@dataclass(frozen=True)
class Probe:
    name: str
    level: str  # ok | warning | error
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def safe_url(url: str) -> str:
    """scheme://host:port/path, without user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def probe_settings() -> tuple[Settings | None, list[Probe]]:
    from nen_celery.checks.django_settings import django_settings_problem

    try:
        settings = get_settings()
    except ConfigurationError as exc:  # names the setting; values are never echoed
        return None, [Probe("settings", ERROR, str(exc))]
    probes = [Probe("settings", OK, "every NEN_* setting parses")]
    ignored = django_settings_problem()
    if ignored is not None:
        probes.append(Probe("settings", ERROR, ignored))
    for level, message in config_problems(settings):
        probes.append(Probe("settings", level, message))
    return settings, probes


def probe_redis(settings: Settings, timeout: float = 2.0) -> list[Probe]:
    import redis

    from nen_celery.checks.durability import durability_problems, read_config

    where = safe_url(settings.redis_url)
    client = redis_client(
        settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout, decode_responses=True
    )
    try:
        started = time.monotonic()
        client.ping()
        rtt = (time.monotonic() - started) * 1000
        probes = [Probe("run store", OK, f"{where} answered PING in {rtt:.1f} ms")]
        problems = durability_problems(read_config(client), settings.allow_eviction)
        probes += [Probe("run store durability", level, p) for level, p in problems] or [
            Probe("run store durability", OK, "appendonly, appendfsync and noeviction as advised")
        ]
        return probes
    except (redis.RedisError, OSError) as exc:
        return [Probe("run store", ERROR, f"{where} (NEN_REDIS_URL) not reachable: {type(exc).__name__}")]
    finally:
        client.close()


def broker_in_use(settings: Settings) -> tuple[str, str]:
    """(URL, what names it) of the broker this process publishes to: the app given to
    init_celery (``nen-celery -A proj``: its own broker_url, e.g. Django's CELERY_BROKER_URL),
    else the ready-made app's NEN_BROKER_URL (default NEN_REDIS_URL)."""
    from nen_celery.runtime.app import installed

    app = installed()
    if app is not None:
        url = app.conf.broker_write_url or app.conf.broker_url
        if url:
            return str(url), f"the broker_url of the Celery app {app.main!r}"
    return settings.broker, "NEN_BROKER_URL"


def probe_broker(settings: Settings, timeout: float = 2.0) -> list[Probe]:
    from kombu.connection import Connection

    url, source = broker_in_use(settings)
    where = safe_url(url)
    try:
        with Connection(url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises transport-specific errors
        return [Probe("broker", ERROR, f"{where} ({source}) not reachable: {type(exc).__name__}")]
    return [Probe("broker", OK, f"{where} ({source}) accepted a connection")]


def probe_webhook(settings: Settings, timeout: float = 5.0) -> list[Probe]:
    """A signed test webhook to NEN_WEBHOOK_URL, as Nen sends one (checks.webhook_test)."""
    from nen_celery.checks.webhook_test import send_test_webhook

    if settings.webhook_url is None:
        return []  # no-webhook mode: the settings probe says so
    result = send_test_webhook(settings, timeout)
    return [Probe("webhook", result.level, result.detail)]


def probe_nen(settings: Settings, timeout: float = 3.0) -> list[Probe]:
    """Is NEN_API_URL reachable (any HTTP answer will do), and is our clock close to its clock?"""
    import httpx

    from nen_celery.checks.clock import skew_problem, skew_seconds

    where = safe_url(settings.api_url)
    try:
        with httpx.Client(timeout=timeout) as http:
            sent = time.time()
            answer = http.get(settings.api_url.rstrip("/") + "/")
            received = time.time()
    except httpx.HTTPError as exc:
        return [Probe("nen api", ERROR, f"{where} (NEN_API_URL) not reachable: {type(exc).__name__}")]
    probes = [Probe("nen api", OK, f"{where} answered HTTP {answer.status_code}")]
    date = answer.headers.get("date")
    if date:
        try:
            problem = skew_problem(skew_seconds(date, sent, received), settings.clock_skew_max)
        except ValueError:
            problem = None
        probes.append(Probe("clock", WARNING, problem) if problem else Probe("clock", OK, "in step with Nen"))
    return probes


def run_probes() -> list[Probe]:
    settings, probes = probe_settings()
    if settings is None:
        return probes
    return (
        probes
        + probe_redis(settings)
        + probe_broker(settings)
        + probe_nen(settings)
        + probe_webhook(settings)
    )


def summary(probes: list[Probe]) -> dict[str, Any]:
    return {
        "ok": not any(p.level == ERROR for p in probes),
        "checks": [p.to_dict() for p in probes],
    }
