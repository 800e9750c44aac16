"""Throughput (runs/s, start_run -> callback) with 1, 2 and 4 worker processes on this machine.

Each worker process is a separate `celery worker -c 1` (one pool process each), all on one
Redis (broker + run state), with the receiver (uvicorn) and the simulator (a thread here) on the
same machine. Run it the way the tests run, with a private Redis:

    NEN_TEST_REDIS_URL=redis://127.0.0.1:1/9 .venv/bin/python scripts/with_redis.py \
        .venv/bin/python bench/scale.py [--runs 200] [--workers 1,2,4] [--broker amqp://...]

(It uses tests/cluster.py, which flushes DBs next to NEN_TEST_REDIS_URL like the suite does.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from tests.cluster import Cluster, db_url
from tests.conftest import TEST_REDIS_URL, sim_config
from tests.helpers import wait_for

from nen_celery.simulator import SimulatorServer


def called(c: Cluster, run_ids: list[str]) -> bool:
    pipe = c.redis.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.llen(f"{c.prefix}:test:callbacks:{run_id}")
    return all(n >= 1 for n in pipe.execute())


def measure(workers: int, runs: int, sim: SimulatorServer, broker: str | None) -> float:
    """Seconds from the first start to the last callback, for ``runs`` runs on ``workers``."""
    url = db_url(TEST_REDIS_URL, 7)
    redis.Redis.from_url(url).flushdb()
    sim.reset()
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(Path(tmp), url, sim, broker_url=broker)
        try:
            c.receiver()
            for _ in range(workers):
                c.worker(concurrency=1, loglevel="WARNING")
            warm = [c.start() for _ in range(2 * workers)]  # every pool process has imported all
            wait_for(lambda: called(c, warm), 120, "warm-up runs")
            run_ids: list[str] = []
            started = time.perf_counter()
            run_ids = [c.start() for _ in range(runs)]
            wait_for(lambda: called(c, run_ids), 600, f"{runs} runs on {workers} workers")
            return time.perf_counter() - started
        finally:
            c.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker process counts")
    parser.add_argument("--broker", default=None, help="broker URL (default: the run-state Redis)")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; {args.runs} runs each")
    rows: list[tuple[int, float]] = []
    with SimulatorServer(sim_config(delivery_attempts=10)) as sim:
        for workers in counts:
            seconds = measure(workers, args.runs, sim, args.broker)
            rows.append((workers, seconds))
            print(f"  {workers} worker process(es): {seconds:.1f} s", flush=True)
    base = args.runs / rows[0][1]
    print("\n| worker processes | seconds | runs/s | vs 1 |")
    print("|---|---|---|---|")
    for workers, seconds in rows:
        rate = args.runs / seconds
        print(f"| {workers} | {seconds:.1f} | {rate:.1f} | {rate / base:.2f}x |")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
