"""The code layout's promises that import-linter cannot check: one owner of per-process
resources rebuilt on a settings change, the moved logging names still resolving, and the
size limits a maintainer can hold in their head (modules ~400 lines, functions ~60)."""

from __future__ import annotations

import ast
import importlib
import logging
import logging.config
import warnings
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "src" / "nen_celery"
MODULE_LINES_MAX = 400
FUNCTION_LINES_MAX = 60


def test_a_settings_change_rebuilds_the_http_client_with_the_new_timeouts() -> None:
    """Django's override_settings / a Flask config change go through install_overrides: the
    Nen client then talks through a new keep-alive pool built from the new settings."""
    from nen_celery.runtime.context import get_context
    from nen_celery.settings import install_overrides

    before = get_context().client.http
    assert get_context().client.http is before  # one pool per process and settings
    wanted = before.timeout.read + 7.0
    try:
        install_overrides({"NEN_READ_TIMEOUT": wanted})
        after = get_context().client.http
        assert after is not before
        assert after.timeout.read == wanted
    finally:
        install_overrides({})
    assert get_context().client.http.timeout.read == before.timeout.read


def test_the_rate_limiter_is_the_contexts_and_follows_the_settings() -> None:
    """NEN_RATE_LIMIT turned on by a host framework's settings: every client of the process
    shares one bucket (one Redis pool); turned off again, the clients take no token."""
    from nen_celery.runtime.context import get_context
    from nen_celery.settings import install_overrides

    assert get_context().settings.rate_limit == 0 and get_context().client.limiter is None
    try:
        install_overrides({"NEN_RATE_LIMIT": 5})
        limiter = get_context().client.limiter
        assert limiter is not None and limiter.rate == 5
        assert get_context().client.limiter is limiter
    finally:
        install_overrides({})
    assert get_context().client.limiter is None


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("nen_celery.logging_filters", "RedactingFilter", "nen_celery.logs"),
        ("nen_celery.logging_filters", "add_redaction", "nen_celery.logs"),
        ("nen_celery.runlog", "RunIdFilter", "nen_celery.logs"),
        ("nen_celery.runlog", "JsonFormatter", "nen_celery.logs"),
    ],
)
def test_moved_logging_names_still_resolve_with_a_deprecation_warning(old: str, name: str, new: str) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{name} moved to {new}.{name}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_the_documented_dictconfig_paths_build_the_filters() -> None:
    """README / docs/security.md: ``"()": "nen_celery.logs.RedactingFilter"`` in LOGGING."""
    from nen_celery.logs import RedactingFilter, RunIdFilter

    handler_name = "nen-test-layers"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the documented paths are not the deprecated ones
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "filters": {
                    "secrets": {"()": "nen_celery.logs.RedactingFilter"},
                    "runs": {"()": "nen_celery.logs.RunIdFilter"},
                },
                "handlers": {handler_name: {"class": "logging.NullHandler", "filters": ["secrets", "runs"]}},
                "loggers": {"nen_test_layers": {"handlers": [handler_name]}},
            }
        )
    handler = logging.getLogger("nen_test_layers").handlers[0]
    try:
        assert [type(f) for f in handler.filters] == [RedactingFilter, RunIdFilter]
    finally:
        logging.getLogger("nen_test_layers").handlers.clear()


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_under_the_size_limit() -> None:
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in _sources()
        if (lines := len(path.read_text().splitlines())) > MODULE_LINES_MAX
    }
    assert long == {}, f"modules over {MODULE_LINES_MAX} lines: split them by what they hold"


def test_every_function_is_under_the_size_limit() -> None:
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > FUNCTION_LINES_MAX:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = lines
    assert long == {}, f"functions over {FUNCTION_LINES_MAX} lines: give their steps names"


def test_importing_nen_celery_loads_no_publishing_or_logging_machinery() -> None:
    """``import nen_celery`` in a web process: the public API and nothing that a worker, the
    receiver or a fast path needs (they load on first use)."""
    import subprocess
    import sys

    code = (
        "import sys, nen_celery\n"
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'nen_celery.fastpath', 'nen_celery.web', 'nen_celery.logs.redaction', "
        "'nen_celery.lifecycle.completion', 'nen_celery.lifecycle.submit', 'nen_celery.celery.tasks', "
        "'nen_celery.worker', 'nen_celery.ops', 'nen_celery.simulator'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


# What the /metrics endpoints may use of runtime/metrics.py: rendering, not counting.
METRICS_RENDERING = {"render", "render_apart", "scrape_executor", "public_on_receiver", "REGISTRY"}
RUNLOG_BINDING = {"bind", "bound"}
REPORTERS = ("lifecycle", "web", "celery", "worker.py")


def _direct_reports(path: Path) -> list[str]:
    """Where ``path`` counts a metric or binds run-log ids itself, not through the hook."""
    tree = ast.parse(path.read_text())
    aliases: dict[str, set[str]] = {}  # a local name of runtime.metrics / logs.runlog -> forbidden
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("nen_celery.runtime", "nen_celery.logs"):
            for name in node.names:
                if name.name in ("metrics", "runlog"):
                    aliases[name.asname or name.name] = set() if name.name == "metrics" else RUNLOG_BINDING
        elif isinstance(node, ast.ImportFrom) and node.module == "nen_celery.runtime.metrics":
            counting = [n.name for n in node.names if n.name not in METRICS_RENDERING]
            found += [f"{node.lineno}: imports {name}" for name in counting]
        elif isinstance(node, ast.ImportFrom) and node.module == "nen_celery.logs.runlog":
            found += [f"{node.lineno}: imports {n.name}" for n in node.names if n.name in RUNLOG_BINDING]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            forbidden = aliases[node.value.id]
            if (node.attr in forbidden) if forbidden else (node.attr not in METRICS_RENDERING):
                found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return sorted(found, key=lambda line: int(line.split(":")[0]))


def test_lifecycle_and_web_report_events_only_through_the_observer_hook() -> None:
    """Issue 28: one hook (nen_celery.observe) for metrics and run-log ids; a call site that
    counted or bound by itself would bypass the user's observers."""
    offenders = {}
    for part in REPORTERS:
        paths = [PACKAGE / part] if part.endswith(".py") else sorted((PACKAGE / part).rglob("*.py"))
        for path in paths:
            if found := _direct_reports(path):
                offenders[str(path.relative_to(PACKAGE))] = found
    assert offenders == {}, "report through nen_celery.observe (observe.run_completed(...), ...)"


def test_the_direct_report_check_sees_a_direct_report(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from nen_celery.runtime import metrics as m\nfrom nen_celery.logs import runlog\n"
        "from nen_celery.runtime.metrics import LATE_WEBHOOKS, render\n"
        "m.RUNS_STARTED.inc()\nm.render()\nrunlog.bind(run_id='r')\nrunlog.clear()\n"
    )
    assert _direct_reports(sample) == ["3: imports LATE_WEBHOOKS", "4: m.RUNS_STARTED", "6: runlog.bind"]
