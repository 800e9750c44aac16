"""The run statuses; which moves between them exist is domain/runstate.py's table.

Statuses only move forward (RANK): a move the table lacks is a no-op, so duplicate, replayed and
out-of-order webhooks cannot move a run backwards or complete it twice.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"  # record written, submit_run not yet accepted by Nen
    SUBMITTED = "submitted"  # Nen answered 202; messageId bound
    UNKNOWN = "unknown"  # POST's fate unknown (read timeout after send); parked, not re-sent
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    REJECTED = "rejected"  # Nen refused the request (4xx): never started
    SUBMIT_FAILED = "submit_failed"  # Nen unreachable past every retry: never started


RANK: dict[Status, int] = {
    Status.QUEUED: 0,
    Status.UNKNOWN: 1,
    Status.SUBMITTED: 1,
    Status.PROCESSING: 2,
    Status.SUCCESS: 3,
    Status.FAILED: 3,
    Status.REJECTED: 3,
    Status.SUBMIT_FAILED: 3,
}

TERMINAL: frozenset[Status] = frozenset(s for s, r in RANK.items() if r == 3)
SUCCESSFUL: frozenset[Status] = frozenset({Status.SUCCESS})
# Statuses Nen itself sends in webhooks / retrieval bodies.
WEBHOOK_STATUSES: frozenset[Status] = frozenset({Status.PROCESSING, Status.SUCCESS, Status.FAILED})


def is_terminal(status: str) -> bool:
    return status in TERMINAL
