"""The `nen-celery` command in-process (click's runner) against the real stack."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nen_celery import start_run
from nen_celery.cli import main
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
    with env(NEN_REDIS_URL="redis://user:hunter2pw@127.0.0.1:1/0", NEN_BROKER_URL="redis://:s3cretpw@127.0.0.1:1/0"):
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
