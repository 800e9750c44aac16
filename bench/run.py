"""Benchmarks, run by `make bench` (a throwaway Redis is started by scripts/with_redis.py).

Each compares our code with a bare baseline (or a hard bound) in the same run on the same
Redis, prints its figures and the ratio, and the run appends a table to bench/results.md.
Timings are never asserted: these are not tests.

    python bench/run.py [--columns defaults,fast] [--no-diary] [start lifecycle receiver submit cost latency]

Every row is measured twice, in two columns side by side: "defaults" sets the opt-in fast paths
(bench.common.FAST_PATHS: NEN_DIRECT_PUBLISH, NEN_WEBHOOK_DIRECT_PUBLISH, NEN_PATCH_KOMBU_REDIS,
NEN_EVENT_BATCHES) to false, "fast paths" sets all four to true. The settings are read once per
process, so each (benchmark, column) runs in a child of its own (`run.py --column C --out F
NAME`: the rows as JSON in F), which its workers and receivers inherit, with its own bare
baseline; the columns alternate benchmark by benchmark. Rows the settings cannot change
(Result.same_in_both) are measured in the defaults column only.

Environment: BENCH_N (runs in the throughput benchmark, default 2000), BENCH_SUBMIT_N,
BENCH_SUBMIT_CONCURRENCY, BENCH_SUBMIT_POOLS, BENCH_SUBMIT_PROCS, BENCH_COST_N,
BENCH_SWEEP_STORED, BENCH_LATENCY_RATES, BENCH_LATENCY_SECONDS, BENCH_RECEIVER_SECONDS,
BENCH_RECEIVER_CONNECTIONS, BENCH_ROUNDS; BENCH_NO_DIARY=1 (as --no-diary): print the table
without appending it to bench/results.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import COLUMN_LABELS, COLUMNS, FAST_PATHS, HEADER, ROOT, Result, column_env, configure

MODULES = {
    "start": "bench.start",
    "lifecycle": "bench.lifecycle",
    "receiver": "bench.receiver",
    "submit": "bench.submit",
    "cost": "bench.redis_cost",
    "latency": "bench.latency",
}
RESULTS = ROOT / "bench" / "results.md"


def measure(column: str, names: list[str], out: Path | None) -> int:
    """One column in this process: the settings set before nen_celery.worker is imported (its
    Celery app reads them once); the rows to ``out`` as JSON, or printed as a table."""
    os.environ.update(column_env(column))
    configure()
    results: list[Result] = []
    for name in names:
        print(f"\n== {name} ({COLUMN_LABELS[column]})", flush=True)
        try:
            results += importlib.import_module(MODULES[name]).run()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            results.append(Result(name, "error", "", None, "", False, f"{type(exc).__name__}: {exc}"))
    if out is not None:
        out.write_text(json.dumps([dataclasses.asdict(r) for r in results]))
    else:
        print("\n" + "\n".join([HEADER, *(r.row() for r in results)]))
    return 0 if all(r.ours != "error" for r in results) else 1


def spawn(column: str, name: str, columns: list[str]) -> list[Result]:
    """One benchmark in one column, in a child process of its own; its rows."""
    fd, path = tempfile.mkstemp(prefix=f"nen-bench-{name}-{column}-", suffix=".json")
    os.close(fd)
    out = Path(path)
    argv = [sys.executable, str(Path(__file__).resolve()), "--column", column, "--out", path, name]
    t0 = time.monotonic()
    try:
        env = {**os.environ, **column_env(column)}
        if column != "defaults" and "defaults" in columns:  # rows the settings cannot change: once
            env["BENCH_WITH_DEFAULTS"] = "1"
        code = subprocess.run(argv, env=env, cwd=ROOT).returncode
        text = out.read_text()
    finally:
        out.unlink(missing_ok=True)
    print(f"  ({name}, {COLUMN_LABELS[column]}: {time.monotonic() - t0:.0f} s)", flush=True)
    if not text:  # the child died before writing its rows
        return [Result(name, "error", "", None, "", False, f"the {column} child exited with {code}")]
    return [Result(**row) for row in json.loads(text)]


def _side(result: Result | None, first: Result) -> list[str]:
    """One column's cells (ours, baseline, ratio, met) of a row; ``first``: the row's first
    column's result."""
    if result is None:
        if first.same_in_both:
            return ["(as defaults)", "", "", ""]
        return ["(not run)", "", "", ""]
    ratio = "" if result.ratio is None else f"{result.ratio:.2f}x"
    return [result.ours, result.baseline, ratio, "yes" if result.met else "**no**"]


def _notes(notes: dict[str, str]) -> str:
    """The columns' notes of one row: the leading "; "-separated parts they share once, then
    each column's own rest, " · " between them."""
    split = {column: text.split("; ") for column, text in notes.items()}
    shared: list[str] = []
    for parts in zip(*split.values(), strict=False):
        if len(set(parts)) > 1:
            break
        shared.append(parts[0])
    rests = {c: "; ".join(parts[len(shared) :]) for c, parts in split.items()}
    own = [f"{COLUMN_LABELS[c]}: {rest}" for c, rest in rests.items() if rest]
    return " · ".join(["; ".join(shared), *own] if shared else own)


def merged(columns: list[str], rows: dict[str, list[Result]]) -> list[str]:
    """The table: per row, each column's figure, its own baseline, ratio and met, side by side."""
    by_name: dict[str, dict[str, Result]] = {}
    for column in columns:
        for result in rows[column]:
            by_name.setdefault(result.name, {})[column] = result
    head = ["benchmark", "target"]
    for column in columns:
        label = COLUMN_LABELS[column]
        head += [f"{label}: ours", f"{label}: baseline", f"{label}: ratio", f"{label}: met"]
    head.append("notes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, results in by_name.items():
        first = next(iter(results.values()))
        cells = [name, first.target]
        for column in columns:
            cells += _side(results.get(column), first)
        note = _notes({column: r.notes for column, r in results.items()})
        if first.same_in_both and len(results) < len(columns):
            note = f"not changed by the fast paths, measured once; {note}"
        lines.append("| " + " | ".join([*cells, note]) + " |")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks (default: all of {list(MODULES)})")
    parser.add_argument("--columns", default=",".join(COLUMNS), help="comma-separated: defaults,fast")
    parser.add_argument("--no-diary", action="store_true", help="do not append to bench/results.md")
    parser.add_argument("--column", choices=list(COLUMNS), help=argparse.SUPPRESS)  # a child: one column
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = args.names or list(MODULES)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    unknown = [n for n in names if n not in MODULES] + [c for c in columns if c not in COLUMNS]
    if unknown or not columns:
        print(f"unknown {unknown}; benchmarks: {list(MODULES)}, columns: {list(COLUMNS)}", file=sys.stderr)
        return 2
    if args.column:
        return measure(args.column, names, args.out)

    t0 = time.monotonic()
    rows: dict[str, list[Result]] = {column: [] for column in columns}
    for name in names:  # the columns alternate benchmark by benchmark: the machine's load drifts
        for column in columns:
            print(f"\n=== {name}: {COLUMN_LABELS[column]} column", flush=True)
            rows[column] += spawn(column, name, columns)
    minutes = (time.monotonic() - t0) / 60
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    title = (
        f"### {stamp}: `make bench` ({' '.join(names)}), {os.cpu_count()} cores, "
        f"load {load}, BENCH_N={os.environ.get('BENCH_N', '2000')}, {minutes:.0f} min"
    )
    settings = ", ".join(FAST_PATHS)
    sides = {
        "defaults": f"**defaults**: {settings} all false "
        "(stock Celery publish, kombu transport and task events)",
        "fast": "**fast paths**: the same four all true "
        "(one-LPUSH publishes, kombu Redis patches, event batches)",
    }
    note = (
        "; ".join(sides[c] for c in columns)
        + ". Each column runs in processes of its own (its workers and receivers inherit the "
        "settings) against its own bare baseline, measured in the same run. Tables before this "
        "format were measured with the fast paths on (but for the receiver's apply_async row)."
    )
    table = "\n".join([title, "", note, "", *merged(columns, rows)])
    print("\n" + table)
    if not (args.no_diary or os.environ.get("BENCH_NO_DIARY") == "1"):
        new = not RESULTS.exists()
        with RESULTS.open("a") as out:
            if new:
                out.write("# Benchmark results (newest last; written by bench/run.py)\n")
            out.write("\n" + table + "\n")
    return 0 if all(r.ours != "error" for side in rows.values() for r in side) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
