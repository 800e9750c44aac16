"""Issue 17, item 1: an answer that does not prove "not created" never leads to a second POST.

The simulator creates the run, then answers as a gateway would (502/504/500 with an HTML body)
or cuts the connection. Each run must end with Nen's own messageId, one workflow, one POST and
one callback, resolved by Nen's own webhooks (the run-scoped URL); a run that may have started
is never redriven without force.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from nen_celery import MayHaveStarted, get_run, redrive_run
from nen_celery.ops.cli import main
from nen_celery.runtime.context import get_context
from tests.callbacks import calls
from tests.conftest import Stack, env
from tests.helpers import wait_for
from tests.observers import Recorder
from tests.test_lifecycle import posts_for
from tests.test_nen_faults import configure, one_callback, runs_created_for, sim, start
from tests.test_reconcile import FAST

pytestmark = [pytest.mark.integration, pytest.mark.faults]


__all__ = ["sim"]  # the fixture, imported for pytest


def nens_message_id(stack: Stack, run_id: str) -> str:
    (message_id,) = [m for m, r in stack.sim.stats()["runs"].items() if r["idempotency_key"] == run_id]
    return message_id


@pytest.mark.parametrize(
    "fault",
    [
        {"error_after_accept": [504]},
        {"error_after_accept": [502]},
        {"error_after_accept": [500]},
        {"drop_after_accept": 1},
    ],
    ids=["504", "502", "500", "connection-cut"],
)
def test_created_then_an_ambiguous_answer_one_workflow_one_callback(
    sim: Stack, fault: dict[str, Any]
) -> None:
    configure(sim, **fault)
    handle = start()
    run = one_callback(sim, handle.run_id)
    assert run["status"] == "success"
    assert posts_for(sim, handle.run_id) == 1  # never asked twice
    assert runs_created_for(sim, handle.run_id) == 1  # one workflow in Nen
    assert run["message_id"] == nens_message_id(sim, handle.run_id)  # bound by Nen's own word
    statuses = [h["status"] for h in run["history"]]
    assert statuses[:2] == ["queued", "unknown"] and statuses[-1] == "success"


def test_nens_own_busy_answers_are_retried_and_start_one_workflow(sim: Stack) -> None:
    configure(sim, post_errors=[{"status": 503}, {"status": 429, "retry_after": 0}])
    handle = start()
    run = one_callback(sim, handle.run_id)
    assert run["status"] == "success" and posts_for(sim, handle.run_id) == 3
    assert runs_created_for(sim, handle.run_id) == 1


def test_a_run_that_may_have_started_is_not_redriven_without_force(sim: Stack) -> None:
    configure(sim, error_after_accept=[504])
    with env(NEN_WEBHOOK_RUN_PARAM=""):  # no run hint: Nen's webhooks cannot resolve it
        handle = start()
        wait_for(lambda: (r := get_run(handle.run_id)) and r.status == "unknown", 20, "unknown")
        sim.counter.wait_idle()
        before = get_context().store.raw(handle.run_id)
        with pytest.raises(MayHaveStarted, match="may have started in Nen"):
            redrive_run(handle.run_id)
        result = CliRunner().invoke(main, ["runs", "redrive", handle.run_id])
        assert result.exit_code == 2 and "may have started in Nen" in result.output
        assert "--force" in result.output
        assert get_context().store.raw(handle.run_id) == before  # refused: nothing changed
        assert posts_for(sim, handle.run_id) == 1
        # forced: the same Idempotency-Key goes out again (a deduplicating Nen answers with the run)
        configure(sim, honour_idempotency_key=True)
        redrive_run(handle.run_id, force=True)
        wait_for(lambda: posts_for(sim, handle.run_id) == 2, 20, "the forced resend")
        assert runs_created_for(sim, handle.run_id) == 1


def test_nens_word_after_the_run_ended_may_have_started_is_recorded_without_a_second_callback(
    sim: Stack, beat: None, caplog: pytest.LogCaptureFixture, heard: Recorder
) -> None:
    """The POST's answer was cut, Nen's webhooks come only after NEN_UNKNOWN_TIMEOUT: the run
    ended submit_failed ("may have started in Nen", one on_failure); then Nen says success.
    Status and history show Nen's truth, logged at ERROR and counted; no second callback."""
    from nen_celery.runtime import metrics

    configure(sim, drop_after_accept=1, webhook_delay=2.0)
    late_before = metrics.LATE_WEBHOOKS.labels(status="success")._value.get()
    with env(**FAST, NEN_UNKNOWN_TIMEOUT="0.5"):
        handle = start()
        ended = wait_for(
            lambda: (r := get_run(handle.run_id)) and r.status == "submit_failed" and r, 20, "submit_failed"
        )
        assert ended.error is not None and "may have started in Nen" in ended.error["message"]
        run = wait_for(
            lambda: (r := get_run(handle.run_id)) and r.nen_status == "success" and r, 20, "late success"
        )
    assert run.status == "submit_failed"  # the run's end stays as recorded (issue 25, finding 6)
    sim.counter.wait_idle()
    assert [c["tag"] for c in calls(handle.run_id)] == ["failure"]  # the one callback, not again
    assert run.message_id == nens_message_id(sim, handle.run_id)
    sources = [(h["status"], h["source"]) for h in run.history]
    assert ("submit_failed", "reconcile:unknown_timeout") in sources
    assert sources[-1] == ("success", "webhook:late")
    assert run.completion == "sent"
    assert metrics.LATE_WEBHOOKS.labels(status="success")._value.get() == late_before + 1
    # an observer hears it too (and Nen's late processing webhook, counted under its own status)
    assert [e for e in heard.of("late_webhook") if e[1] == "success"] == [(handle.run_id, "success")]
    assert any(counts.get("expire_unknown") for (counts,) in heard.of("reconciled"))
    assert any(r.levelname == "ERROR" and "may have started in Nen" in r.getMessage() for r in caplog.records)
    assert posts_for(sim, handle.run_id) == 1 and runs_created_for(sim, handle.run_id) == 1
