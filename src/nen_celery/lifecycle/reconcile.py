"""What the beat sweep does with a due run: a pure decision, so every rule tests without I/O.

Temporal-style: the server side (this sweep) owns the timeouts. A run is looked at only when its
timer in ``<p>:timers`` is due, so a sweep costs O(due runs), not O(all runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nen_celery.domain.status import is_terminal
from nen_celery.settings import Settings

DROP = "drop"  # nothing left to watch
WAIT = "wait"  # look again later, do nothing now
RESUBMIT = "resubmit"  # queued with no live submit holder: queue submit_run again
POLL = "poll"  # no news from Nen for too long: ask the retrieval endpoint
LOOKUP = "lookup"  # unknown: find the run by its Idempotency-Key (NEN_LOOKUP_PATH)
COMPLETE = "complete"  # terminal but the callback is not out: queue complete_run again
EXPIRE_UNKNOWN = "expire_unknown"  # unknown past NEN_UNKNOWN_TIMEOUT: end submit_failed
TIMEOUT = "timeout"  # not terminal past NEN_RUN_TIMEOUT: end the run


@dataclass(frozen=True)
class Decision:
    action: str
    next_check: float | None  # None: leave the timer as it is (or drop it for DROP)


def _f(run: Mapping[str, str], field: str) -> float:
    value = run.get(field) or ""
    return float(value) if value else 0.0


def decide(run: Mapping[str, str] | None, now: float, s: Settings) -> Decision:
    if not run:
        return Decision(DROP, None)  # expired or deleted
    status = run.get("status", "")
    if is_terminal(status):
        completion = run.get("completion", "")
        if completion == "sent":
            # the broker took the callback: it is never dispatched again, whatever became of it
            return Decision(DROP, None)
        lease = _f(run, "completion_lease_until")
        if completion == "sending" and lease > now:
            return Decision(WAIT, lease + 1)
        return Decision(COMPLETE, now + s.completion_lease + s.reconcile_interval)
    if now - _f(run, "created_at") > s.run_timeout:
        return Decision(TIMEOUT, None)
    if status == "queued":
        lease = _f(run, "submit_lease_until")
        if lease > now:
            return Decision(WAIT, lease + 1)
        return Decision(RESUBMIT, now + s.queued_grace)
    if status == "unknown":
        since = _f(run, "unknown_at") or _f(run, "updated_at")
        if now - since >= s.unknown_timeout:
            return Decision(EXPIRE_UNKNOWN, None)
        if s.lookup_path:
            return Decision(LOOKUP, min(since + s.unknown_timeout, now + s.repoll_interval))
        return Decision(WAIT, since + s.unknown_timeout)
    # submitted / processing: Nen has it, but nothing moved for too long (or no-webhook mode)
    every = s.repoll_interval if s.webhook_url else s.poll_interval
    return Decision(POLL, now + every)


def decide_parked(bound: bool, parked: int, now: float, s: Settings) -> Decision:
    """Webhooks parked under a messageId: replay once it is bound, drop once they expired."""
    if parked == 0:
        return Decision(DROP, None)
    if bound:
        return Decision("replay", None)
    return Decision(WAIT, now + max(s.parked_grace, s.repoll_interval))
