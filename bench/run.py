"""Benchmarks, run by `make bench`: each compares our code with a bare baseline in the same run,
on the same Redis, and prints the ratio (absolute numbers vary between runs on these machines).

1. start_run (validate + seal + one Lua write + publish) vs a bare Celery publish + one HSET:
   the cost a web request pays to start a run. Nothing here waits on Nen.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable

from cryptography.fernet import Fernet

REDIS_URL = os.environ.get("NEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/13").rsplit("/", 1)[0] + "/11"
os.environ.update(
    NEN_REDIS_URL=REDIS_URL,
    NEN_BROKER_URL=REDIS_URL,
    NEN_KEY_PREFIX=f"nenbench{uuid.uuid4().hex[:6]}",
    NEN_SECRETS_KEY=Fernet.generate_key().decode(),
)

import redis  # noqa: E402

from nen_celery import start_run  # noqa: E402
from nen_celery.worker import app  # noqa: E402

WF = "12345678-1234-1234-1234-123456789abc"
N = int(os.environ.get("BENCH_N", "2000"))


@app.task(name="bench.noop")
def noop(run_id: str) -> None:
    return None


def timed(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p))] * 1000


def main() -> int:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()

    def ours(i: int) -> None:
        start_run(
            WF, {"PATIENT_NAME": f"P{i}", "DATE_OF_BIRTH": "1990-01-15"}, secure_params={"password": "x"}
        )

    def bare(i: int) -> None:
        rid = str(uuid.uuid4())
        client.hset(f"bare:{rid}", mapping={"workflow_id": WF, "status": "queued"})
        noop.apply_async((rid,))

    timed(ours, 50)  # warm up connections and script caches
    timed(bare, 50)
    a = timed(ours, N)
    b = timed(bare, N)
    client.flushdb()
    rows = [
        ("start_run", statistics.median(a) * 1000, pct(a, 0.99)),
        ("bare HSET + apply_async", statistics.median(b) * 1000, pct(b, 0.99)),
    ]
    print(f"## start_run latency (N={N}, Redis {REDIS_URL})\n")
    print("| path | p50 ms | p99 ms |\n|---|---|---|")
    for name, p50, p99 in rows:
        print(f"| {name} | {p50:.3f} | {p99:.3f} |")
    print(f"\nratio p50 ours/bare: {rows[0][1] / rows[1][1]:.2f}x; p99: {rows[0][2] / rows[1][2]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
