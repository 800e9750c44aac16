"""Soak: thousands of runs through 2 worker processes while workers are killed every few
seconds and every webhook is delivered twice. Not part of CI (`make soak`).

Prints: runs started, POSTs the simulator received per run (must be 1), callbacks per run
(must be 1), lost runs (must be 0). Exit status 1 if any of those does not hold.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")

import redis  # noqa: E402
from tests.callbacks import record_dispatch  # noqa: E402
from tests.cluster import Cluster, db_url  # noqa: E402
from tests.conftest import TEST_REDIS_URL, sim_config  # noqa: E402

from nen_celery.simulator import SimulatorServer  # noqa: E402


def pool_children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def drive(
    c: Cluster,
    run_ids: list[str],
    workers: list[subprocess.Popen[bytes]],
    kills: Counter[str],
    rng: random.Random,
    args: argparse.Namespace,
) -> None:
    """Kill a pool process every --kill-every seconds (every --whole-every-th kill: the whole
    worker, replaced by a new one) until every run's callback is out and the broker is empty."""
    deadline = time.monotonic() + args.timeout
    next_kill = time.monotonic() + args.kill_every
    last_print = 0.0
    while time.monotonic() < deadline:
        pipe = c.redis.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hget(c.store.run_key(rid), "completion")
        done = sum(1 for v in pipe.execute() if v == "sent")
        if done == len(run_ids) and c.quiet():
            return
        if time.monotonic() >= next_kill and done < len(run_ids):
            i = rng.randrange(len(workers))
            if kills["pool"] % args.whole_every == args.whole_every - 1:
                c.stop(workers[i], signal.SIGKILL)
                workers[i] = c.worker(concurrency=4)[0]
                kills["worker"] += 1
            children = pool_children(workers[i].pid)
            if children:
                os.kill(rng.choice(children), signal.SIGKILL)
                kills["pool"] += 1
            next_kill = time.monotonic() + args.kill_every
        if time.monotonic() - last_print > 10:
            print(f"{done}/{len(run_ids)} finished, kills {dict(kills)}", flush=True)
            last_print = time.monotonic()
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--whole-every", type=int, default=6, help="every Nth kill takes the whole worker")
    args = parser.parse_args()

    url = db_url(TEST_REDIS_URL, 3)
    redis.Redis.from_url(url).flushdb()
    config = sim_config(webhook_duplicates=1, lookup_by_idempotency_key=True, delivery_attempts=20)
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="nen-soak-"))
    with SimulatorServer(config) as sim:
        c = Cluster(tmp, url, sim)
        c.env["NEN_LOOKUP_PATH"] = "/runs?idempotency_key={idempotency_key}"
        c.env["NEN_UNKNOWN_TIMEOUT"] = "60"
        # Thousands of runs are queued at once: with the fault suite's 3 s grace the sweep would
        # resubmit every waiting run every few seconds (harmless, but it floods the queue).
        c.env["NEN_QUEUED_GRACE"] = "120"
        try:
            c.receiver()
            workers = [c.worker(concurrency=4)[0], c.worker(concurrency=4)[0]]
            c.beat()
            started = time.monotonic()
            run_ids = [c.start(callback=record_dispatch) for _ in range(args.runs)]
            print(
                f"started {len(run_ids)} runs in {time.monotonic() - started:.1f}s; logs in {tmp}", flush=True
            )
            kills = Counter[str]()
            try:
                drive(c, run_ids, workers, kills, rng, args)
            except KeyboardInterrupt:
                print("\ninterrupted: reporting what finished so far", flush=True)
            elapsed = time.monotonic() - started
            print()
            posts = sim.stats()["posts_by_idempotency_key"]
            pipe = c.redis.pipeline(transaction=False)
            for rid in run_ids:
                pipe.scard(f"{c.prefix}:test:dispatches:{rid}")
                pipe.hget(c.store.run_key(rid), "status")
            values = pipe.execute()
            callbacks = Counter(values[0::2])
            statuses = Counter(values[1::2])
            post_hist = Counter(posts.get(rid, 0) for rid in run_ids)
            lost = sum(1 for rid, n in zip(run_ids, values[0::2], strict=True) if n == 0)
            print(f"runs started: {len(run_ids)} in {elapsed:.0f}s with {dict(kills)} kills")
            print(f"statuses: {dict(statuses)}")
            print(f"POSTs received per run: {dict(post_hist)}")
            print(f"callbacks per run (distinct dispatches that ran): {dict(callbacks)}")
            print(f"lost runs: {lost}")
            anomalies = [
                (rid, n)
                for rid, n in zip(run_ids, values[0::2], strict=True)
                if n != 1 or posts.get(rid, 0) != 1
            ]
            for rid, n in anomalies[:20]:
                data = c.store.raw(rid)
                print(
                    f"  anomaly {rid}: callbacks={n} posts={posts.get(rid, 0)} "
                    f"completion={data.get('completion')} task={data.get('callback_task_id')} "
                    f"history={data.get('history')}"
                )
            ok = set(post_hist) == {1} and set(callbacks) == {1} and lost == 0
            print("OK" if ok else "FAILED")
            return 0 if ok else 1
        finally:
            c.stop_all()


if __name__ == "__main__":
    sys.exit(main())
