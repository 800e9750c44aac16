"""The observer hook (nen_celery.observe): every lifecycle event goes once to the built-in
observers (the Prometheus metrics count what they counted before, the run ids reach the log
context) and to the observers a user added; a failing one never changes a run or an answer."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager

import httpx
import pytest

from nen_celery import Observer, add_observer, observe, remove_observer
from nen_celery.logs import runlog
from nen_celery.runtime.metrics import REGISTRY
from nen_celery.web.answers import (
    APPLIED,
    IGNORED,
    NOT_CONFIGURED,
    NOT_DURABLE,
    NOT_QUEUED,
    QUEUED,
    Answer,
    body_timeout,
    too_large,
)
from tests.callbacks import calls
from tests.conftest import Stack
from tests.observers import Raising, Recorder
from tests.test_lifecycle import post_webhook, start, wait_callbacks

WF = "12345678-1234-1234-1234-123456789abc"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def clean_log_context() -> Iterator[None]:
    runlog.clear()
    yield
    runlog.clear()


def test_the_hook_has_one_function_per_observer_event() -> None:
    """A new event is an Observer method, a hook function and a handler tuple, together."""
    methods = [n for n, _ in inspect.getmembers(Observer, inspect.isfunction) if not n.startswith("_")]
    assert sorted(observe.EVENTS) == sorted(methods)
    for event in observe.EVENTS:
        hook_params = list(inspect.signature(getattr(observe, event)).parameters)
        assert hook_params == list(inspect.signature(getattr(Observer, event)).parameters)[1:], event


def _every_event() -> None:
    observe.run_started("r1", WF)
    observe.run_accepted("r1", "m1")
    observe.submit_finished("r1", "accepted", 0.25)
    observe.run_completed("r1", "success", 0.5)
    observe.webhook_answered(200, "applied", False)
    observe.webhook_refused("bad_signature")
    observe.reconciled({"poll": 2})
    observe.callback_dead_lettered("r1", "arguments")
    observe.late_webhook("r1", "success")
    observe.process_exited(4242)
    observe.run_ids(run_id="r1", workflow_id=WF)
    with observe.run_scope(run_id="r1", message_id="m1"):
        pass


@pytest.mark.usefixtures("clean_log_context")
def test_an_added_observer_hears_each_event_with_its_values(heard: Recorder) -> None:
    _every_event()
    assert heard.heard == [
        ("run_started", "r1", WF),
        ("run_accepted", "r1", "m1"),
        ("submit_finished", "r1", "accepted", 0.25),
        ("run_completed", "r1", "success", 0.5),
        ("webhook_answered", 200, "applied", False),
        ("webhook_refused", "bad_signature"),
        ("reconciled", {"poll": 2}),
        ("callback_dead_lettered", "r1", "arguments"),
        ("late_webhook", "r1", "success"),
        ("process_exited", 4242),
        ("run_ids", "r1", None, WF),
        ("run_scope", "r1", "m1", None),
        ("run_scope_end", "r1", "m1", None),
    ]


@pytest.mark.usefixtures("clean_log_context")
def test_an_observer_of_only_run_ids_hears_the_scopes_too() -> None:
    class Ids(Observer):
        def __init__(self) -> None:
            self.ids: list[tuple[str | None, ...]] = []

        def run_ids(self, run_id: str | None, message_id: str | None, workflow_id: str | None) -> None:
            self.ids.append((run_id, message_id, workflow_id))

    ids = Ids()
    with observe.observing(ids):
        observe.run_ids(message_id="m1")
        with observe.run_scope(run_id="r2"):
            pass
    assert ids.ids == [(None, "m1", None), ("r2", None, None)]


# (answer, hint refused, the nen_webhooks result it counts under: operations.md's label set)
WEBHOOK_RESULTS = [
    (APPLIED, False, "applied"),
    (QUEUED, False, "queued"),
    (IGNORED, False, "ignored"),
    (Answer(200, {"status": "parked"}), False, "parked"),
    (Answer(202, {"status": "parked"}), False, "parked"),
    (QUEUED, True, "hint_refused"),
    (Answer(202, {"status": "parked"}), True, "hint_refused"),
    (NOT_DURABLE, True, "unavailable"),
    (NOT_QUEUED, False, "unavailable"),
    (NOT_CONFIGURED, False, "not_configured"),
    (too_large(10), False, "body_too_large"),
    (body_timeout(6), False, "body_timeout"),
    (Answer(401, {"error": "invalid_signature", "message": "x"}), False, "invalid_signature"),
    (Answer(503, {}), False, "503"),
]


@pytest.mark.parametrize(("answer", "hint_refused", "result"), WEBHOOK_RESULTS)
def test_the_builtin_metrics_count_each_answer_under_its_result(
    answer: Answer, hint_refused: bool, result: str
) -> None:
    before = sample("nen_webhooks_total", result=result)
    observe.webhook_answered(answer.status_code, answer.word, hint_refused)
    assert sample("nen_webhooks_total", result=result) == before + 1


@pytest.mark.usefixtures("clean_log_context")
def test_the_builtin_observers_count_and_bind_each_event() -> None:
    expected = [  # (metric, labels, what the events below add to it)
        ("nen_runs_started_total", {}, 1),
        ("nen_runs_accepted_total", {}, 1),
        ("nen_submit_seconds_count", {"outcome": "accepted"}, 1),
        ("nen_submit_seconds_sum", {"outcome": "accepted"}, 0.25),
        ("nen_runs_completed_total", {"status": "success"}, 2),
        ("nen_webhook_to_callback_seconds_count", {}, 1),
        ("nen_webhook_refusals_total", {"reason": "bad_signature"}, 1),
        ("nen_reconcile_actions_total", {"action": "poll"}, 2),
        ("nen_reconcile_actions_total", {"action": "locked"}, 0),
        ("nen_callbacks_dead_lettered_total", {"reason": "arguments"}, 1),
        ("nen_late_webhooks_total", {"status": "success"}, 1),
    ]
    before = [sample(n, **labels) for n, labels, _ in expected]
    _every_event()
    observe.reconciled({"locked": 1})  # a sweep that found the lock taken did nothing
    observe.run_completed("r2", "success", None)  # no webhook ended it: no latency
    added = [round(sample(n, **labels) - b, 6) for (n, labels, _), b in zip(expected, before, strict=True)]
    assert added == [n for *_, n in expected]
    assert runlog.current() == {"run_id": "r1", "workflow_id": WF}  # run_ids bound; the scope undone
    with observe.run_scope(message_id="m9"):
        assert runlog.current() == {"run_id": "r1", "workflow_id": WF, "message_id": "m9"}
    assert runlog.current() == {"run_id": "r1", "workflow_id": WF}


def _failures(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in caplog.records:
        if r.name == "nen_celery.observe" and r.levelno == logging.ERROR:
            event = r.args[1] if isinstance(r.args, tuple) else "?"
            out[str(event)] = out.get(str(event), 0) + 1
    return out


@pytest.mark.usefixtures("clean_log_context")
def test_a_raising_observer_is_logged_once_per_event_and_the_rest_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="nen_celery.observe")
    raising, after = Raising(), Recorder()  # the recorder comes after the raising one
    with observe.observing(raising), observe.observing(after):
        before = sample("nen_runs_started_total")
        for _ in range(3):
            _every_event()
        with pytest.raises(KeyError, match="the block's own"), observe.run_scope(run_id="r3"):
            raise KeyError("the block's own")
    assert sample("nen_runs_started_total") == before + 3  # the built-in counted every one
    assert len(after.of("run_started")) == 3 and len(after.of("run_scope")) == 4
    assert _failures(caplog) == dict.fromkeys(observe.EVENTS, 1)
    assert "observer boom on reconciled" in caplog.text  # with its traceback
    assert runlog.current() == {"run_id": "r1", "workflow_id": WF}


@pytest.mark.usefixtures("clean_log_context")
def test_a_scope_that_fails_on_leaving_neither_breaks_nor_hides_the_block(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class LeavesBadly(Observer):
        def run_scope(
            self, run_id: str | None, message_id: str | None, workflow_id: str | None
        ) -> AbstractContextManager[None]:
            return self._scope()

        @contextlib.contextmanager
        def _scope(self) -> Iterator[None]:
            yield
            raise RuntimeError("leaving")

    with observe.observing(LeavesBadly()), pytest.raises(ValueError, match="mine"), observe.run_scope():
        raise ValueError("mine")  # it passes the block's error through: not its failure
    assert _failures(caplog) == {}
    with observe.observing(LeavesBadly()):
        with observe.run_scope(run_id="r4"):
            assert runlog.current() == {"run_id": "r4"}  # the built-in scope is still there
        assert runlog.current() == {}
    assert _failures(caplog) == {"run_scope": 1}


def test_adding_is_once_removing_stops_and_only_observers_are_taken() -> None:
    recorder = Recorder()
    add_observer(recorder)
    add_observer(recorder)
    try:
        assert observe.observers() == (recorder,)
        observe.late_webhook("r6", "failed")
        assert recorder.of("late_webhook") == [("r6", "failed")]  # heard once, not twice
    finally:
        remove_observer(recorder)
    remove_observer(recorder)  # not added: nothing
    observe.late_webhook("r6", "failed")
    assert observe.observers() == () and len(recorder.of("late_webhook")) == 1
    with pytest.raises(TypeError, match=r"nen_celery\.Observer"):
        add_observer(object())  # type: ignore[arg-type]


def test_importing_adds_no_observer_and_loads_no_hook() -> None:
    """A guest in the user's process: ``import nen_celery`` loads no hook; the hook loaded has
    the built-in observers only, until the user adds one."""
    code = (
        "import sys, json, nen_celery\n"
        "loaded = [m for m in ('nen_celery.observe', 'prometheus_client') if m in sys.modules]\n"
        "from nen_celery.observe import hook\n"
        "owners = {type(h.__self__).__name__ for e in hook.EVENTS for h in getattr(hook._on, e)}\n"
        "print(json.dumps([loaded, len(hook.observers()), sorted(owners)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == [[], 0, ["PrometheusMetrics", "RunLogContext"]]


@pytest.mark.integration
def test_an_observer_hears_a_real_run_from_start_to_callback(stack: Stack, heard: Recorder) -> None:
    """start_run, submit_run (a worker thread), the receiver applying both webhooks and
    dispatching the callback, a forged delivery, a worker process shutting down."""
    from celery.signals import worker_process_shutdown

    handle = start()
    run = handle.wait(timeout=20)
    assert run.status == "success"
    wait_callbacks(handle.run_id)
    forged = httpx.post(
        stack.webhook_url,
        content=b'{"message_id": "m", "status": "success"}',
        headers={"content-type": "application/json", "x-hmac-signature": "sha256=" + "0" * 64},
    )
    assert forged.status_code == 401
    worker_process_shutdown.send(sender=None, pid=4243, exitcode=0)  # nen's handler, on init_celery
    stack.counter.wait_idle()
    rid, mid = handle.run_id, run.message_id
    assert heard.of("run_started") == [(rid, WF)]
    assert heard.of("run_accepted") == [(rid, mid)]
    ((outcome, seconds),) = [e[1:] for e in heard.of("submit_finished") if e[0] == rid]
    assert outcome == "accepted" and seconds > 0
    ((status, latency),) = [e[1:] for e in heard.of("run_completed") if e[0] == rid]
    assert status == "success" and latency is not None and latency >= 0
    # the receiver's two deliveries: each in a scope with the run's ids, each answered "applied"
    assert [s for s in heard.of("run_scope") if s[:2] == (rid, mid)] == [(rid, mid, WF)] * 2
    assert heard.of("webhook_answered").count((200, "applied", False)) >= 2
    assert (401, "invalid_signature", False) in heard.of("webhook_answered")
    assert ("bad_signature",) in heard.of("webhook_refused")
    assert (rid, mid, WF) in heard.of("run_ids")  # the callback task's ids
    assert (None, None, WF) in heard.of("run_ids")  # submit_run learned the workflow
    assert (4243,) in heard.of("process_exited")


@pytest.mark.integration
def test_a_raising_observer_changes_no_run_and_no_answer(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="nen_celery.observe")
    with observe.observing(Raising()):
        handles = [start(), start()]
        runs = [h.wait(timeout=20) for h in handles]
        for h in handles:
            wait_callbacks(h.run_id)
        # a duplicate of the terminal webhook, by messageId: taken in and queued, as always
        duplicate = post_webhook(stack, {"message_id": runs[0].message_id, "status": "success"})
        forged = httpx.post(
            stack.webhook_url,
            content=b"{}",
            headers={"content-type": "application/json", "x-hmac-signature": "sha256=00"},
        )
        stack.counter.wait_idle()
    assert [r.status for r in runs] == ["success", "success"]
    assert [len(calls(h.run_id)) for h in handles] == [1, 1]  # one callback each, no more
    assert (duplicate.status_code, duplicate.json()) == (200, {"status": "queued"})
    assert forged.status_code == 401
    failures = _failures(caplog)
    # each event failed more than once (two runs, six deliveries), each logged once
    for event in ("run_started", "run_accepted", "submit_finished", "run_completed", "webhook_answered"):
        assert failures.get(event) == 1, failures
    assert failures.get("run_scope") == 1 and failures.get("run_ids") == 1, failures
