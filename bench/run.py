"""Benchmarks, run by `make bench` (a throwaway Redis is started by scripts/with_redis.py).

Each compares our code with a bare baseline (or a hard bound) in the same run on the same
Redis, prints its figures and the ratio, and the run appends a table to bench/results.md.
Timings are never asserted: these are not tests.

    python bench/run.py [start lifecycle receiver submit cost latency]   (default: all)

Environment: BENCH_N (runs in the throughput benchmark, default 2000), BENCH_SUBMIT_N,
BENCH_SUBMIT_CONCURRENCY, BENCH_SWEEP_STORED, BENCH_LATENCY_RATE, BENCH_LATENCY_SECONDS,
BENCH_RECEIVER_SECONDS, BENCH_RECEIVER_CONNECTIONS.
"""

from __future__ import annotations

import datetime
import importlib
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HEADER, ROOT, Result, configure

configure()  # before nen_celery.worker is imported: its Celery app reads the settings once

MODULES = {
    "start": "bench.start",
    "lifecycle": "bench.lifecycle",
    "receiver": "bench.receiver",
    "submit": "bench.submit",
    "cost": "bench.redis_cost",
    "latency": "bench.latency",
}
RESULTS = ROOT / "bench" / "results.md"


def main(argv: list[str]) -> int:
    names = argv or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(MODULES)}", file=sys.stderr)
        return 2
    results: list[Result] = []
    for name in names:
        print(f"\n== {name}", flush=True)
        try:
            results += importlib.import_module(MODULES[name]).run()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            results.append(Result(name, "error", "", None, "", False, f"{type(exc).__name__}: {exc}"))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    title = (
        f"### {stamp}: `make bench` ({' '.join(names)}), {os.cpu_count()} cores, "
        f"load {load}, BENCH_N={os.environ.get('BENCH_N', '2000')}"
    )
    table = "\n".join([title, "", HEADER, *(r.row() for r in results)])
    print("\n" + table)
    new = not RESULTS.exists()
    with RESULTS.open("a") as out:
        if new:
            out.write("# Benchmark results (newest last; written by bench/run.py)\n")
        out.write("\n" + table + "\n")
    return 0 if all(r.ours != "error" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
