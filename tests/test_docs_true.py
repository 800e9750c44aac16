"""The docs stay true: each reference table is held to the code it describes, each test the
guarantees page names exists and carries the marker that selects it, and the module names in
comments exist. How and why: docs/architecture.md, "How we keep the docs true"."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.docs_truth import (
    DOCS,
    ROOT,
    cited_runs,
    code_spans,
    default_problem,
    fault_table_refs,
    layout_patterns,
    markers_of,
    missing_test,
    page_refs,
    read,
    recorded_runs,
    setting_rows,
    table_rows,
)

if TYPE_CHECKING:
    from tests.conftest import Stack

README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"  # every setting; the README's table a few


@pytest.mark.parametrize("page", [README, CONFIGURATION, OPERATIONS], ids=lambda p: p.name)
def test_the_settings_tables_show_each_default_and_bound_as_the_code_has_them(page: object) -> None:
    expected = setting_rows()
    problems = []
    rows = table_rows(read(page), "| variable | default | bounds | meaning |")  # type: ignore[arg-type]
    assert rows, f"{page}: no settings table"
    for row in rows:
        variable = row[0].strip("`")
        if variable not in expected:
            problems.append(f"{variable}: in the table, not a setting")
            continue
        default, bounds = expected[variable]
        problems.append(default_problem(variable, row[1], default) or "")
        if row[2] != bounds:
            problems.append(f"{variable}: bounds {row[2]!r}, the code has {bounds!r}")
    if page == CONFIGURATION:
        listed = {row[0].strip("`") for row in rows}
        problems += [f"{name}: a setting the table lacks" for name in expected if name not in listed]
    assert [p for p in problems if p] == []


def test_the_settings_table_fails_on_a_changed_default_or_bound() -> None:
    """The check above can fail: a row as it would read after a change in Settings."""
    assert default_problem("NEN_RECONCILE_INTERVAL", "`10`", "15") is not None
    rows = table_rows(read(CONFIGURATION), "| variable | default | bounds | meaning |")
    bounds = {row[0].strip("`"): row[2] for row in rows}
    assert bounds["NEN_CALLBACK_LEASE"] == setting_rows()["NEN_CALLBACK_LEASE"][1] == "> 0, ≤ 120"


def test_module_names_in_the_settings_comments_exist() -> None:
    source = read(ROOT / "src" / "nen_celery" / "settings.py")
    named = set(re.findall(r"[\w/]+\.py\b", source))
    package = ROOT / "src" / "nen_celery"
    assert named and sorted(n for n in named if not (package / n).is_file()) == []


def test_every_page_links_to_files_that_exist() -> None:
    """Paths to the repository's own files in links and code spans (src/, tests/, bench/, ...)."""
    missing = []
    for page in DOCS:
        for path in re.findall(r"`((?:src|tests|bench|scripts|examples|constraints)/[\w./-]+)`", read(page)):
            target = path.split("::")[0].rstrip(".")
            if not (ROOT / target).exists():
                missing.append(f"{page.name}: {path}")
    assert missing == []


def test_the_key_table_is_the_key_layout() -> None:
    """docs/operations.md's key table names exactly the keys store/keys.py builds."""
    rows = table_rows(read(OPERATIONS), "| key | type | slot (hash tag) | what |")
    documented = {row[0].strip("`") for row in rows}
    assert documented == layout_patterns()


def test_keys_built_outside_the_layout_are_the_layouts() -> None:
    """Only store/keys.py spells key names; nen/ratelimit.py (a layer that may not import
    store) and the demo's own key are the exceptions, and the limiter's is the layout's."""
    from nen_celery.nen.ratelimit import RateLimiter
    from nen_celery.settings import Settings
    from nen_celery.store.keys import KeyLayout

    package = ROOT / "src" / "nen_celery"
    spelled = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "key_prefix}:" in read(path)
    )
    assert spelled == ["nen/ratelimit.py", "ops/demo_tasks.py"]

    class Client:
        def register_script(self, source: str) -> object:
            return source

    settings = Settings(rate_limit=1, key_prefix="PFX")
    limiter = RateLimiter.from_settings(Client(), settings)  # type: ignore[arg-type]
    assert limiter.key == KeyLayout("PFX", 16).ratelimit_key


GUARANTEES = ROOT / "docs" / "guarantees.md"


def test_every_test_the_fault_table_names_exists_and_carries_its_marker() -> None:
    refs = fault_table_refs(read(GUARANTEES))
    assert len(refs) >= 40
    problems = []
    for markers, node in refs:
        problems.append(missing_test(node) or "")
        if problems[-1]:
            continue
        marks = markers_of(node)
        if "slow" in marks:
            problems.append(f"{node}: marked slow, so make test does not run it")
        if markers not in marks:
            problems.append(f"{node}: the page says -m {markers}, the test has {sorted(marks)}")
    assert [p for p in problems if p] == []


def test_every_test_a_page_names_exists() -> None:
    problems = [missing_test(node) for page in DOCS for node in page_refs(read(page))]
    assert [p for p in problems if p] == []


def test_the_reference_check_can_fail() -> None:
    killed = "tests/test_faults.py::test_pool_process_killed_at_each_point_finishes_the_run_once"
    assert missing_test("tests/test_faults.py::test_no_such_thing") is not None
    assert missing_test(f"{killed}[x]") is not None and missing_test(f"{killed}[submit:before_claim]") is None
    duplicates = "tests/test_lifecycle.py::test_duplicate_and_out_of_order_webhooks_fire_one_callback"
    assert markers_of(duplicates) == {"integration"}


WF = "12345678-1234-1234-1234-123456789abc"


@pytest.mark.integration
def test_the_exit_code_table_is_the_commands(stack: Stack) -> None:
    """docs/operations.md's exit codes are ops/exit_codes.py's, and the command exits with each."""
    import httpx
    from click.testing import CliRunner

    from nen_celery import start_run
    from nen_celery.ops.cli import main
    from nen_celery.ops.exit_codes import MEANINGS

    rows = table_rows(read(OPERATIONS), "| exit code | meaning |")
    assert {int(row[0]): row[1] for row in rows} == MEANINGS

    def code(*argv: str) -> int:
        return CliRunner().invoke(main, list(argv), catch_exceptions=False).exit_code

    done = start_run(WF, {"A": "1"})
    done.wait(timeout=30)
    refused = httpx.post(f"{stack.sim.url}/_sim/config", json={"post_errors": [{"status": 400}]}, timeout=5)
    assert refused.status_code == 200
    cases = [
        (0, ("status", done.run_id, "--json")),
        (1, ("start", WF, "--param", "A=1", "--wait", "--timeout", "30", "--json")),  # Nen's 400
        (2, ("start", "not-a-uuid")),  # invalid params
        (2, ("start", WF, "--param", "no-value")),  # a usage error
        (2, ("--app", "no_such_module_of_ours", "status", done.run_id)),
        (3, ("status", "no-such-run")),
        (3, ("runs", "redrive", "no-such-run")),
    ]
    assert [(expected, code(*argv)) for expected, argv in cases] == [(e, e) for e, _ in cases]
    assert {expected for expected, _ in cases} == set(MEANINGS)


def test_every_run_a_page_cites_is_recorded_in_the_bench_results() -> None:
    """A figure cites its run as ``run YYYY-MM-DD HH:MM``; that run must be in bench/results.md."""
    recorded = recorded_runs()
    cited = {f"{page.name}: {run}" for page in DOCS for run in cited_runs(read(page))}
    assert len(cited) >= 5
    assert sorted(c for c in cited if c.split(": ")[1] not in recorded) == []
    assert "2026-11-29 08:53" in recorded and "2026-11-29 08:54" not in recorded


def test_no_countdown_exceeds_60_s_the_callback_lease_is_bounded() -> None:
    """A copy of a callback waiting on the lease comes back in half of NEN_CALLBACK_LEASE: the
    setting stops at 120 s, so that countdown stays within the 60 s every other one keeps."""
    from pydantic import ValidationError

    from nen_celery.nen.ratelimit import MAX_COUNTDOWN
    from nen_celery.settings import Settings

    with pytest.raises(ValidationError, match="callback_lease"):
        Settings(callback_lease=121)
    bounded = {"callback_lease": 2, "reschedule_delay": 1, "completion_lease": 1}
    longest = {name: Settings.model_fields[name].metadata[-1].le / half for name, half in bounded.items()}
    assert longest == {"callback_lease": 60, "reschedule_delay": 60, "completion_lease": 60} == {
        name: MAX_COUNTDOWN for name in bounded
    }


def test_the_metrics_table_is_what_a_scrape_shows() -> None:
    """docs/operations.md's metrics table: each metric of a scrape, with its type and labels."""
    from prometheus_client import Counter, Histogram
    from prometheus_client.parser import text_string_to_metric_families

    from nen_celery.runtime import metrics

    rows = table_rows(read(OPERATIONS), "| metric | type | labels | meaning |")
    documented = {row[0].strip("`"): (row[1], tuple(code_spans(row[2]))) for row in rows}
    collectors = [m for m in vars(metrics).values() if isinstance(m, Counter | Histogram)]
    labels = {m._name: tuple(m._labelnames) for m in collectors}
    scraped = {}
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        if family.name.endswith("_created"):  # prometheus_client's creation times, not ours
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        scraped[name] = (family.type, labels.get(family.name, ()))
    assert "nen_runs_pending" in scraped  # the run store answered: its gauges are in
    assert documented == scraped


def test_the_observer_table_is_the_observer() -> None:
    """docs/operations.md's observer events: Observer's methods, in order, with their arguments."""
    import inspect

    from nen_celery import Observer
    from nen_celery.observe import EVENTS

    rows = table_rows(read(OPERATIONS), "| event | when, and in which process |")
    signatures = {e: list(inspect.signature(getattr(Observer, e)).parameters)[1:] for e in EVENTS}
    assert [row[0].strip("`") for row in rows] == [f"{e}({', '.join(signatures[e])})" for e in EVENTS]
