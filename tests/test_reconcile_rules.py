"""reconcile.decide: every rule of the beat sweep, without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from nen_celery.lifecycle import reconcile as r
from nen_celery.settings import Settings

NOW = 1_000_000.0
S = Settings(
    webhook_url="https://me.example/hook",
    completion_lease=30,
    reconcile_interval=10,
    queued_grace=120,
    repoll_interval=60,
    poll_interval=5,
    run_timeout=3600,
    unknown_timeout=600,
)


def run(**fields: Any) -> dict[str, str]:
    base = {"run_id": "r", "workflow_id": "w", "created_at": str(NOW - 100), "updated_at": str(NOW - 50)}
    base.update({k: str(v) for k, v in fields.items()})
    return base


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"status": "success", "completion": "sent"}, r.Decision(r.DROP, None)),  # no callback
        # the broker took the callback: never dispatched again, however long ago and whatever
        # became of it (no guard on the user's task tells the sweep whether it ran)
        (
            {"status": "failed", "completion": "sent", "callback_task_id": "t", "completed_at": NOW - 10**6},
            r.Decision(r.DROP, None),
        ),
        ({"status": "failed", "completion": "pending"}, r.Decision(r.COMPLETE, NOW + 40)),
        (
            {"status": "rejected", "completion": "sending", "completion_lease_until": NOW + 5},
            r.Decision(r.WAIT, NOW + 6),
        ),
        (
            {"status": "submit_failed", "completion": "sending", "completion_lease_until": NOW - 1},
            r.Decision(r.COMPLETE, NOW + 40),
        ),
        ({"status": "queued", "submit_lease_until": NOW + 20}, r.Decision(r.WAIT, NOW + 21)),
        ({"status": "queued", "submit_lease_until": 0}, r.Decision(r.RESUBMIT, NOW + 120)),
        ({"status": "submitted"}, r.Decision(r.POLL, NOW + 60)),
        ({"status": "processing"}, r.Decision(r.POLL, NOW + 60)),
        ({"status": "processing", "created_at": NOW - 3601}, r.Decision(r.TIMEOUT, None)),
        ({"status": "queued", "created_at": NOW - 3601}, r.Decision(r.TIMEOUT, None)),
        ({"status": "unknown", "unknown_at": NOW - 100}, r.Decision(r.WAIT, NOW + 500)),
        ({"status": "unknown", "unknown_at": NOW - 600}, r.Decision(r.EXPIRE_UNKNOWN, None)),
    ],
)
def test_decide(fields: dict[str, Any], expected: r.Decision) -> None:
    assert r.decide(run(**fields), NOW, S) == expected


def test_missing_run_drops_its_timer() -> None:
    assert r.decide({}, NOW, S) == r.Decision(r.DROP, None)
    assert r.decide(None, NOW, S) == r.Decision(r.DROP, None)


def test_no_webhook_mode_polls_at_the_poll_interval() -> None:
    s = Settings(**{**S.model_dump(), "webhook_url": None})
    assert r.decide(run(status="submitted"), NOW, s) == r.Decision(r.POLL, NOW + 5)


def test_unknown_with_lookup_path_looks_up() -> None:
    s = Settings(**{**S.model_dump(), "lookup_path": "/runs?idempotency_key={idempotency_key}"})
    assert r.decide(run(status="unknown", unknown_at=NOW - 10), NOW, s) == r.Decision(r.LOOKUP, NOW + 60)


@pytest.mark.parametrize(
    ("bound", "parked", "expected"),
    [
        (True, 2, r.Decision("replay", None)),
        (False, 0, r.Decision(r.DROP, None)),
        (False, 1, r.Decision(r.WAIT, NOW + 60)),
    ],
)
def test_decide_parked(bound: bool, parked: int, expected: r.Decision) -> None:
    assert r.decide_parked(bound, parked, NOW, S) == expected
