"""Each Lua script's header against its arguments object (store/scripts.py): no Redis used.

A script reads its ARGV by position, so a field added, dropped or reordered on one side only
would hand the script the wrong values without any error. The header of each lua/ file names
its KEYS and ARGV in order; these tests hold the dataclass, the header and the script's own
``KEYS[n]`` / ``ARGV[n]`` reads to one another.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from typing import Any

import pytest

from nen_celery.domain.runstate import lua_guards
from nen_celery.store.keys import KeyLayout
from nen_celery.store.scripts import (
    ARGS,
    CallbackLeaseArgs,
    CreateArgs,
    IngestArgs,
    Script,
    argv_fields,
    script_source,
)

LUA = resources.files("nen_celery.store") / "lua"
NOT_RUNSTORE = {"_common"}  # the functions every script shares


def lua_names() -> set[str]:
    return {p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua")}


def split_top(text: str) -> list[str]:
    """Split on the commas outside parentheses (a note may hold commas)."""
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    return [item.strip() for item in [*items, cur] if item.strip()]


def header(text: str, label: str) -> list[str]:
    """The names a ``-- KEYS:`` / ``-- ARGV:`` header lists, continuation lines (indented past
    the ``--``) included: a name is what comes before its note, spaces read as underscores."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"-- {label}:")]
    assert len(starts) == 1, f"want one '-- {label}:' header line, found {len(starts)}"
    parts = [lines[starts[0]].removeprefix(f"-- {label}:")]
    for line in lines[starts[0] + 1 :]:
        if not re.match(r"-- {2,}\S", line):
            break
        parts.append(line[2:])
    items = split_top(" ".join(parts).strip().removesuffix("."))
    return [item.split("(")[0].strip().replace(" ", "_") for item in items]


def highest(text: str, label: str) -> int:
    """The highest ``KEYS[n]`` / ``ARGV[n]`` the script's code reads."""
    return max((int(n) for n in re.findall(rf"\b{label}\[(\d+)\]", text)), default=0)


def sample(cls: type[Script]) -> Script:
    """An instance whose every ARGV is its own name (a spread field: one pair)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        values[f.name] = (("field", "value"),) if f.metadata.get("spread") else f"<{f.name}>"
    return cls(**values)


def test_every_runstore_script_has_one_arguments_object() -> None:
    assert set(ARGS) == lua_names() - NOT_RUNSTORE
    assert all(name == cls.NAME for name, cls in ARGS.items())


@pytest.mark.parametrize("name", sorted(ARGS))
def test_argv_fields_are_named_and_ordered_as_the_header(name: str) -> None:
    cls, text = ARGS[name], (LUA / f"{name}.lua").read_text()
    names = header(text, "ARGV")
    variadic = [n for n in names if n.endswith("...")]
    fixed = [n for n in names if not n.endswith("...")]
    assert names == fixed + variadic and len(variadic) <= 1, "a variadic tail comes last, alone"
    assert [f.name for f in argv_fields(cls)] == fixed + [n.removesuffix("...") for n in variadic]
    spread = [f.name for f in argv_fields(cls) if f.metadata.get("spread")]
    assert spread == [n.removesuffix("...") for n in variadic]
    # the header names exactly what the code reads: ARGV[1] .. ARGV[n] (a tail by #ARGV)
    assert highest(text, "ARGV") == len(fixed)
    assert ("#ARGV" in text) == bool(variadic)


@pytest.mark.parametrize("name", sorted(ARGS))
def test_argv_is_sent_in_field_order(name: str) -> None:
    cls = ARGS[name]
    expected: list[Any] = []
    for f in argv_fields(cls):
        expected += ["field", "value"] if f.metadata.get("spread") else [f"<{f.name}>"]
    assert sample(cls).argv() == expected


@pytest.mark.parametrize("name", sorted(ARGS))
def test_keys_are_as_many_as_the_header_names(name: str) -> None:
    text = (LUA / f"{name}.lua").read_text()
    keys, _ = sample(ARGS[name]).call(KeyLayout("p", 4))
    assert len(keys) == len(header(text, "KEYS")) == highest(text, "KEYS")


@pytest.mark.parametrize("name", sorted(ARGS))
def test_only_a_trailing_argument_may_be_left_out(name: str) -> None:
    """A field left None is not sent: anywhere but at the end it would shift the others."""
    defaults = [f.default is None for f in argv_fields(ARGS[name])]
    assert defaults == sorted(defaults)


def test_key_only_fields_build_keys_and_are_not_sent() -> None:
    args = IngestArgs("r1", *[f"<{f.name}>" for f in argv_fields(IngestArgs)])
    layout = KeyLayout("p", 4)
    assert args.call(layout) == (layout.run_keys("r1"), [f"<{f.name}>" for f in argv_fields(IngestArgs)])
    assert "r1" not in args.argv()
    claimed = dataclasses.replace(args, claimed="1")
    changed = [i for i, (x, y) in enumerate(zip(claimed.argv(), args.argv(), strict=True)) if x != y]
    assert changed == [[f.name for f in argv_fields(IngestArgs)].index("claimed")]
    assert claimed.argv()[changed[0]] == "1"


def test_release_sends_no_ttl_and_create_spreads_its_fields() -> None:
    assert CallbackLeaseArgs("r", "0", mode="release", holder="h").argv() == ["release", "h"]
    assert CallbackLeaseArgs("r", "0", mode="claim", holder="h", ttl=5).argv() == ["claim", "h", 5]
    create = CreateArgs("r", 1.0, "", 60, 2.0, (("run_id", "r"), ("params", "{}")))
    assert create.argv() == ["r", 1.0, "", 60, 2.0, "run_id", "r", "params", "{}"]


def test_a_script_source_is_the_state_tables_guards_then_the_shared_functions_then_the_script() -> None:
    common = (LUA / "_common.lua").read_text()
    assert script_source("apply") == lua_guards() + common + "\n" + (LUA / "apply.lua").read_text()


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("-- KEYS: a.\n-- ARGV: now, lease (seconds, float), next check", ["now", "lease", "next_check"]),
        ("-- ARGV: a, b (x,\n--       y), c\n-- not the list, d", ["a", "b", "c"]),
        ("-- ARGV: run_id, fields... (field, value, ...)", ["run_id", "fields..."]),
    ],
)
def test_the_header_parser(text: str, names: list[str]) -> None:
    assert header(text, "ARGV") == names


def test_the_key_layout_is_the_deployed_one() -> None:
    """Key names are data at rest: a rename strands every record a deployment holds."""
    k = KeyLayout("p", 4)
    assert k.run_keys("r1") == ["p:run:{1}:r1", "p:run:{1}:r1:secure", "p:timers:{1}", "p:run:{1}:r1:kept"]
    assert k.runs_key("r1") == "p:runs:{1}"
    assert k.callback_keys("r1", "2") == (
        "p:run:{1}:r1:callback:2:lease",
        "p:run:{1}:r1:callback:2:done",
        "p:run:{1}:r1:callback:2:fence",
    )
    assert (k.msg_key("m1"), k.parked_key("m1"), k.parked_due_key("m1")) == (
        "p:msg:{3}:m1",
        "p:parked:{3}:m1",
        "p:parked:due:{3}",
    )
    assert k.all_timers_keys == [f"p:timers:{{{n}}}" for n in range(4)]
    assert k.all_parked_due_keys == [f"p:parked:due:{{{n}}}" for n in range(4)]
    assert (k.reconcile_lock_key, k.deadletter_key) == ("p:reconcile:lock", "p:deadletter")


def test_runs_still_exports_what_other_layers_import() -> None:
    from nen_celery.store import runs

    for name in ("RunStore", "Claim", "callbacks", "script_source", "KEPT_MAX", "PARKED_MAX"):
        assert hasattr(runs, name), name
    assert (runs.KEPT_MAX, runs.PARKED_MAX) == (32, 20)
