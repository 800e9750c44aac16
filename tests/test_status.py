from __future__ import annotations

import itertools

import pytest

from nen_celery.domain.runstate import can_transition
from nen_celery.domain.status import RANK, TERMINAL, Status, is_terminal

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


def test_the_state_tables_terminal_set_is_the_status_modules() -> None:
    from nen_celery.domain import runstate

    assert runstate.TERMINAL == TERMINAL


def test_the_state_table_never_moves_a_run_backwards_or_out_of_its_end() -> None:
    from nen_celery.domain.runstate import TABLE, Effect

    for (frm, event), move in TABLE.items():
        assert not is_terminal(frm), (frm, event)
        assert RANK[move.to] > RANK[frm] or (frm, move.to) == (Status.UNKNOWN, Status.SUBMITTED)
        assert (Effect.END in move.effects) == is_terminal(move.to), (frm, event)


@pytest.mark.parametrize(
    ("cur", "new"),
    [
        # finding 7: the sweep read `unknown`; a webhook has since bound the run: no submit_failed
        (Status.SUBMITTED, Status.SUBMIT_FAILED),
        (Status.PROCESSING, Status.SUBMIT_FAILED),
        # Nen refuses only a POST, before any binding
        (Status.SUBMITTED, Status.REJECTED),
        (Status.UNKNOWN, Status.REJECTED),
    ],
)
def test_moves_no_event_makes_are_refused(cur: Status, new: Status) -> None:
    assert not can_transition(cur, new)


def test_the_guarantees_page_shows_the_state_table_as_the_code_has_it() -> None:
    from pathlib import Path

    from nen_celery.domain.runstate import markdown_table

    page = (Path(__file__).resolve().parent.parent / "docs" / "guarantees.md").read_text()
    assert markdown_table() in page
