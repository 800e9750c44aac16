"""0. start_run latency (validate + seal + one Lua write + publish) against a bare HSET +
apply_async: what a web request pays to start a run. Nothing here waits on Nen."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

from bench.common import BOOK_URL, WF, Result, env_int, flush, pct


def timed(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def run() -> list[Result]:
    import redis

    from bench.tasks import step
    from nen_celery import start_run

    n = env_int("BENCH_N", 2000)
    flush()
    client = redis.Redis.from_url(BOOK_URL)

    def ours(i: int) -> None:
        start_run(
            WF, {"PATIENT_NAME": f"P{i}", "DATE_OF_BIRTH": "1990-01-15"}, secure_params={"password": "x"}
        )

    def bare(i: int) -> None:
        rid = str(uuid.uuid4())
        client.hset(f"bare:{rid}", mapping={"workflow_id": WF, "status": "queued"})
        step.apply_async((rid, 0))

    timed(ours, 50)  # warm up connections and script caches
    timed(bare, 50)
    a = timed(ours, n)
    b = timed(bare, n)
    flush()
    ours_p50, bare_p50 = statistics.median(a) * 1000, statistics.median(b) * 1000
    ours_p99, bare_p99 = pct(a, 0.99) * 1000, pct(b, 0.99) * 1000
    ratio = bare_p50 / ours_p50
    print(
        f"start_run: p50 {ours_p50:.3f} ms (p99 {ours_p99:.3f}); bare {bare_p50:.3f} ms (p99 {bare_p99:.3f})"
    )
    return [
        Result(
            f"0. start_run call (N={n})",
            f"p50 {ours_p50:.2f} ms, p99 {ours_p99:.2f} ms",
            f"p50 {bare_p50:.2f} ms, p99 {bare_p99:.2f} ms (HSET + apply_async)",
            ratio,
            "(no target)",
            True,
            "ratio = bare time / our time (speed ratio)",
        )
    ]
