"""A new user's first hour (issue 26), item by item, on the suite's real stack: the CLI, the
webhook test delivery, misconfiguration refused, the simulator's one option set, and a guest
that stays quiet (results, sweep logs, callback reprs, the run record, redaction, Flask prefix).
The Django project made by `django-admin startproject` is tests/test_first_hour_django.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from celery import Celery
from click.testing import CliRunner

from nen_celery.checks.django_settings import CHECK_ID, missing_app_config
from nen_celery.checks.webhook_test import TEST_MESSAGE_PREFIX
from nen_celery.domain.models import Run
from nen_celery.errors import ConfigurationError
from nen_celery.lifecycle.callback_args import callback_argsrepr
from nen_celery.ops.cli import main
from nen_celery.runtime.context import get_context
from nen_celery.settings import Settings, install_overrides, reset_settings
from nen_celery.simulator.cli import build_parser
from tests.conftest import SIM_API_KEY, Stack, env
from tests.helpers import ROOT, free_port, stop_group, wait_for

WF = "12345678-1234-1234-1234-123456789abc"
BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


# -- 1. the CLI loads the app as `celery -A` does -----------------------------------------------


def test_a_flask_factory_is_loaded_and_its_config_read(tmp_path: Path) -> None:
    """`nen-celery -A flaskproj:create_app`: the factory builds the Flask app (its NEN_* config
    installed) and its Celery app (extensions["celery"], Flask's guide); config check reads both."""
    (tmp_path / "flaskproj.py").write_text(
        "from celery import Celery\nfrom flask import Flask\nimport nen_celery\n"
        "from nen_celery.web.flask import NenCelery\n\n"
        "def create_app():\n"
        "    app = Flask('flaskproj')\n"
        "    app.config.from_mapping(NEN_REDIS_URL=__import__('os').environ['PROJ_REDIS'],\n"
        "                            NEN_WEBHOOK_URL='http://127.0.0.1:9/nen/webhooks/nen')\n"
        "    NenCelery(app)\n"
        "    celery = Celery('flaskproj', broker=__import__('os').environ['PROJ_REDIS'])\n"
        "    app.extensions['celery'] = celery\n"
        "    nen_celery.init_celery(celery)\n"
        "    return app\n"
    )
    path = os.pathsep.join([str(tmp_path), str(ROOT / "src")])
    environ = {**os.environ, "PYTHONPATH": path, "PROJ_REDIS": os.environ["NEN_REDIS_URL"]}
    environ.update(NEN_REDIS_URL="redis://127.0.0.1:9/0", NEN_BROKER_URL="redis://127.0.0.1:9/0")
    done = subprocess.run(
        [str(BIN / "nen-celery"), "-A", "flaskproj:create_app", "config", "check", "--json"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["run store"]["level"] == "ok", done.stdout  # the Flask config's NEN_REDIS_URL
    assert checks["broker"]["level"] == "ok" and "Celery app 'flaskproj'" in checks["broker"]["detail"]
    assert checks["webhook"]["level"] == "error" and "did not answer" in checks["webhook"]["detail"]


def test_an_object_that_is_no_app_is_named() -> None:
    code, out = invoke("-A", "json:dumps", "status", "x")
    assert code == 2 and "'json:dumps'" in out


# -- 2. misconfiguration is an error --------------------------------------------------------------


@pytest.mark.parametrize("name", ["api_key", "signing_key", "webhook_secret", "secrets_key"])
def test_an_empty_secret_is_an_error_naming_it(name: str) -> None:
    for empty in ("", "  ", " , "):
        with pytest.raises(ValueError, match=f"NEN_{name.upper()} is set but empty"):
            Settings(**{name: empty})
    with pytest.raises(ConfigurationError, match=f"NEN_{name.upper()} is set but empty"):
        install_overrides({name: ""})


def test_config_check_names_an_empty_api_key() -> None:
    with env(NEN_API_KEY=""):
        code, out = invoke("config", "check", "--json")
    assert code == 2 and "NEN_API_KEY is set but empty" in out


def test_NEN_CELERY_without_the_app_config_is_E001() -> None:
    assert missing_app_config(False, []) is None
    assert missing_app_config(True, ["nen_celery.web.django.NenCeleryConfig"]) is None
    assert missing_app_config(True, ["nen_celery.web.django"]) is None
    problem = missing_app_config(True, ["django.contrib.admin"])
    assert problem is not None and problem.startswith(CHECK_ID) and "NenCeleryConfig" in problem


# -- 3. `nen-celery webhook test` ------------------------------------------------------------------


def test_webhook_test_sends_a_signed_delivery_that_changes_no_run(stack: Stack) -> None:
    before = get_context().redis.dbsize()
    code, out = invoke("webhook", "test", "--json")
    result = json.loads(out)
    assert code == 0 and result["level"] == "ok" and result["status_code"] == 202, out
    assert result["message_id"].startswith(TEST_MESSAGE_PREFIX) and '"parked"' in result["answer"]
    stack.counter.wait_idle()
    assert get_context().store.run_for_message(result["message_id"]) is None
    assert get_context().redis.dbsize() >= before  # parked at most, until the sweep drops it

    code, out = invoke("config", "check", "--json")
    webhook = [c for c in json.loads(out)["checks"] if c["name"] == "webhook"]
    assert webhook and webhook[0]["level"] == "ok" and " 202 " in webhook[0]["detail"]


def test_webhook_test_says_what_is_wrong(stack: Stack) -> None:
    """(A receiver with another secret, 401: tests/test_first_hour_django.py, another process.)"""
    with env(NEN_WEBHOOK_URL=stack.receiver_url + "/hooks/nen"):
        code, out = invoke("webhook", "test")
    assert code == 2 and "404" in out and "/webhooks/nen" in out
    with env(NEN_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/webhooks/nen"):
        code, out = invoke("webhook", "test")
    assert code == 2 and "did not answer" in out
    with env(NEN_WEBHOOK_URL=None):
        code, out = invoke("webhook", "test")
    assert code == 2 and "NEN_WEBHOOK_URL is not set" in out


# -- 4. the simulator: one option set, and it prints what an app needs ----------------------------


def test_nen_celery_simulate_has_the_simulators_options() -> None:
    code, out = invoke("simulate", "--help")
    flags = {flag for action in build_parser({})._actions for flag in action.option_strings}
    assert code == 0 and out.startswith("usage: nen-celery simulate")
    missing = [flag for flag in flags if flag not in out]
    assert missing == [] and "--webhook-drop-rate" in flags and "--post-error" in flags


def test_the_simulator_prints_its_url_and_keys() -> None:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NEN_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nen_celery.simulator", "--port", str(port), "--api-key", "k-42"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.decode().strip() for line in proc.stdout))
    reader.start()
    try:
        wait_for(
            lambda: "export NEN_WEBHOOK_SECRET=sim-webhook-secret" in lines, 30, "the simulator's settings"
        )
    finally:
        stop_group(proc)  # type: ignore[arg-type]
        reader.join(10)
    assert f"export NEN_API_URL=http://127.0.0.1:{port}" in lines
    assert "export NEN_API_KEY=k-42" in lines and "export NEN_SIGNING_KEY=sim-signing-key" in lines


# -- 5. a guest stays quiet -------------------------------------------------------------------------


def test_nens_tasks_store_no_result() -> None:
    from nen_celery.celery.install import register

    app = Celery("guest-results", broker="memory://", backend="cache+memory://")
    register(app)
    nen = {name: task for name, task in app.tasks.items() if name.startswith("nen_celery.")}
    assert len(nen) == 6 and all(task.ignore_result for task in nen.values())


def test_the_sweep_logs_at_debug_unless_it_acted(caplog: pytest.LogCaptureFixture) -> None:
    from nen_celery.worker import reconcile_runs

    with env(NEN_KEY_PREFIX=f"quiet{uuid.uuid4().hex[:8]}"):
        store = get_context().store
        run_id = str(uuid.uuid4())
        assert store.create(run_id, WF, {"A": "1"}, None, None, None)
        assert store.claim_submit(run_id, 30, "submit-1", "t1").verdict == "ok"  # a live submit
        store.set_timers({run_id: 0.0}, [])
        with caplog.at_level(logging.DEBUG, logger="nen_celery.lifecycle"):
            assert reconcile_runs.apply().get() == {"wait": 1}
        store.delete(run_id)
    sweeps = [r for r in caplog.records if r.getMessage().startswith("reconcile:")]
    assert [r.levelno for r in sweeps] == [logging.DEBUG]


def test_a_callbacks_argsrepr_shows_the_users_arguments() -> None:
    run = {"run_id": "r-1", "status": "success", "workflow_id": WF, "message_id": "m-1", "payload": "s3cr3t"}
    shown = callback_argsrepr({"task": "shop.order_done", "args": [42, "gold"]}, run)
    assert shown.endswith(", 42, 'gold')") and "'run_id': 'r-1'" in shown and "s3cr3t" not in shown
    assert callback_argsrepr({"task": "t", "args": [7], "immutable": True}, run) == "(7,)"


def test_get_run_is_the_documented_typed_record(stack: Stack) -> None:
    import nen_celery

    handle = nen_celery.start_run(WF, {"A": "1"})
    run = handle.wait(timeout=30)
    assert isinstance(run, Run) and isinstance(nen_celery.get_run(handle.run_id), Run)
    assert run.model_dump() == run.as_dict() == run.to_dict() == run.model_dump(mode="json")
    assert json.loads(json.dumps(run.as_dict()))["run_id"] == handle.run_id
    record = README.split("### The run record", 1)[1].split("\n## ", 1)[0]
    undocumented = [f.name for f in dataclasses.fields(Run) if f"`{f.name}`" not in record]
    assert undocumented == []


def test_redaction_works_from_import_and_redacts_once() -> None:
    from nen_celery.logs.redaction import redact

    reset_settings()  # nothing loaded: only what NEN_CELERY installed knows the key
    install_overrides({"API_KEY": "django-only-key-93d1"})
    try:
        assert redact("sent key django-only-key-93d1") == "sent key [REDACTED]"
    finally:
        install_overrides({})
    for line in (
        f"x-api-key: {SIM_API_KEY}",
        f"{{'x-api-key': '{SIM_API_KEY}'}}",
        f"authorization={SIM_API_KEY}",
    ):
        cleaned = redact(line)
        assert "[REDACTED]]" not in cleaned and SIM_API_KEY not in cleaned and "[REDACTED]" in cleaned


def test_the_flask_blueprint_sits_under_one_prefix() -> None:
    from flask import Flask

    from nen_celery.web.flask import NenCelery

    app = Flask("prefix")
    NenCelery(app)
    try:
        rules = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("nen_celery.")}
        assert rules == {"/nen/webhooks/nen", "/nen/healthz", "/nen/metrics"}
    finally:
        install_overrides({})


# -- 6. CLI output is text, never markup ------------------------------------------------------------


def test_cli_output_escapes_markup_from_nen_and_users() -> None:
    store = get_context().store
    run_id = f"markup-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": "[bold]x[/bold]"}, None, None, None)
    error = {"error": "bad_request", "message": "[/] [link=https://evil.example]click[/link] [red]"}
    store.apply(run_id, "rejected", source="test", error=error)
    try:
        code, out = invoke("status", run_id)
        assert code == 0 and "[/] [link=https://evil.example]click[/link] [red]" in re.sub(r"\s+", " ", out)
        code, out = invoke("runs", "list", "--status", "rejected", "--limit", "500")
        assert code == 0 and "rejected" in out
    finally:
        store.delete(run_id)
