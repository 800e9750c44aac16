"""The `nen-celery` command in-process (click's runner) against the real stack."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from nen_celery import start_run
from nen_celery.ops.cli import main
from nen_celery.runtime.context import get_context
from tests.callbacks import calls, record
from tests.conftest import SIM_API_KEY, Stack, env
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

WF = "12345678-1234-1234-1234-123456789abc"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_runs_watch_json_prints_one_array_per_refresh(stack: Stack) -> None:
    handle = start_run(WF, {"A": "1"}, on_complete=record.s(tag="c"))
    wait_for(lambda: len(calls(handle.run_id)) == 1, 20, "callback")
    code, out = invoke("runs", "watch", "--json", "--count", "3", "--interval", "0.05", "--limit", "5")
    assert code == 0
    frames = [json.loads(line) for line in out.splitlines()]
    assert len(frames) == 3
    assert all(isinstance(f, list) and len(f) <= 5 for f in frames)
    assert handle.run_id in {r["run_id"] for r in frames[-1]}


def test_runs_watch_table_and_bad_interval(stack: Stack) -> None:
    code, out = invoke("runs", "watch", "--count", "2", "--interval", "0.05")
    assert code == 0 and "run_id" in out and "status" in out
    code, out = invoke("runs", "watch", "--interval", "0")
    assert code == 2 and "--interval" in out


def test_config_check_passes_against_the_running_stack(stack: Stack) -> None:
    code, out = invoke("config", "check", "--json")
    result = json.loads(out)
    levels = {c["name"]: c["level"] for c in result["checks"] if c["level"] == "error"}
    assert code == 0 and result["ok"] is True, levels
    names = {c["name"] for c in result["checks"]}
    assert {"settings", "run store", "broker", "nen api"} <= names
    assert SIM_API_KEY not in out


def test_config_check_names_what_is_wrong_without_printing_secrets(stack: Stack) -> None:
    with env(
        NEN_REDIS_URL="redis://user:hunter2pw@127.0.0.1:1/0", NEN_BROKER_URL="redis://:s3cretpw@127.0.0.1:1/0"
    ):
        code, out = invoke("config", "check", "--json")
    result = json.loads(out)
    errors = {c["name"]: c["detail"] for c in result["checks"] if c["level"] == "error"}
    assert code == 2 and result["ok"] is False
    assert "NEN_REDIS_URL" in errors["run store"] and "NEN_BROKER_URL" in errors["broker"]
    assert "hunter2pw" not in out and "s3cretpw" not in out and SIM_API_KEY not in out

    with env(NEN_VISIBILITY_TIMEOUT="-5"):
        code, out = invoke("config", "check")
    assert code == 2 and "visibility_timeout" in out.lower()


def test_metrics_show_prints_the_exposition(stack: Stack) -> None:
    code, out = invoke("metrics", "show")
    assert code == 0
    assert "nen_runs_started_total" in out and "nen_store_up 1.0" in out


def test_metrics_serve_needs_the_multiprocess_dir(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    code, out = invoke("metrics", "serve")
    assert code == 2 and "PROMETHEUS_MULTIPROC_DIR" in out


def test_an_app_that_cannot_be_loaded_is_named_and_nothing_is_started() -> None:
    from nen_celery.runtime import app as app_state

    result = CliRunner().invoke(main, ["-A", "no_such_module_xyz", "start", WF])
    assert result.exit_code == 2
    assert "cannot load the Celery app 'no_such_module_xyz'" in result.output
    assert app_state.installed() is None


def test_start_through_the_users_app(tmp_path: Any) -> None:
    """`nen-celery -A cliproj:app start ...` (a real command) publishes submit_run through the
    user's app: the message lands on their broker (a Redis DB of its own here), not on
    NEN_BROKER_URL."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import redis

    from tests.conftest import TEST_REDIS_URL

    base, _ = TEST_REDIS_URL.rsplit("/", 1)
    user_broker = redis.Redis.from_url(f"{base}/9")
    user_broker.flushdb()
    (tmp_path / "cliproj.py").write_text(
        f"from celery import Celery\napp = Celery('cliproj', broker={base + '/9'!r})\n"
    )
    nen_broker = redis.Redis.from_url(os.environ["NEN_BROKER_URL"])
    before = nen_broker.llen("nen.submit")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    cli = Path(sys.executable).parent / "nen-celery"
    try:
        done = subprocess.run(
            [str(cli), "-A", "cliproj:app", "start", WF, "--param", "A=1", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        run_id = json.loads(done.stdout)["run_id"]
        assert user_broker.llen("nen.submit") == 1
        assert nen_broker.llen("nen.submit") == before
        get_context().store.delete(run_id)  # no worker of cliproj's: no sweep may pick it up
    finally:
        user_broker.flushdb()
