"""Settings of the local Nen simulator.

Plain dataclass (not the project's pydantic Settings) so tests can build one
inline and tweak it; ``POST /_sim/config`` mutates the same object at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The config fields that inject faults. All are off by default; ``POST /_sim/reset`` puts them
#: back to the values the simulator was started with.
FAULT_FIELDS = (
    "seed",
    "post_errors",
    "post_error_rate",
    "post_error_status",
    "post_latency",
    "get_latency",
    "bad_accept_body",
    "drop_after_accept",
    "error_after_accept",
    "webhook_duplicates",
    "webhook_drop",
    "webhook_drop_rate",
    "webhook_reorder",
    "webhook_delay",
    "never_terminal",
    "honour_idempotency_key",
    "lookup_by_idempotency_key",
)


@dataclass(frozen=True)
class PlannedError:
    """One planned error answer to ``POST /runs`` (see ``SimulatorConfig.post_errors``).

    The body has Nen's error shape ``{"error": ..., "message": ...}``; ``error`` defaults to the
    snake_cased reason phrase of ``status`` (``service_unavailable``), ``message`` to a generic text.
    ``retry_after`` (seconds, or any header text such as an HTTP date) adds a ``Retry-After`` header.
    """

    status: int = 503
    retry_after: int | str | None = None
    error: str | None = None
    message: str | None = None


@dataclass
class SimulatorConfig:
    """How the simulated Nen API authenticates, times and ends runs, and which faults it injects.

    The three secrets are left out of ``repr`` so logging a config never leaks them.
    """

    api_key: str = field(default="sim-api-key", repr=False)
    signing_key: str = field(default="sim-signing-key", repr=False)
    webhook_secret: str = field(default="sim-webhook-secret", repr=False)
    #: Seconds from the 202 until the run turns ``processing`` (and that webhook is sent).
    processing_delay: float = 0.05
    #: Seconds from ``processing`` until the terminal status.
    terminal_delay: float = 0.1
    #: Workflow ids whose runs end ``failed``; every other run ends ``success``.
    fail_workflows: set[str] = field(default_factory=set)
    #: Workflow ids that ``POST /runs`` answers with 404 ``workflow_not_found``.
    unknown_workflows: set[str] = field(default_factory=set)
    #: Allowed clock skew of ``x-timestamp``, seconds either way.
    timestamp_tolerance: float = 300.0
    #: Body field holding the callback URL (``webhook_url`` is accepted as well).
    webhook_field: str = "webhook_callback"
    #: Total attempts per webhook delivery (first try included) before giving up.
    delivery_attempts: int = 5
    #: First pause between delivery attempts; doubles after each failed attempt.
    delivery_backoff: float = 0.2
    #: Longest pause between two delivery attempts (the doubling stops there).
    delivery_backoff_max: float = 30.0
    #: Webhooks in flight at once; the rest wait their turn (not counted as failed attempts),
    #: as behind a real sender's worker pool.
    delivery_concurrency: int = 32
    #: Per-attempt timeout of a webhook delivery, seconds (Nen asks for a 200 within 5 s).
    delivery_timeout: float = 5.0
    #: Seconds a result stays downloadable: ``expires_at = now + result_ttl``.
    result_ttl: int = 3600
    #: Largest accepted ``POST /runs`` body; bigger ones get 413.
    max_body_bytes: int = 1024 * 1024

    # -- fault injection: everything below is off by default ---------------------------------

    #: Seed of the RNG behind ``post_error_rate`` and ``webhook_drop_rate`` (None: unseeded).
    seed: int | None = None
    #: Planned error answers, consumed one per authenticated ``POST /runs``; no run is created.
    post_errors: list[PlannedError] = field(default_factory=list)
    #: Probability (0..1) that a ``POST /runs`` (with no planned error left) gets ``post_error_status``.
    post_error_rate: float = 0.0
    #: Status of the random errors of ``post_error_rate``.
    post_error_status: int = 503
    #: Seconds before answering ``POST /runs``; the run is created and started *before* the pause.
    post_latency: float = 0.0
    #: Seconds before answering ``GET /runs/{id}`` and ``GET /runs?idempotency_key=``.
    get_latency: float = 0.0
    #: Answer 202 with the non-JSON body ``accepted`` (run still created): True for every POST,
    #: an int for that many of the next accepting POSTs.
    bad_accept_body: bool | int = False
    #: Create the run, then close the connection without any answer, for this many next POSTs.
    drop_after_accept: int = 0
    #: Create the run, then answer each listed status in turn (one per accepting POST) with a
    #: gateway's HTML body, not Nen's JSON error shape: a 502/504 from a proxy after Nen took it.
    error_after_accept: list[int] = field(default_factory=list)
    #: Extra copies of every webhook, delivered concurrently with the original.
    webhook_duplicates: int = 0
    #: Webhook statuses never delivered (``processing``, ``success``, ``failed``).
    webhook_drop: set[str] = field(default_factory=set)
    #: Probability (0..1) that each webhook copy is silently never delivered (seeded).
    webhook_drop_rate: float = 0.0
    #: Deliver the terminal webhook first, the ``processing`` one after it.
    webhook_reorder: bool = False
    #: Extra seconds before each webhook delivery.
    webhook_delay: float = 0.0
    #: Runs that stay ``processing`` forever: True for all, or a set of workflow ids.
    never_terminal: bool | set[str] = False
    #: A POST whose Idempotency-Key already created a run gets that run's 202 again, no new run.
    honour_idempotency_key: bool = False
    #: Serve ``GET /runs?idempotency_key=K`` (otherwise 405, like the real API is assumed to).
    lookup_by_idempotency_key: bool = False
