"""Settings of the local Nen simulator.

Plain dataclass (not the project's pydantic Settings) so tests can build one
inline and tweak it; ``POST /_sim/config`` mutates the same object at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimulatorConfig:
    """How the simulated Nen API authenticates, times and ends runs.

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
    #: Per-attempt timeout of a webhook delivery, seconds (Nen asks for a 200 within 5 s).
    delivery_timeout: float = 5.0
    #: Seconds a result stays downloadable: ``expires_at = now + result_ttl``.
    result_ttl: int = 3600
    #: Largest accepted ``POST /runs`` body; bigger ones get 413.
    max_body_bytes: int = 1024 * 1024
