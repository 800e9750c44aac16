"""Exactly once, checked against a model (issue 25, item 2).

A Hypothesis state machine drives the real Lua scripts through RunStore on a real Redis, one run
per example, through interleavings of: submit executions, duplicated and redelivered (the claim,
which counts the first POST; begin_post for a later one; a POST whose answer is a 202, lost, a
connect error or a refusal; nothing sent before the POST, the count withdrawn; bind); Nen's
webhooks duplicated, reordered, late and replayed, by the three ways in (the receiver, which
applies a processing webhook and ends the run with a terminal one, claiming its completion and
dispatching the callback itself, and may die anywhere in between with nothing redelivered but
Nen's webhook: its own plan, web/decide.py, driven one effect at a time; the hinted ingest task
that claims the completion; the messageId index);
complete_run claims, dispatches, finishes and releases by several holders; sweep decisions
read at one step and acted on later (so possibly stale); redrives, forced or not; a fake clock
that lets leases and timeouts lapse; executions that die (their message comes back) or are
paused; and Redis rollbacks: a snapshot of the run's keys (DUMP/PTTL) restored later with
RESTORE REPLACE, which loses every write since, as an AOF cut back would.

The model (tests/model_world.py) knows what Redis cannot: POSTs on the wire, Nen's own runs and
their words, callbacks published. After every step: at most one POST per attempt that may have
reached Nen; every callback of an attempt is of its end's status (one task id), of the kind the
status calls for; an attempt ends once (status and finished_at never rewritten, never undone);
a Nen word ends only the run bound to its messageId, with Nen's own outcome; a completion
marked sent is never claimed again, and only its own attempt's dispatcher marks it; no callback
is published while a rollback could still undo what it rests on. At the end
of each example (model_steps.drain) nothing crashes any more and every task runs: the run's
current attempt must end and its callback go out (nothing stuck, no callback lost).

Every violation it found has a minimised, named case in tests/test_exactly_once_regressions.py
(test_model_finding_*), and is fixed: the model fails on any violation.

The durability barrier (store/durable.py) is modelled, not run: a rollback only
goes back to a snapshot taken after the last side effect that cannot be taken back (a POST, a
callback published, a 2xx to Nen, start_run's return), and an execution whose write was lost
fails its next barrier (its message comes back). Without the barrier, rollbacks break "nothing
acknowledged is forgotten" by construction (tests/test_redis_kill.py measures that window).

NEN_MODEL_PROFILE=soak runs many more and longer examples (make soak):
NEN_MODEL_PROFILE=soak python -m pytest -s tests/test_model.py
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nen_celery.runtime.context import get_context
from tests.model_steps import POST_OUTCOMES, Steps, drain, pick, stage_execs
from tests.model_world import TICKS

PROFILES = {
    "default": settings(max_examples=700, stateful_step_count=80),  # ~35 s on 2 cores
    "soak": settings(max_examples=10000, stateful_step_count=100),
}
PROFILE = os.environ.get("NEN_MODEL_PROFILE", "default")
N = st.integers(0, 1000)  # picks one of a list, modulo its length
PATHS = st.sampled_from(["task", "receiver", "unhinted"])  # the hinted task, the receiver, no hint


def _has(kind: str, stage: str) -> object:
    return precondition(lambda self: bool(stage_execs(self.w, kind, stage)))


class RunModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        ctx = get_context()
        self.w = Steps(ctx.redis, ctx.sealer, ctx.settings)

    def teardown(self) -> None:
        try:
            drain(self.w)
            self.w.check()
        finally:
            STATS.update({k: STATS.get(k, 0) + v for k, v in self.w.stats.items()})
            self.w.cleanup()

    # -- submit_run -------------------------------------------------------------------------------
    @precondition(lambda self: self.w.status == "queued")
    @rule()
    def submit_message(self) -> None:
        """A second submit_run message (start_run's, a sweep's, a redrive's)."""
        self.w.add_exec("submit")

    @_has("submit", "new")
    @rule(i=N, outcome=st.sampled_from(POST_OUTCOMES), nen=st.sampled_from(["success", "failed"]))
    def submit_run(self, i: int, outcome: str, nen: str) -> None:
        """One execution of submit_run with nothing in between: claim, POST, bind."""
        ex = pick(stage_execs(self.w, "submit", "new"), i)
        self.w.submit_claim(ex)
        if ex.stage == "claimed":
            self.w.submit_post(ex, outcome, nen)
        if ex.stage == "accepted":
            self.w.submit_bind(ex)

    @_has("submit", "new")
    @rule(i=N)
    def submit_claim(self, i: int) -> None:
        self.w.submit_claim(pick(stage_execs(self.w, "submit", "new"), i))

    @_has("submit", "claimed")
    @rule(i=N, outcome=st.sampled_from(POST_OUTCOMES), nen=st.sampled_from(["success", "failed"]))
    def submit_post(self, i: int, outcome: str, nen: str) -> None:
        self.w.submit_post(pick(stage_execs(self.w, "submit", "claimed"), i), outcome, nen)

    @_has("submit", "claimed")
    @rule(i=N)
    def submit_unsent(self, i: int) -> None:
        self.w.submit_unsent(pick(stage_execs(self.w, "submit", "claimed"), i))

    @_has("submit", "accepted")
    @rule(i=N)
    def submit_bind(self, i: int) -> None:
        self.w.submit_bind(pick(stage_execs(self.w, "submit", "accepted"), i))

    # -- any execution ------------------------------------------------------------------------------
    @precondition(lambda self: bool(self.w.execs))
    @rule(i=N, redeliver=st.booleans())
    def die(self, i: int, redeliver: bool) -> None:
        """A worker dies (its message comes back with late acks) or a task just ends."""
        self.w.end_exec(pick(self.w.execs, i), redeliver=redeliver)

    @precondition(lambda self: bool(self.w.execs))
    @rule(i=N)
    def redelivered_beside(self, i: int) -> None:
        """A broker reconnect redelivers a message whose execution is still running."""
        ex = pick(self.w.execs, i)
        if ex.redeliverable:  # a receiver's dispatch has no message
            self.w.add_exec(ex.kind, ex.holder)

    # -- Nen ------------------------------------------------------------------------------------------
    @precondition(lambda self: any(r.progress < 2 for r in self.w.nen.values()))
    @rule(i=N)
    def nen_progress(self, i: int) -> None:
        self.w.nen_progress(i)

    @precondition(lambda self: any(r.progress < 2 for r in self.w.nen.values()))
    @rule(i=N, path=PATHS)
    def nen_says(self, i: int, path: str) -> None:
        """Nen moves a run forward and its webhook comes at once."""
        self.w.nen_progress(i)
        self.w.deliver(-1, path)

    @precondition(lambda self: bool(self.w.mailbox))
    @rule(i=N, path=PATHS)
    def deliver(self, i: int, path: str) -> None:
        self.w.deliver(i, path)

    @precondition(lambda self: bool(self.w.applies))
    @rule(i=N)
    def apply_later(self, i: int) -> None:
        self.w.apply_later(i)

    # -- complete_run ---------------------------------------------------------------------------------
    @_has("complete", "new")
    @rule(i=N)
    def complete_run(self, i: int) -> None:
        """One execution of complete_run with nothing in between: claim, publish, finish."""
        ex = pick(stage_execs(self.w, "complete", "new"), i)
        self.w.complete_claim(ex)
        if ex.stage == "claimed":
            self.w.complete_dispatch(ex)
        if ex.stage == "dispatched":
            self.w.complete_finish(ex)

    @_has("complete", "new")
    @rule(i=N)
    def complete_claim(self, i: int) -> None:
        self.w.complete_claim(pick(stage_execs(self.w, "complete", "new"), i))

    @_has("complete", "claimed")
    @rule(i=N)
    def complete_dispatch(self, i: int) -> None:
        self.w.complete_dispatch(pick(stage_execs(self.w, "complete", "claimed"), i))

    @_has("complete", "claimed")
    @rule(i=N)
    def complete_release(self, i: int) -> None:
        self.w.complete_release(pick(stage_execs(self.w, "complete", "claimed"), i))

    @_has("complete", "dispatched")
    @rule(i=N)
    def complete_finish(self, i: int) -> None:
        self.w.complete_finish(pick(stage_execs(self.w, "complete", "dispatched"), i))

    # -- the sweep, the operator, time and Redis ----------------------------------------------------
    @rule()
    def sweep_read(self) -> None:
        self.w.sweep_read()

    @rule()
    def sweep(self) -> None:
        """A sweep that acts on what it just read."""
        self.w.sweep_read()
        self.w.sweep_act(-1)

    @precondition(lambda self: bool(self.w.sweeps))
    @rule(i=N)
    def sweep_act(self, i: int) -> None:
        self.w.sweep_act(i)

    @precondition(lambda self: self.w.status in ("rejected", "submit_failed", "unknown"))
    @rule(force=st.booleans())
    def redrive(self, force: bool) -> None:
        self.w.redrive(force)

    @rule(ticks=st.sampled_from(TICKS))
    def lapse(self, ticks: float) -> None:
        self.w.lapse(ticks)

    @rule()
    def snapshot(self) -> None:
        self.w.snapshot()

    @precondition(lambda self: bool(self.w.snapshots))
    @rule(i=N)
    def rollback(self, i: int) -> None:
        self.w.rollback(i)

    @invariant()
    def exactly_once(self) -> None:
        self.w.step += 1
        self.w.check()


STATS: dict[str, int] = {}
RunModel.TestCase.settings = settings(
    PROFILES[PROFILE],
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no explain: it traces every line
)


@pytest.mark.integration
@pytest.mark.timeout(3600 if PROFILE == "soak" else 600)
def test_exactly_once_against_the_model() -> None:
    started = time.monotonic()
    RunModel.TestCase("runTest").runTest()
    print(f"model ({PROFILE}): {time.monotonic() - started:.1f}s, {dict(sorted(STATS.items()))}")
