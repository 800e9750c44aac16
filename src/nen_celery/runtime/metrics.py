"""Prometheus metrics, safe for prefork workers.

Counters and histograms live in this module's own registry. With ``PROMETHEUS_MULTIPROC_DIR``
set (the same directory for every process on a host, emptied before they start), each process,
prefork children included, writes its values to files there and ``render()`` sums them, so the
receiver's ``GET /metrics`` (or ``nen-celery metrics serve`` on a worker host) reports every
process of the host. Without it, ``render()`` reports the calling process only.

Labels are statuses, outcomes, reasons and actions: small fixed sets, never ids. What each
lifecycle event counts is the built-in observer's (observe/builtin.py: ``PrometheusMetrics``).
``nen_runs_pending`` and ``nen_parked_webhooks`` are read from Redis at scrape time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from nen_celery.errors import ConfigurationError
from nen_celery.settings import get_settings

log = logging.getLogger("nen_celery.runtime.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

RUNS_STARTED = Counter(
    "nen_runs_started", "Runs accepted by start_run: validated, stored and queued.", registry=REGISTRY
)
RUNS_ACCEPTED = Counter("nen_runs_accepted", "Runs Nen answered 202 Accepted for.", registry=REGISTRY)
RUNS_COMPLETED = Counter(
    "nen_runs_completed",
    "Runs whose completion was dispatched, by final status (success, failed, rejected, submit_failed).",
    ["status"],
    registry=REGISTRY,
)
SUBMIT_SECONDS = Histogram(
    "nen_submit_seconds",
    "POST /runs until a final answer, retries and backoff included, by outcome.",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
LATE_WEBHOOKS = Counter(
    "nen_late_webhooks",
    "Nen's webhooks for a run that had ended submit_failed as 'may have started in Nen': Nen did "
    "start it. Recorded on the run, no second callback; by Nen's status.",
    ["status"],
    registry=REGISTRY,
)
WEBHOOK_TO_CALLBACK_SECONDS = Histogram(
    "nen_webhook_to_callback_seconds",
    "Terminal webhook received by the receiver until the user's callback was dispatched.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "nen_webhooks",
    "Webhook deliveries answered by the receiver, by result "
    "(queued, applied, ignored, parked, hint_refused: queued or parked by messageId because its URL "
    "named a run with a missing or wrong token, or the refusal reason: invalid_signature, ...).",
    ["result"],
    registry=REGISTRY,
)
WEBHOOK_REFUSALS = Counter(
    "nen_webhook_refusals",
    "Webhook deliveries the receiver refused, by why (web/refusals.py: signature_missing, "
    "signature_prefix, bad_signature, stale_timestamp, no_secret, unknown_path, body_timeout, ...).",
    ["reason"],
    registry=REGISTRY,
)
RECONCILE_ACTIONS = Counter(
    "nen_reconcile_actions", "Actions taken by the reconcile sweep.", ["action"], registry=REGISTRY
)
CALLBACKS_DEAD_LETTERED = Counter(
    "nen_callbacks_dead_lettered",
    "Runs whose callback was never dispatched and went on the dead-letter list, by reason "
    "(arguments: they do not fit the task's signature).",
    ["reason"],
    registry=REGISTRY,
)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _RedisGauges:
    """Scrape-time gauges from the run store: O(1) reads (ZCARD), skipped if Redis is down."""

    def collect(self) -> Iterator[Metric]:
        import redis

        from nen_celery.runtime.context import get_context

        try:
            pending, parked = get_context().store.pending_counts()
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: run store unreachable (%s)", type(exc).__name__)
            yield GaugeMetricFamily("nen_store_up", "1 if the run store answered the scrape.", value=0)
            return
        yield GaugeMetricFamily("nen_store_up", "1 if the run store answered the scrape.", value=1)
        yield GaugeMetricFamily(
            "nen_runs_pending",
            "Runs with a pending check: not finished, or callback not yet at its end.",
            value=pending,
        )
        yield GaugeMetricFamily(
            "nen_parked_webhooks", "Webhooks kept for a messageId that is not bound yet.", value=parked
        )


class _Exposition:
    """What one scrape reports: this host's processes (or this process) plus the store gauges."""

    def __init__(self, sources: Iterable[Any]) -> None:
        self.sources = list(sources)

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()


def render(include_store: bool = True) -> tuple[bytes, str]:
    """The Prometheus text exposition and its content type."""
    directory = multiprocess_dir()
    counters: Any = REGISTRY
    if directory:
        from prometheus_client import multiprocess

        counters = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(counters, path=directory)
    sources = [counters, _RedisGauges()] if include_store else [counters]
    return generate_latest(_Exposition(sources)), CONTENT_TYPE_LATEST


def public_on_receiver() -> bool:
    """Whether the receiver's mounts serve ``GET /metrics`` (NEN_RECEIVER_METRICS; off, and
    off with invalid settings)."""
    try:
        return get_settings().receiver_metrics
    except ConfigurationError:
        return False


_scrapes: ThreadPoolExecutor | None = None
_scrapes_lock = threading.Lock()


def scrape_executor() -> ThreadPoolExecutor:
    """One thread of its own for scrapes: their Redis reads never take a thread the webhook
    path needs (the ASGI receiver's pool, a WSGI server's), and scrapes never pile up threads."""
    global _scrapes
    with _scrapes_lock:
        if _scrapes is None:
            _scrapes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nen-metrics")
        return _scrapes


def render_apart(timeout: float) -> tuple[bytes, str]:
    """``render()`` on the scrape thread, for a caller that must block (a WSGI view): it waits at
    most ``timeout`` s (TimeoutError past it), whatever the run store does."""
    return scrape_executor().submit(render).result(timeout)


def process_exited(pid: int) -> None:
    """Tell the multiprocess files that a (prefork child) process is gone."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
