from __future__ import annotations

import itertools

import pytest

from nen_celery.domain.status import RANK, TERMINAL, Status, can_transition, is_terminal

ALL = list(Status)


def test_forward_only() -> None:
    assert can_transition("queued", "submitted")
    assert can_transition("submitted", "processing")
    assert can_transition("processing", "success")
    assert can_transition("queued", "success")  # a terminal webhook may come first
    assert not can_transition("success", "processing")
    assert not can_transition("success", "failed")
    assert not can_transition("processing", "processing")
    assert can_transition("unknown", "submitted")
    assert not can_transition("submitted", "unknown")


@pytest.mark.parametrize(("cur", "new"), list(itertools.product(ALL, ALL)))
def test_terminal_is_final(cur: Status, new: Status) -> None:
    if is_terminal(cur):
        assert not can_transition(cur, new)
    if can_transition(cur, new):
        assert RANK[new] >= RANK[cur]


def test_terminal_set() -> None:
    assert {s.value for s in TERMINAL} == {"success", "failed", "rejected", "submit_failed"}
