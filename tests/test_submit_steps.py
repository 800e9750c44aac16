"""The submit's steps (nen_celery.domain.runstate.SUBMIT) held to the scripts that take them.

Each row is run on a real Redis: with every guard it needs holding, the script writes exactly
the row's writes; with one guard broken (each way it can break), it writes none of them. The one
documented exception: claim_submit with mark_post whose sealed secure params are gone takes the
``claim`` row (the lease, no count).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from nen_celery.domain.runstate import SUBMIT, Guard, Write, submit_markdown_table

pytestmark = pytest.mark.integration

WF = "12345678-1234-1234-1234-123456789abc"
X = "x-step"  # the execution taking the step
Setup = Callable[[Any, str], None]


def _fresh(store: Any, runs: list[str]) -> str:
    """A queued run with secure params, sealed."""
    run_id = f"steps-{uuid.uuid4()}"
    sealed = store.sealer.seal(json.dumps({"TOKEN": "s3cret"}).encode())
    assert store.create(run_id, WF, {"A": 1}, sealed, None, None)
    runs.append(run_id)
    return run_id


def _take(store: Any, run_id: str, step: str) -> None:
    """Take ``step`` as execution X of task t-step."""
    if step in ("claim", "first_post"):
        store.claim_submit(run_id, 30, "t-step", X, mark_post=step == "first_post")
    elif step == "post":
        store.begin_post(run_id, X)
    else:
        store.post_not_sent(run_id, X)


# What makes every guard of a step hold: nothing for a claim; X's claim for the others
# (its count too, for not_sent: the POST it uncounts).
READY: dict[str, Setup] = {
    "claim": lambda store, rid: None,
    "first_post": lambda store, rid: None,
    "post": lambda store, rid: _claim(store, rid, "t-step", X),
    "not_sent": lambda store, rid: _claim(store, rid, "t-step", X, mark=True),
}


def _claim(
    store: Any, run_id: str, holder: str, execution: str, lease: float = 30, mark: bool = False
) -> None:
    assert store.claim_submit(run_id, lease, holder, execution, mark_post=mark).verdict == "ok"


def _not_queued(store: Any, run_id: str) -> None:
    assert store.apply(run_id, "unknown", source="t", expect="queued")[0] == "applied"


# Each way a guard can break, applied after the step's READY setup.
BREAK: dict[Guard, list[Setup]] = {
    Guard.QUEUED: [_not_queued],
    Guard.LEASE_FREE: [
        lambda store, rid: _claim(store, rid, "t-other", "x-other"),  # another message's live lease
        lambda store, rid: _claim(store, rid, "t-step", "x-earlier", mark=True),  # its own, mid-POST
        lambda store, rid: _claim(store, rid, "t-other", "x-other", lease=-1, mark=True),  # lapsed, counted
    ],
    Guard.HOLDER: [
        # a new execution of the message took the lease (its redelivery), or nobody holds it
        # (bound or ended: their scripts drop the holder)
        lambda store, rid: store.redis.hset(store.run_key(rid), "submit_holder", "t-step/x-new"),
        lambda store, rid: store.redis.hdel(store.run_key(rid), "submit_holder"),
    ],
    Guard.SECURE_SEALED: [lambda store, rid: store.redis.delete(store.secure_key(rid))],
}


def _writes(before: dict[str, str], after: dict[str, str]) -> set[Write]:
    """The row writes seen between two reads of the record (X's)."""
    out: set[Write] = set()
    holder = after.get("submit_holder", "")
    if holder.endswith("/" + X) and after.get("submit_lease_until") != before.get("submit_lease_until"):
        out.add(Write.LEASE)
    inflight = int(after.get("post_inflight") or 0) - int(before.get("post_inflight") or 0)
    attempts = int(after.get("attempts") or 0) - int(before.get("attempts") or 0)
    if inflight > 0:
        assert attempts == 1 and after.get("last_attempt_at"), (before, after)
        out.add(Write.COUNT_POST)
    if inflight < 0:
        assert attempts == 0, (before, after)  # a tried POST stays in attempts
        out.add(Write.UNCOUNT_POST)
    return out


def _run(store: Any, runs: list[str], step: str, broken: Setup | None = None) -> set[Write]:
    run_id = _fresh(store, runs)
    READY[step](store, run_id)
    if broken is not None:
        broken(store, run_id)
    before = store.raw(run_id)
    _take(store, run_id, step)
    return _writes(before, store.raw(run_id))


@pytest.mark.parametrize("step", list(SUBMIT))
def test_with_every_guard_holding_a_step_writes_its_rows_writes(
    store: Any, runs: list[str], step: str
) -> None:
    assert _run(store, runs, step) == set(SUBMIT[step].writes)


CASES = [
    (step, guard, way)
    for step, row in SUBMIT.items()
    for guard in sorted(row.needs)
    for way in range(len(BREAK[guard]))
]


@pytest.mark.parametrize(("step", "guard", "way"), CASES)
def test_with_one_guard_broken_a_step_writes_nothing(
    store: Any, runs: list[str], step: str, guard: Guard, way: int
) -> None:
    written = _run(store, runs, step, BREAK[guard][way])
    if (step, guard) == ("first_post", Guard.SECURE_SEALED):
        assert written == set(SUBMIT["claim"].writes)  # the lease, no count: ended secure_gone
    else:
        assert written == set()


def test_the_guarantees_page_shows_the_submit_steps_as_the_code_has_them() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "guarantees.md").read_text()
    assert submit_markdown_table() in page
