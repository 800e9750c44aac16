"""What tests/test_docs_true.py holds the docs to: the reference tables rendered from the code,
and the parsing of the pages (markdown table rows, the tests docs/guarantees.md names).

`python -m tests.docs_truth` prints the settings table's rows as the code has them, to paste
into docs/configuration.md after a change.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import annotated_types as at
from pydantic.fields import FieldInfo

from nen_celery.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Defaults the code computes from another setting: the table names the rule, not a value.
DERIVED_DEFAULTS = {"broker_url": "NEN_REDIS_URL", "rate_limit_burst": "max(1, NEN_RATE_LIMIT)"}


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def cells(row: str) -> list[str]:
    """The cells of one markdown table row (``\\|`` inside a cell is not a separator)."""
    inner = row.strip()[1:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def table_rows(text: str, header: str) -> list[list[str]]:
    """Every row of every table whose header row starts with ``header``."""
    rows: list[list[str]] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
            continue
        if inside and line.startswith("|"):
            if not set(line) <= set("|-: "):
                rows.append(cells(line))
        else:
            inside = False
    return rows


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def render_default(name: str, field: FieldInfo) -> str | None:
    """The default cell's code span as the code has it; None: the cell must hold no value
    (``unset``, or ``—`` for a setting that has none)."""
    if name in DERIVED_DEFAULTS:
        return DERIVED_DEFAULTS[name]
    value = field.default
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    return str(value)


def render_bounds(field: FieldInfo) -> str:
    """The bounds cell: the numeric bounds (> 0, ≤ 60), or the choices of a Literal."""
    literal = typing.get_origin(field.annotation) is typing.Literal
    choices = typing.get_args(field.annotation) if literal else ()
    if choices:
        return ", ".join(f"`{c}`" for c in choices)
    parts = []
    for meta in field.metadata:
        for kind, sign in ((at.Gt, ">"), (at.Ge, "≥"), (at.Lt, "<"), (at.Le, "≤")):
            if isinstance(meta, kind):
                parts.append(f"{sign} {_number(getattr(meta, kind.__name__.lower()))}")
    return ", ".join(parts)


def setting_rows() -> dict[str, tuple[str | None, str]]:
    """``NEN_<NAME>`` -> (default, bounds), for every setting."""
    return {
        f"NEN_{name.upper()}": (render_default(name, field), render_bounds(field))
        for name, field in Settings.model_fields.items()
    }


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def default_problem(variable: str, cell: str, expected: str | None) -> str | None:
    spans = code_spans(cell)
    if expected is None:
        if spans or not (cell.startswith("unset") or cell.startswith("—")):
            return f"{variable}: default {cell!r}, the code has none (write unset or —)"
        return None
    if not spans or spans[0] != expected:
        return f"{variable}: default {cell!r}, the code has `{expected}`"
    return None


# -- the tests docs/guarantees.md names ------------------------------------------------------
TEST_REF = re.compile(r"`(?:tests/)?(test_\w+\.py)((?:::[\w*]+(?:\[[^\]]+\])?)?)`")
CONTINUED = re.compile(r"`(::\w+(?:\[[^\]]+\])?|\.\.\.\[[^\]]+\])`")


def fault_table_refs(text: str) -> list[tuple[str, str]]:
    """(selecting marker, node id) for every test the fault table names in its third column:
    ``test_x.py::name[param]``, ``...[param]`` (the row above's test), ``::name`` (its file).
    The last column gives the marker, or one per test named, in order."""
    refs: list[tuple[str, str]] = []
    last_file, last_name = "", ""
    for row in table_rows(text, "| fault | what happens | test |"):
        markers, cell = [m.strip(" `") for m in row[3].split(",")], row[2]
        for number, match in enumerate(re.finditer(rf"{TEST_REF.pattern}|{CONTINUED.pattern}", cell)):
            marker = markers[min(number, len(markers) - 1)]
            if match.group(1):
                last_file = match.group(1)
                tail = match.group(2)
                last_name = tail[2:].split("[")[0] if tail else ""
                node = f"tests/{last_file}{tail}"
            elif match.group(3).startswith("::"):
                last_name = match.group(3)[2:].split("[")[0]
                node = f"tests/{last_file}{match.group(3)}"
            else:
                node = f"tests/{last_file}::{last_name}{match.group(3)[3:]}"
            refs.append((marker, node))
    return refs


def page_refs(text: str) -> list[str]:
    """Every ``tests/test_x.py`` or ``tests/test_x.py::name`` the page names anywhere."""
    return [f"tests/{m.group(1)}{m.group(2)}" for m in TEST_REF.finditer(text)]


def markers_of(node_id: str) -> set[str]:
    """The marks pytest sees on a test function (module ``pytestmark`` included)."""
    import importlib

    path, _, name = node_id.partition("::")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    declared: Any = getattr(module, "pytestmark", [])
    marks: list[Any] = list(declared) if isinstance(declared, list) else [declared]
    function = getattr(module, name.split("[")[0], None)
    marks += list(getattr(function, "pytestmark", []))
    return {mark.name for mark in marks} - {"parametrize", "timeout"}



# -- the Redis key layout ----------------------------------------------------------------------
SAMPLE = {"run_id": "RUN-1", "message_id": "MSG-1", "attempt": "7", "name": "NAME-1"}
PLACEHOLDERS = {"RUN-1": "<run_id>", "MSG-1": "<message_id>", ":7:": ":<attempt>:", "NAME-1": "<name>"}


def layout_patterns() -> set[str]:
    """Every key KeyLayout builds, for the sample ids, written as the docs write keys."""
    import inspect

    from nen_celery.store.keys import KeyLayout

    layout = KeyLayout("PFX", 16)
    keys: list[str] = []
    for name, member in inspect.getmembers(KeyLayout):
        if name.startswith("_") or name == "shard":
            continue
        if isinstance(member, property):
            value = getattr(layout, name)
        elif callable(member):
            params = list(inspect.signature(member).parameters)[1:]
            value = getattr(layout, name)(*(SAMPLE[p] for p in params))
        else:
            continue
        keys += [value] if isinstance(value, str) else list(value)
    patterns = set()
    for key in keys:
        key = re.sub(r"\{\d+\}", "{k}", key).replace("PFX", "<p>", 1)
        for sample, placeholder in PLACEHOLDERS.items():
            key = key.replace(sample, placeholder)
        patterns.add(key)
    return patterns


def missing_test(node_id: str) -> str | None:
    """Why ``tests/test_x.py[::name[param]]`` names no test (``*`` in the name is a glob)."""
    import fnmatch
    import importlib

    path, _, rest = node_id.partition("::")
    if not (ROOT / path).is_file():
        return f"{node_id}: no such file"
    if not rest:
        return None
    name, _, param = rest.partition("[")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    names = [n for n in vars(module) if n.startswith("test_") and fnmatch.fnmatch(n, name)]
    if not names:
        return f"{node_id}: no such test"
    if param:
        ids: set[str] = set()
        for mark in getattr(getattr(module, names[0]), "pytestmark", []):
            if mark.name == "parametrize":
                given = mark.kwargs.get("ids")
                ids |= {str(i) for i in given} if isinstance(given, list) else {str(v) for v in mark.args[1]}
        if param.rstrip("]") not in ids:
            return f"{node_id}: no such parameter"
    return None


# -- figures and the runs they cite ---------------------------------------------------------
CITED_RUN = re.compile(r"\brun (\d{4}-\d\d-\d\d) (\d\d:\d\d)\b|\brun (\d\d:\d\d)\)")


def recorded_runs() -> set[str]:
    """``YYYY-MM-DD HH:MM`` of every run bench/results.md records: a heading's date and time, or
    a section's date with a ``(HH:MM UTC)`` in its text."""
    runs: set[str] = set()
    date = ""
    for line in read(ROOT / "bench" / "results.md").splitlines():
        heading = re.match(r"#+ (\d{4}-\d\d-\d\d)(?: (\d\d:\d\d))?", line)
        if heading:
            date = heading.group(1)
            if heading.group(2):
                runs.add(f"{date} {heading.group(2)}")
        elif date:
            runs |= {f"{date} {t}" for t in re.findall(r"\((\d\d:\d\d) UTC\)", line)}
    return runs


def cited_runs(text: str) -> list[str]:
    """Every ``run YYYY-MM-DD HH:MM`` a page cites."""
    return [f"{m.group(1)} {m.group(2)}" for m in CITED_RUN.finditer(text) if m.group(1)]


if __name__ == "__main__":  # pragma: no cover
    for variable, (default, bounds) in setting_rows().items():
        print(f"| `{variable}` | {'`' + default + '`' if default else 'unset'} | {bounds} | ... |")
