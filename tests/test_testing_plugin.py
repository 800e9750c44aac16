"""The users' pytest plugin (nen_celery.testing, docs/testing.md), tested as a user meets it: a
throwaway project written from the doc's own snippets, its pytest run in a subprocess with this
interpreter, against a real Redis, the simulator, the receiver over HTTP and a real worker."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from nen_celery.simulator import SimulatorServer
from tests.conftest import sim_config
from tests.testing_plugin_support import (
    MODULES_TEST,
    ROOT,
    break_callbacks,
    doc_files,
    outcomes,
    run_pytest,
    user_env,
    write_project,
)

pytestmark = pytest.mark.integration

#: The doc's tests of the three outcomes the issue names, and of the other fault modes.
KEY_TESTS = (
    "test_order_is_confirmed",
    "test_order_fails_when_the_check_fails",
    "test_a_504_after_create_confirms_once",
)
FAULT_TESTS = (
    "test_order_fails_when_nen_refuses_it",
    "test_duplicated_reordered_webhooks_confirm_once",
    "test_lost_webhooks_are_made_up_for",
    "test_a_slow_run_still_ends",
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, doc_files())
    return tmp_path


def test_the_doc_shows_a_whole_project() -> None:
    files = doc_files()
    assert set(files) == {"proj/celery.py", "proj/tasks.py", "pytest.ini", "tests/test_orders.py"}
    assert "nen_celery.init_celery(app)" in files["proj/celery.py"]
    first = files["tests/test_orders.py"].split("\n\n\ndef test_order_fails")[0]
    assert len(first.strip().splitlines()) <= 16  # "your first test in about a dozen lines"


def test_the_users_tests_pass(project: Path) -> None:
    result = run_pytest(project)
    found = outcomes(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert {name: found.get(name) for name in KEY_TESTS + FAULT_TESTS} == dict.fromkeys(
        KEY_TESTS + FAULT_TESTS, "PASSED"
    )


def test_the_users_tests_fail_with_a_broken_callback(project: Path) -> None:
    tasks = project / "proj" / "tasks.py"
    tasks.write_text(break_callbacks(tasks.read_text()))
    result = run_pytest(project, *(f"--deselect=tests/test_orders.py::{name}" for name in FAULT_TESTS[1:]))
    found = outcomes(result.stdout)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert {name: found.get(name) for name in KEY_TESTS} == dict.fromkeys(KEY_TESTS, "FAILED")
    assert "raised RuntimeError: broken callback" in result.stdout


def test_the_users_tests_pass_with_a_worker_process(project: Path) -> None:
    result = run_pytest(project, "--nen-worker=process", "-k", " or ".join(KEY_TESTS))
    found = outcomes(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert {name: found.get(name) for name in KEY_TESTS} == dict.fromkeys(KEY_TESTS, "PASSED")


def test_a_missing_redis_is_named(project: Path) -> None:
    env = {**user_env(), "NEN_TESTING_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run_pytest(project, "-k", "test_order_is_confirmed", env=env)
    assert result.returncode == 1
    assert "no Redis answers at redis://127.0.0.1:1/0" in result.stdout


def _modules(root: Path, *args: str) -> set[str]:
    out = root / "modules.json"
    env = {**user_env(), "MODULES_OUT": str(out)}
    result = run_pytest(root, "-p", "no:celery", *args, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return set(json.loads(out.read_text()))


def test_a_session_without_the_fixtures_imports_nothing_more(tmp_path: Path) -> None:
    """Registered but unused, the plugin adds its own small modules to the session, nothing else:
    no simulator, receiver, web server, worker or Redis client of its own."""
    (tmp_path / "conftest.py").write_text("import nen_celery  # the package itself: the user's app has it\n")
    (tmp_path / "test_plain.py").write_text(MODULES_TEST)
    with_plugin = _modules(tmp_path)
    without = _modules(tmp_path, "-p", "no:nen_celery")
    assert "nen_celery.testing" in with_plugin
    added = with_plugin - without
    assert added == {"nen_celery.testing", "nen_celery.testing.fixtures", "nen_celery.testing.options"}
    heavy = ("nen_celery.simulator", "nen_celery.web", "starlette", "uvicorn", "celery.contrib.testing")
    assert not [name for name in with_plugin if name.startswith(heavy)]


def test_the_simulator_scripts_an_outcome_over_http() -> None:
    with SimulatorServer(sim_config()) as sim:
        control = httpx.Client(base_url=sim.url)
        workflow = "6f1c2a57-3b9e-4d1a-8c55-0a7e9b2d4f10"
        bad = control.post("/_sim/outcomes", json={"workflow_id": workflow, "status": "lost"})
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_outcome"
        mixed = {"workflow_id": workflow, "status": "success", "error": {"code": "x"}}
        assert control.post("/_sim/outcomes", json=mixed).status_code == 400
        body = {"workflow_id": workflow, "status": "failed", "error": {"code": "no_match"}}
        assert control.post("/_sim/outcomes", json=body).json() == {"outcomes": [body]}
        assert control.get("/_sim/outcomes").json() == {"outcomes": [body]}
        assert control.post("/_sim/reset").status_code == 200
        assert control.get("/_sim/outcomes").json() == {"outcomes": []}
        assert sim.state.in_flight() == 0


@pytest.mark.parametrize("example", ["flask_app", "django_app"])
def test_the_examples_own_tests_pass_on_the_plugin(example: str) -> None:
    """Dogfooding: examples/*/tests use the plugin as docs/testing.md's recipes say."""
    folder = ROOT / "examples" / example
    result = run_pytest(folder, env=user_env(redis_db=15))
    found = outcomes(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert found and set(found.values()) == {"PASSED"}, found
