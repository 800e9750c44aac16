"""The run's state machine: one table, the only source of which status moves exist.

Each row is (status now, event) -> (next status, effects). ``can_transition`` and the terminal
set are read off it here, and the Lua scripts' guards are generated from it (``lua_guards``,
spliced into _common.lua by store/scripts.py), so Python and Redis cannot disagree. A status
move that no row names is refused by the scripts: a decision taken on a stale read (the sweep
read ``unknown``, a webhook has since bound the run) cannot end a run the table says it may not.

Guards beyond the table, in apply.lua: every end of ours is a compare-and-set on the status its
decision read (``expect``: ``stale`` when the run moved since), and a queued run is ended as
never started (``submit_failed``, ``rejected``) only while no POST of its attempt may have reached
Nen (``post_inflight``; else ``maybe_sent`` and the caller parks it ``unknown``); Nen's word moves
only the run bound to its messageId (``foreign``). Fences on the attempt and the holder: a 202
binds only the attempt its submit claimed (bind.lua ``stale``), and only the completion's holder
marks it sent (finish_completion.lua).

Nen's later word on a run that already ended (a webhook after ``submit_failed``) is no move of
this table: it goes in fields of its own (record_late), and the run's end stays as recorded.

The submit's steps inside ``queued`` move no status; they are the second table, ``SUBMIT``:
which script takes each step, what must hold (else it writes nothing), and what it writes.
tests/test_submit_steps.py runs each script against its row, one guard broken at a time.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from nen_celery.domain.status import RANK, Status


class Event(StrEnum):
    ACCEPTED = "accepted"  # Nen's 202, or a hinted webhook / retrieval that finds an unknown run
    AMBIGUOUS = "ambiguous"  # the POST's fate is unknown: parked, never resent blindly
    NEN_PROCESSING = "nen_processing"  # a webhook or retrieval body says processing
    NEN_SUCCESS = "nen_success"
    NEN_FAILED = "nen_failed"
    REFUSED = "refused"  # Nen answered the POST with a 4xx: it never started
    NEVER_SENT = "never_sent"  # every try spent, none possibly reached Nen
    SECURE_GONE = "secure_gone"  # the sealed secure params expired before the POST
    UNKNOWN_TIMEOUT = "unknown_timeout"  # the sweep: unknown past NEN_UNKNOWN_TIMEOUT
    RUN_TIMEOUT = "run_timeout"  # the sweep: no end within the run deadline


class Effect(StrEnum):
    BIND = "bind"  # store Nen's messageId, drop the secure params (Nen has them)
    PARK = "park"  # record unknown_at: the sweep asks Nen, and times the run out
    END = "end"  # record finished_at; the completion becomes pending, claimed exactly once
    KEEP_SECURE = "keep_secure"  # Nen never saw them: kept (sealed, bounded) for a redrive


class Move(NamedTuple):
    to: Status
    effects: frozenset[Effect]


S, E, F = Status, Event, Effect
_NEN = {E.NEN_PROCESSING: S.PROCESSING, E.NEN_SUCCESS: S.SUCCESS, E.NEN_FAILED: S.FAILED}


def _row(to: Status, *effects: Effect) -> Move:
    return Move(to, frozenset(effects))


def _nen_moves(*later: Status) -> dict[Event, Move]:
    """Nen's own word moves a run forward: processing, then its end."""
    out = {}
    for event, to in _NEN.items():
        if to in later:
            out[event] = _row(to, F.END) if to != S.PROCESSING else _row(to)
    return out


TABLE: dict[tuple[Status, Event], Move] = {
    **{(S.QUEUED, e): m for e, m in _nen_moves(S.PROCESSING, S.SUCCESS, S.FAILED).items()},
    (S.QUEUED, E.ACCEPTED): _row(S.SUBMITTED, F.BIND),
    (S.QUEUED, E.AMBIGUOUS): _row(S.UNKNOWN, F.PARK),
    (S.QUEUED, E.REFUSED): _row(S.REJECTED, F.END),
    (S.QUEUED, E.NEVER_SENT): _row(S.SUBMIT_FAILED, F.END, F.KEEP_SECURE),
    (S.QUEUED, E.SECURE_GONE): _row(S.SUBMIT_FAILED, F.END, F.KEEP_SECURE),
    (S.QUEUED, E.RUN_TIMEOUT): _row(S.SUBMIT_FAILED, F.END, F.KEEP_SECURE),
    **{(S.UNKNOWN, e): m for e, m in _nen_moves(S.PROCESSING, S.SUCCESS, S.FAILED).items()},
    (S.UNKNOWN, E.ACCEPTED): _row(S.SUBMITTED, F.BIND),
    (S.UNKNOWN, E.UNKNOWN_TIMEOUT): _row(S.SUBMIT_FAILED, F.END, F.KEEP_SECURE),
    (S.UNKNOWN, E.RUN_TIMEOUT): _row(S.SUBMIT_FAILED, F.END, F.KEEP_SECURE),
    **{(S.SUBMITTED, e): m for e, m in _nen_moves(S.PROCESSING, S.SUCCESS, S.FAILED).items()},
    (S.SUBMITTED, E.RUN_TIMEOUT): _row(S.FAILED, F.END),
    **{(S.PROCESSING, e): m for e, m in _nen_moves(S.SUCCESS, S.FAILED).items()},
    (S.PROCESSING, E.RUN_TIMEOUT): _row(S.FAILED, F.END),
}

TERMINAL: frozenset[Status] = frozenset(m.to for m in TABLE.values() if F.END in m.effects)
# status now -> the statuses some event may move it to
ALLOWED: dict[Status, frozenset[Status]] = {
    s: frozenset(m.to for (frm, _), m in TABLE.items() if frm == s) for s in Status
}


class Guard(StrEnum):
    QUEUED = "queued"  # the run's status is queued
    # no live lease of another message, nor of its own with a POST counted; no POST counted once
    # the lease lapsed (else ``ambiguous``: parked, unless NEN_RETRY_AMBIGUOUS)
    LEASE_FREE = "lease_free"
    HOLDER = "holder"  # this execution holds the submit lease
    SECURE_SEALED = "secure_sealed"  # no secure params, or their sealed copy is still there


class Write(StrEnum):
    LEASE = "lease"  # submit_lease_until, submit_holder '<task id>/<execution>', the sweep's timer
    COUNT_POST = "count_post"  # post_inflight + 1, attempts + 1, last_attempt_at: maybe sent
    UNCOUNT_POST = "uncount_post"  # post_inflight - 1 (attempts - 1 if it was never tried)


class Step(NamedTuple):
    script: str  # store/lua/<script>.lua
    needs: frozenset[Guard]
    writes: frozenset[Write]


G, W = Guard, Write
# The submit's steps, in order. ``first_post`` is ``claim`` and the first POST's count in one
# script (claim_submit with mark_post, one round trip less per run); when only SECURE_SEALED
# fails, claim_submit takes the ``claim`` row (the task then ends the run secure_gone, which a
# count would refuse as maybe_sent). Every proof that a counted POST never left (a connect error,
# the barrier, the rate limiter, a request that could not be built) takes ``not_sent``.
SUBMIT: dict[str, Step] = {
    "claim": Step("claim_submit", frozenset({G.QUEUED, G.LEASE_FREE}), frozenset({W.LEASE})),
    "first_post": Step(
        "claim_submit",
        frozenset({G.QUEUED, G.LEASE_FREE, G.SECURE_SEALED}),
        frozenset({W.LEASE, W.COUNT_POST}),
    ),
    "post": Step("begin_post", frozenset({G.QUEUED, G.HOLDER}), frozenset({W.COUNT_POST})),
    "not_sent": Step("post_not_sent", frozenset({G.HOLDER}), frozenset({W.UNCOUNT_POST})),
}


def move(status: str, event: Event) -> Move | None:
    """The row for ``event`` in ``status``; None: the table has no such move (refused)."""
    return TABLE.get((Status(status), event))


def can_transition(current: str, new: str) -> bool:
    """True when some event moves a run from ``current`` to ``new``."""
    return Status(new) in ALLOWED[Status(current)]


def _lua_set(items: frozenset[Status]) -> str:
    return "{" + ", ".join(f"{s.value}=true" for s in sorted(items)) + "}"


def lua_guards() -> str:
    """The Lua the scripts' guards run on, generated from the table (see store/scripts.py)."""
    allowed = ",\n  ".join(f"{s.value}={_lua_set(ALLOWED[s])}" for s in Status)
    ranks = ", ".join(f"{s.value}={RANK[s]}" for s in Status)
    return (
        "-- Generated from nen_celery.domain.runstate.TABLE: do not edit here.\n"
        f"local ALLOWED = {{\n  {allowed}}}\n"
        f"local TERMINAL = {_lua_set(TERMINAL)}\n"
        "-- Nen's own order (processing before its end), for its later word on an ended run\n"
        f"local RANK = {{{ranks}}}\n"
        "local function can_transition(cur, new)\n"
        "  local row = ALLOWED[cur]\n"
        "  return row ~= nil and row[new] == true\n"
        "end\n"
    )


def markdown_table() -> str:
    """The table as docs/guarantees.md shows it (a test holds the page to this)."""
    lines = ["| status now | event | next status | effects |", "|---|---|---|---|"]
    for (frm, event), mv in TABLE.items():
        effects = ", ".join(sorted(e.value for e in mv.effects)) or "-"
        lines.append(f"| {frm.value} | {event.value} | {mv.to.value} | {effects} |")
    return "\n".join(lines) + "\n"


def submit_markdown_table() -> str:
    """``SUBMIT`` as docs/guarantees.md shows it (a test holds the page to this)."""
    lines = ["| step | script | needs | writes |", "|---|---|---|---|"]
    for name, step in SUBMIT.items():
        needs = ", ".join(sorted(g.value for g in step.needs))
        writes = ", ".join(sorted(w.value for w in step.writes))
        lines.append(f"| {name} | {step.script}.lua | {needs} | {writes} |")
    return "\n".join(lines) + "\n"
