"""Issue 25 (F3): canvases as on_complete / on_failure. A group of plain signatures is run as
Celery runs it, every member once (tests/test_callback_fence.py runs one on a real worker); a
chain or chord cannot be made exactly once and is refused by start_run, naming its kind."""

from __future__ import annotations

from typing import Any

import pytest
from celery import chain, chord, group

import nen_celery
from nen_celery.errors import InvalidCallback
from nen_celery.lifecycle.callback_args import check_callback_args
from tests.callbacks import record

WORKFLOW = "5f6a4c1e-8d2b-4b7e-9a3c-2e1d0f9b8a71"


@pytest.mark.parametrize(
    ("canvas", "kind"),
    [
        (chain(record.s("a"), record.s("b")), "chain"),
        (record.s("a") | record.s("b"), "chain"),
        (chord([record.s("a"), record.s("b")], record.s("c")), "chord"),
        (group(record.s("a"), chain(record.s("b"), record.s("c"))), "group holding a chain"),
    ],
)
def test_a_chain_or_chord_is_refused_by_start_run_naming_its_kind(canvas: Any, kind: str) -> None:
    with pytest.raises(InvalidCallback) as caught:
        nen_celery.start_run(WORKFLOW, {"n": 1}, on_complete=canvas)
    assert caught.value.errors[0][0] == "on_complete"
    assert kind in caught.value.errors[0][1]
    with pytest.raises(InvalidCallback, match="on_failure"):
        nen_celery.start_run(WORKFLOW, {"n": 1}, on_failure=canvas)


def test_a_group_of_plain_signatures_is_accepted_and_each_member_checked() -> None:
    check_callback_args("on_complete", dict(group(record.s("a"), record.s("b"))))
    with pytest.raises(InvalidCallback, match=r"tests\.record cannot be called"):
        check_callback_args("on_complete", dict(group(record.s("a"), record.s("b", "c", "d"))))
