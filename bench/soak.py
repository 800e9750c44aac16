"""Soak: thousands of runs through 2 worker processes while workers are killed every few
seconds and every webhook is delivered twice. Not part of CI (`make soak`).

Prints: runs started, POSTs the simulator received per run (must be 1), callbacks per run
(must be 1), lost runs (must be 0). Exit status 1 if any of those does not hold.

The simulator runs as its own process (`nen-celery simulate`), and the workers use the default
timeouts and retry budget (not the fault suite's 1-2 s ones): the soak is about killed workers
and duplicated webhooks, so Nen answers slowly but surely on a busy 2-core machine, as a real
API would, instead of timing out and ending runs `submit_failed` for want of CPU.
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

import httpx  # noqa: E402
import redis  # noqa: E402
from tests.callbacks import record_dispatch  # noqa: E402
from tests.cluster import Cluster, db_url, healthy  # noqa: E402
from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET, TEST_REDIS_URL  # noqa: E402
from tests.helpers import free_port, wait_for  # noqa: E402

# Production defaults for everything that decides whether a slow answer counts as a failure.
PATIENT_ENV = {
    "NEN_SUBMIT_DEADLINE": "30",
    "NEN_CONNECT_TIMEOUT": "5",
    "NEN_WRITE_TIMEOUT": "10",
    "NEN_READ_TIMEOUT": "30",
    "NEN_BACKOFF_INITIAL": "0.5",
    "NEN_BACKOFF_MAX": "5",
    "NEN_SUBMIT_RESCHEDULES": "5",
    "NEN_RESCHEDULE_DELAY": "5",
    "NEN_VISIBILITY_TIMEOUT": "120",
    "NEN_RESTORE_INTERVAL": "2",
    "NEN_COMPLETION_LEASE": "10",
    "NEN_QUEUED_GRACE": "300",
    "NEN_WEBHOOK_DEADLINE": "120",
    "NEN_REPOLL_INTERVAL": "30",
    "NEN_UNKNOWN_TIMEOUT": "600",
    "NEN_LOOKUP_PATH": "/runs?idempotency_key={idempotency_key}",
}


class RemoteSim:
    """The simulator in its own process, driven over its HTTP control API."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = (tmp / "simulator.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nen_celery.simulator",
                "--port",
                str(self.port),
                "--processing-delay",
                "0.05",
                "--terminal-delay",
                "0.1",
                "--delivery-attempts",
                "20",
                "--webhook-duplicates",
                "1",
                "--lookup-by-idempotency-key",
            ],
            env={
                **os.environ,
                "NEN_API_KEY": SIM_API_KEY,
                "NEN_SIGNING_KEY": SIM_SIGNING_KEY,
                "NEN_WEBHOOK_SECRET": SIM_WEBHOOK_SECRET,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: healthy(self.url + "/_sim/stats"), 30, "simulator process")

    def stats(self) -> dict[str, object]:
        return dict(httpx.get(self.url + "/_sim/stats", timeout=60).json())

    def reset(self) -> None:
        httpx.post(self.url + "/_sim/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by its pid
            self.proc.wait(30)


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
        if done == len(run_ids) and c.settled(run_ids):  # callbacks ran, broker empty
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
        time.sleep(2)  # a pipelined read of every run each time: keep the driver's own load low


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--whole-every", type=int, default=6, help="every Nth kill takes the whole worker")
    args = parser.parse_args()

    url = db_url(TEST_REDIS_URL, 3)
    redis.Redis.from_url(url).flushdb()
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="nen-soak-"))
    sim = RemoteSim(tmp)
    c = Cluster(tmp, url, sim, **PATIENT_ENV)  # type: ignore[arg-type]  # same url/stats/reset surface
    try:
        c.receiver()
        workers = [c.worker(concurrency=4)[0], c.worker(concurrency=4)[0]]
        c.beat()
        started = time.monotonic()
        run_ids = [c.start(callback=record_dispatch) for _ in range(args.runs)]
        print(f"started {len(run_ids)} runs in {time.monotonic() - started:.1f}s; logs in {tmp}", flush=True)
        kills = Counter[str]()
        try:
            drive(c, run_ids, workers, kills, rng, args)
        except KeyboardInterrupt:
            print("\ninterrupted: reporting what finished so far", flush=True)
        elapsed = time.monotonic() - started
        print()
        posts: dict[str, int] = sim.stats()["posts_by_idempotency_key"]  # type: ignore[assignment]
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
            (rid, n) for rid, n in zip(run_ids, values[0::2], strict=True) if n != 1 or posts.get(rid, 0) != 1
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
        sim.stop()


if __name__ == "__main__":
    sys.exit(main())
