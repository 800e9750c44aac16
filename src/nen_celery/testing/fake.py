"""``FakeNen``: what a test holds through the ``fake_nen`` fixture. It scripts the session's fake
Nen for this test (outcomes, faults), and waits for what your app's workers do with a run: its end,
its callback, quiet.

Scripting goes through the simulator's own control API (``/_sim/config``'s validation, scripted
outcomes), so a bad value fails at once, naming the key. Every script is undone before the next test.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from nen_celery.domain.status import is_terminal
from nen_celery.lifecycle.api import RunHandle, get_run
from nen_celery.simulator.control import InvalidConfig, ScriptedOutcome, parse_config_update
from nen_celery.testing.recorder import CallbackCall
from nen_celery.testing.waits import WaitTimeout, wait_until

if TYPE_CHECKING:
    from nen_celery.domain.models import Run
    from nen_celery.testing.stack import NenStack

RunRef = RunHandle | str
TIMEOUT = 10.0


def _run_id(run: RunRef) -> str:
    return run.run_id if isinstance(run, RunHandle) else run


def _task_name(task: Any) -> str | None:
    if task is None or isinstance(task, str):
        return task
    return str(task.name)


class FakeNen:
    """The fake Nen of one test, and the waits and asserts on the runs it serves."""

    def __init__(self, stack: NenStack) -> None:
        self.stack = stack
        self.simulator = stack.simulator
        self.state = stack.simulator.state

    @property
    def url(self) -> str:
        return self.simulator.url

    # -- scripting -----------------------------------------------------------------------------

    def configure(self, **values: Any) -> None:
        """Any ``/_sim/config`` key (docs/operations.md lists them); validated, all or nothing."""
        try:
            parsed = parse_config_update(values)
        except InvalidConfig as exc:
            raise ValueError(str(exc)) from None
        for key, value in parsed.items():
            setattr(self.state.config, key, value)
        if "seed" in parsed:
            self.state.reseed()

    def succeed(self, workflow_id: str, result: Any = None) -> None:
        """Runs of ``workflow_id`` end ``success``; ``result`` is the body's ``result`` (files, ...)."""
        self.state.set_outcome(workflow_id, ScriptedOutcome("success", result=result))

    def fail(self, workflow_id: str, error: Any = None) -> None:
        """Runs of ``workflow_id`` end ``failed``; ``error`` is the body's ``error`` object."""
        self.state.set_outcome(workflow_id, ScriptedOutcome("failed", error=error))

    def reject(
        self, status: int = 422, *, error: str | None = None, message: str | None = None, times: int = 1
    ) -> None:
        """The next ``times`` POST /runs get ``status`` in Nen's error shape; no run is created.
        A 4xx ends the run ``rejected`` (``on_failure``); 429 and 503 are retried, like Nen's."""
        planned: dict[str, Any] = {"status": status}
        planned.update({k: v for k, v in (("error", error), ("message", message)) if v is not None})
        self.configure(post_errors=[*self._planned_errors(), *[planned] * times])

    def _planned_errors(self) -> list[dict[str, Any]]:
        from nen_celery.simulator.control import planned_error_to_json

        return [planned_error_to_json(planned) for planned in self.state.config.post_errors]

    def error_after_create(self, status: int = 504, *, times: int = 1) -> None:
        """Nen creates the run, then a gateway answers ``status`` (HTML): the run's fate is unknown
        to nen-celery until Nen's webhooks come, and it is not sent twice."""
        self.configure(error_after_accept=[*self.state.config.error_after_accept, *[status] * times])

    def delay(
        self,
        *,
        processing: float | None = None,
        terminal: float | None = None,
        webhooks: float | None = None,
        answer: float | None = None,
    ) -> None:
        """Seconds until ``processing``, from there to the end, before each webhook, before the 202."""
        values = {"processing_delay": processing, "terminal_delay": terminal}
        values.update({"webhook_delay": webhooks, "post_latency": answer})
        self.configure(**{key: value for key, value in values.items() if value is not None})

    def duplicate_webhooks(self, copies: int = 1) -> None:
        """Every webhook comes ``1 + copies`` times, concurrently."""
        self.configure(webhook_duplicates=copies)

    def reorder_webhooks(self) -> None:
        """The terminal webhook comes first, ``processing`` after it."""
        self.configure(webhook_reorder=True)

    def drop_webhooks(self, *statuses: str) -> None:
        """These webhooks (default: all) never come; the run ends through the reconcile sweep,
        which polls Nen: use the ``nen_beat`` fixture too."""
        self.configure(webhook_drop=list(statuses or ("processing", "success", "failed")))

    def never_finish(self, *workflow_ids: str) -> None:
        """Runs (of these workflows; default all) stay ``processing`` forever."""
        self.configure(never_terminal=list(workflow_ids) if workflow_ids else True)

    def stats(self) -> dict[str, Any]:
        """The simulator's counters (``GET /_sim/stats``): posts, accepted, deliveries, ..."""
        return self.simulator.stats()

    # -- waiting -------------------------------------------------------------------------------

    def wait_for_run(self, run: RunRef, timeout: float = TIMEOUT) -> Run:
        """The run once it has ended (success, failed, rejected, submit_failed)."""
        run_id = _run_id(run)

        def ended() -> Run | None:
            found = get_run(run_id)
            return found if found is not None and is_terminal(found.status) else None

        return wait_until(ended, timeout, f"run {run_id} to end", seen=lambda: _status(run_id))

    def callbacks(self, run: RunRef) -> list[CallbackCall]:
        """Every execution so far of a callback of ``run`` (retries included, as state RETRY)."""
        return self.stack.recorder.calls(_run_id(run))

    def wait_for_callback(self, run: RunRef, task: Any = None, timeout: float = TIMEOUT) -> CallbackCall:
        """The first execution of a callback of ``run`` (of ``task``: a task or its name) that ended."""
        run_id, name = _run_id(run), _task_name(task)

        def first() -> CallbackCall | None:
            calls = self.callbacks(run_id)
            return next((call for call in calls if call.final and name in (None, call.task)), None)

        what = f"a callback{f' {name}' if name else ''} of run {run_id}"
        return wait_until(first, timeout, what, seen=lambda: _status(run_id))

    def settle(self, timeout: float = TIMEOUT) -> None:
        """Until nothing is left to happen: the fake Nen has nothing to send, and every task
        published in the session (by any process) has run, twice in a row."""
        recorder, quiet_before = self.stack.recorder, [False]

        def quiet() -> bool:
            published, ran = recorder.counts()
            now = self.state.in_flight() == 0 and published <= ran
            settled, quiet_before[0] = now and quiet_before[0], now
            return settled

        def seen() -> str:
            published, ran = recorder.counts()
            return f"{published} tasks published, {ran} run, fake Nen busy with {self.state.in_flight()}"

        wait_until(quiet, timeout, "the workers and the fake Nen to be idle", seen=seen)

    def assert_callback_once(
        self, run: RunRef, task: Any = None, *, status: str | None = None, timeout: float = TIMEOUT
    ) -> CallbackCall:
        """Wait for the run's callback, let everything settle, then assert that exactly one
        callback ran for the run, that it is ``task``, that it returned (did not raise) and, if
        given, that the run it got has ``status``. Returns that call (run, args, result)."""
        self.wait_for_callback(run, None, timeout)
        self.settle(timeout)
        finals = [call for call in self.callbacks(run) if call.final]
        summary = ", ".join(f"{call.task} ({call.state})" for call in finals)
        assert len(finals) == 1, f"expected one callback for run {_run_id(run)}, got {len(finals)}: {summary}"
        call, name = finals[0], _task_name(task)
        assert name in (None, call.task), f"the callback was {call.task}, not {name}"
        raised = f"the callback {call.task} raised {call.error}\n{call.traceback or ''}"
        assert call.state == "SUCCESS", raised
        assert status in (None, call.run["status"]), f"the run ended {call.run['status']!r}, not {status!r}"
        return call

    # -- between tests -------------------------------------------------------------------------

    def reset(self) -> None:
        """A fresh fake Nen: no runs, no counters, no scripted outcome or fault."""
        self.simulator.reset()

    def finish(self) -> None:
        """After a test: let its runs play out (best effort), so the next test starts clean."""
        # a never-ending run or a long countdown: the next test's reset cuts it off
        with contextlib.suppress(WaitTimeout):
            self.settle()


def _status(run_id: str) -> str:
    found = get_run(run_id)
    return f"run status {found.status}" if found is not None else "no such run"


__all__ = ["CallbackCall", "FakeNen", "WaitTimeout"]
