"""3. I/O-bound submit: the simulator holds every POST /runs for 200 ms; one worker node with a
threads pool (then gevent) at high concurrency works through N queued submissions, as one worker
process and as one process per core (BENCH_SUBMIT_PROCS, default "1,2"). Figure: submissions/s
in steady state (10%..90% of the POSTs) against the bound concurrency / latency.
Target: >= 400/s. The shared httpx client allows NEN_HTTP_MAX_CONNECTIONS (100) connections per
process, so a concurrency above that is capped at 100 / 0.2 s = 500/s per process.
"""

from __future__ import annotations

import os
import threading
import time

from bench.common import WF, Result, configure, env_int, flush, processes, sim_config

LATENCY = 0.2
IDLE_QUEUE = "bench.idle"  # no message is ever sent here


class _Marks(threading.Thread):
    """When the simulator's accepted POSTs reach 10% and 90% of ``n``, polled every 20 ms from
    before the workers take the queue (a mark read later would come late, inflating the rate)."""

    def __init__(self, sim: object, n: int) -> None:
        super().__init__(daemon=True)
        self.sim, self.n = sim, n
        self.marks: dict[float, float] = {}
        self.accepted = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set() and len(self.marks) < 2:
            self.accepted = self.sim.stats()["accepted"]  # type: ignore[attr-defined]
            now = time.monotonic()
            for frac in (0.1, 0.9):
                if frac not in self.marks and self.accepted >= frac * self.n:
                    self.marks[frac] = now
            time.sleep(0.02)

    def rate(self, timeout: float) -> float:
        """POSTs/s between the 10% and 90% marks."""
        self.join(timeout)
        self.done.set()
        if len(self.marks) < 2:
            raise RuntimeError(f"only {self.accepted}/{self.n} POSTs after {timeout:.0f}s")
        if self.marks[0.9] - self.marks[0.1] < 0.1:  # both marks in one poll (or nearly): no rate
            too_few = f"{self.n} POSTs are too few to time (10%..90% within one poll)"
            raise RuntimeError(f"{too_few}: raise BENCH_SUBMIT_N")
        return 0.8 * self.n / (self.marks[0.9] - self.marks[0.1])


def http_pool() -> int:
    """Connections the shared HTTP client allows per worker process (NEN_HTTP_MAX_CONNECTIONS)."""
    from nen_celery.settings import get_settings

    return get_settings().http_max_connections


def sim_capacity(concurrency: int, seconds: int = 8) -> float:
    """POST /runs answers/s the simulator itself gives wrk at this concurrency (same latency)."""
    import json

    from bench.common import API_KEY
    from bench.receiver import wrk, wrk_script
    from nen_celery.simulator import SimulatorServer

    body = json.dumps({"workflow_id": WF, "workflow_params": {"PATIENT_NAME": "P"}}).encode()
    script = wrk_script(body, {"x-api-key": API_KEY})
    with SimulatorServer(sim_config(post_latency=LATENCY)) as sim:
        rps, _, _ = wrk(sim.url + "/runs", script, seconds, min(concurrency, http_pool()))
    return rps


def _one(pool: str, n: int, concurrency: int, nprocs: int) -> float:
    from nen_celery import start_run
    from nen_celery.runtime.context import get_context
    from nen_celery.simulator import SimulatorServer

    flush()
    with SimulatorServer(sim_config(post_latency=LATENCY)) as sim:
        env = configure(NEN_API_URL=sim.url)  # no webhook URL: Nen sends no webhooks
        handles = [start_run(WF, {"PATIENT_NAME": f"P{i}"}) for i in range(n)]  # queued first
        with processes(env, f"submit-{pool}") as procs:
            # every worker boots consuming an idle queue, then all are told to take the submit
            # queue at once: the 10%..90% window never has a worker still starting
            nodes = [
                procs.worker(f"submit-{pool}{i}", concurrency, pool, queues=IDLE_QUEUE) for i in range(nprocs)
            ]
            marks = _Marks(sim, n)
            marks.start()
            from nen_celery.worker import SUBMIT_QUEUE, app

            app.control.add_consumer(SUBMIT_QUEUE, destination=nodes, reply=True, timeout=10)
            rate = marks.rate(60 + n / 50)
            store = get_context().store

            def bound() -> int:
                pipe = store.redis.pipeline(transaction=False)
                for h in handles:
                    pipe.hget(store.run_key(h.run_id), "message_id")
                return sum(1 for v in pipe.execute() if v)

            from bench.common import wait_for

            wait_for(lambda: bound() == n, 60 + n / 50, f"all {n} runs bound to a messageId")
    return rate


def run() -> list[Result]:
    n = env_int("BENCH_SUBMIT_N", 2000)
    concurrency = env_int("BENCH_SUBMIT_CONCURRENCY", 100)
    capacity = sim_capacity(concurrency)
    print(f"submit: the simulator alone answers {capacity:.0f} POST/s to wrk at this concurrency")
    results = []
    for pool in os.environ.get("BENCH_SUBMIT_POOLS", "threads,gevent").split(","):
        for nprocs in (int(p) for p in os.environ.get("BENCH_SUBMIT_PROCS", "1,2").split(",")):
            bound = nprocs * min(concurrency, http_pool()) / LATENCY
            shape = f"-P {pool} -c {concurrency}, {nprocs} process{'es' if nprocs > 1 else ''}"
            try:
                rate = _one(pool, n, concurrency, nprocs)
            except Exception as exc:
                print(f"submit ({shape}): failed: {exc}")
                results.append(
                    Result(f"3. I/O-bound submit, {shape}", "error", "", None, "", False, str(exc))
                )
                continue
            print(f"submit ({shape}): {rate:.0f} submissions/s; bound {bound:.0f}/s")
            results.append(
                Result(
                    f"3. I/O-bound submit (N={n}, 1 node, {shape}, 200 ms POST)",
                    f"{rate:.0f} submissions/s",
                    f"{bound:.0f}/s bound (concurrency / latency); simulator alone {capacity:.0f}/s (wrk)",
                    rate / bound,
                    ">= 400/s",
                    rate >= 400,
                    f"steady state (10%..90% of POSTs); {rate / capacity:.2f}x of what the simulator serves",
                )
            )
    return results
