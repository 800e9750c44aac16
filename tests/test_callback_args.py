"""Callbacks whose arguments do not fit their task (issue 17, item 4): refused by start_run when
the task is known in the calling process; in the workers, a few attempts with backoff, then the
dead-letter list (never a retry every second until the record expires)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import httpx
import pytest
from celery import signature
from click.testing import CliRunner

from nen_celery import InvalidCallback, InvalidParams, get_run, start_run
from nen_celery.domain.signing import webhook_signature
from nen_celery.lifecycle import deadletter as deadletter_module
from nen_celery.lifecycle.callback_args import check_callback_args
from nen_celery.lifecycle.submit import enqueue_submit
from nen_celery.ops.cli import main
from nen_celery.runtime.context import get_context
from nen_celery.runtime.metrics import REGISTRY
from nen_celery.worker import app
from tests.callbacks import calls, record
from tests.conftest import SIM_WEBHOOK_SECRET, Stack, env
from tests.helpers import snapshot, wait_for
from tests.observers import Recorder

pytestmark = pytest.mark.integration

WF = "12345678-1234-1234-1234-123456789abc"


@app.task(name="tests.cbargs.takes_one_more", bind=True)
def takes_one_more(self: Any, run: dict[str, Any], extra: int) -> None:
    record(run, tag=f"extra={extra}")


@app.task(name="tests.cbargs.takes_run_only")
def takes_run_only(run: dict[str, Any]) -> None:
    record(run, tag="run-only")


@app.task(name="tests.cbargs.untyped", typing=False)
def untyped(run: dict[str, Any]) -> None:
    record(run, tag="untyped")


# -- start_run ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "sig", "says"),
    [
        ("on_complete", record.s("a", "b"), "positional"),  # run + 2 > (run, tag)
        ("on_failure", record.s(nope=1), "nope"),
        ("on_complete", record.si(), "run"),  # immutable: no run prepended, `run` missing
        ("on_failure", takes_one_more.s(), "extra"),
    ],
    ids=["too many args", "unknown keyword", "immutable without the run", "missing arg"],
)
def test_start_run_refuses_a_callback_that_does_not_fit(
    stack: Stack, label: str, sig: Any, says: str
) -> None:
    stack.counter.wait_idle()
    before_keys = snapshot(stack.redis, "*")
    published = sum(stack.counter.published.values())
    before_posts = stack.sim.stats()["posts"]
    with pytest.raises(InvalidCallback) as caught:
        start_run(WF, {"A": "b"}, **{label: sig}, run_id=f"cbargs-{uuid.uuid4()}")
    assert isinstance(caught.value, InvalidParams) and isinstance(caught.value, ValueError)
    (field, problem), *_ = caught.value.errors
    assert field == label and sig["task"] in problem and says in problem
    assert snapshot(stack.redis, "*") == before_keys
    assert sum(stack.counter.published.values()) == published
    assert stack.sim.stats()["posts"] == before_posts


def test_callbacks_that_fit_or_cannot_be_checked_pass() -> None:
    fits = [
        record.s(),
        record.s("tag"),
        record.s(tag="t"),
        record.si({"run_id": "r"}),
        takes_one_more.s(1),
        takes_run_only.s(),
        untyped.s(1, 2, 3),  # typing=False: Celery does not check it either
        signature("tests.cbargs.only_in_the_workers", args=(1, 2, 3)),  # known only by name
    ]
    for sig in fits:
        check_callback_args("on_complete", dict(sig))


# -- in the workers ------------------------------------------------------------------------------


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletter_module, "ARGUMENT_BACKOFF", 0.05)


def dead_letter(run_id: str) -> dict[str, Any] | None:
    return next((e for e in get_context().store.dead_letters(1000) if e["run_id"] == run_id), None)


def dead_lettered_count() -> float:
    return REGISTRY.get_sample_value("nen_callbacks_dead_lettered_total", {"reason": "arguments"}) or 0.0


def assert_dead_lettered(stack: Stack, run_id: str, task: str, before_metric: float, caplog: Any) -> None:
    entry = wait_for(lambda: dead_letter(run_id), 30, f"the dead-letter entry of {run_id}")
    stack.counter.wait_idle()  # endless retries would never let the worker go idle
    attempts = deadletter_module.ARGUMENT_ATTEMPTS
    assert entry["attempts"] == attempts and entry["callback"] == "on_complete"
    assert entry["status"] == "success" and entry["task"] == task and task in entry["reason"]
    assert entry["kind"] == "arguments" and entry["at"] <= time.time()
    store = get_context().store
    raw = store.raw(run_id)
    assert raw["completion"] == "sent" and raw["callback_task_id"] == ""  # marked done, nothing sent
    assert int(raw["callback_failures:0"]) == attempts  # counted on the record: no attempt after
    assert run_id not in store.timers()  # the sweep will not dispatch it again
    assert calls(run_id) == []
    assert dead_lettered_count() == before_metric + 1
    errors = [
        r
        for r in caplog.records
        if r.name == "nen_celery.lifecycle.deadletter" and r.levelno == logging.ERROR
    ]
    assert [r for r in errors if run_id in r.getMessage()]
    run = get_run(run_id)
    assert run is not None and run.status == "success"
    result = CliRunner().invoke(main, ["deadletter", "list", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    assert run_id in {e["run_id"] for e in json.loads(result.output)}
    result = CliRunner().invoke(main, ["deadletter", "list"], catch_exceptions=False)
    assert result.exit_code == 0 and "run_id" in result.output


@pytest.mark.usefixtures("fast_backoff")
@pytest.mark.parametrize("options", [{}, {"expires": 3600}], ids=["direct publish", "apply_async"])
def test_a_record_whose_callback_does_not_fit_is_dead_lettered(
    stack: Stack, caplog: pytest.LogCaptureFixture, options: dict[str, Any], heard: Recorder
) -> None:
    """A record whose signature was never checked (written by an older version, or a task known
    only in the workers): the worker tries a bounded number of times, then dead-letters it."""
    caplog.set_level(logging.WARNING)
    stack.counter.wait_idle()
    # the direct publish is opt-in (NEN_DIRECT_PUBLISH); with options a callback takes apply_async
    with env(NEN_DIRECT_PUBLISH="true" if not options else None):
        before = dead_lettered_count()
        run_id = f"cbargs-{uuid.uuid4()}"
        bad = dict(record.s("a", "b").set(**options))  # (run, "a", "b") for record(run, tag)
        assert get_context().store.create(run_id, WF, {"A": "b"}, None, bad, None)
        enqueue_submit(run_id, WF)  # the hinted webhook dispatches the callback (ingest_webhook)
        assert_dead_lettered(stack, run_id, "tests.record", before, caplog)
    assert heard.of("callback_dead_lettered") == [(run_id, "arguments")]  # an observer hears it too
    assert not [e for e in heard.of("run_completed") if e[0] == run_id]  # no callback went out


@pytest.mark.usefixtures("fast_backoff")
def test_a_task_changed_after_start_run_is_dead_lettered(
    quiet_sim: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start_run checked the callback against the task as it was; the workers then load a
    version of the task with another signature (a deploy): complete_run's attempts are bounded."""
    stack = quiet_sim
    caplog.set_level(logging.WARNING)
    before = dead_lettered_count()
    handle = start_run(WF, {"A": "b"}, on_complete=takes_one_more.s(7))
    run = wait_for(lambda: (r := get_run(handle.run_id)) and r.message_id and r, 20, "the binding")
    changed = app.tasks[takes_run_only.name]  # the registered task (a module's name is a proxy)
    monkeypatch.setitem(app.tasks, takes_one_more.name, changed)  # now takes (run) only
    body = json.dumps(
        {
            "workflow_id": WF,
            "message_id": run.message_id,
            "status": "success",
            "expires_at": int(time.time()) + 60,
        }
    ).encode()
    headers = {
        "X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body),
        "content-type": "application/json",
    }
    assert httpx.post(stack.webhook_url, content=body, headers=headers, timeout=10).status_code == 200
    assert_dead_lettered(stack, handle.run_id, takes_one_more.name, before, caplog)
