"""5. Completion latency: the simulator sends the terminal webhook -> on_complete starts, with
runs started at BENCH_LATENCY_RATE (default 100/s) for BENCH_LATENCY_SECONDS (default 10) through
one `celery worker -c 2`. Baseline: bare 2-hop sequences (a task that enqueues the next)
published at the same rate on the same worker, timed from the first publish to the second
task's start: our path is the same two queue hops (ingest_webhook, which completes a hinted run
itself, -> callback), plus the receiver's HTTP request.
Target: ours p99 < 100 ms. Also reported: when the last callback started, counted from the first
start_run; past the offered seconds, the machine did not keep up and runs waited to be submitted
(with NEN_BROKER_QUEUE_ORDER=priority, workers finish runs in flight before starting new ones).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.common import (
    RECEIVER,
    WF,
    Result,
    broker_quiet,
    configure,
    env_int,
    flush,
    free_port,
    pct,
    processes,
    sim_config,
    wait_for,
)


def _paced(rate: int, seconds: int, fn: Callable[[int], object]) -> float:
    """Call ``fn`` ``rate`` times a second for ``seconds``; returns the rate achieved."""
    n = rate * seconds
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        fn(i)
    return n / (time.monotonic() - t0)


def _ours(sim: Any, rate: int, seconds: int) -> tuple[list[float], float, float]:
    """(latencies, rate achieved, seconds from the first start_run to the last callback)."""
    from bench.tasks import done, finished, stamps
    from nen_celery import start_run

    sent: dict[str, float] = {}
    deliver = sim.state._deliver

    async def timed(run: Any, status: str, body: bytes) -> None:
        if status in ("success", "failed"):
            sent[run.message_id] = time.time()
        await deliver(run, status, body)

    sim.state._deliver = timed  # stamp the moment each terminal webhook leaves the simulator
    key = f"lat:{uuid.uuid4().hex[:8]}"
    first = time.time()
    achieved = _paced(
        rate, seconds, lambda i: start_run(WF, {"PATIENT_NAME": f"P{i}"}, on_complete=done.s(key=key))
    )
    n = rate * seconds
    wait_for(lambda: finished(key) >= n, 120 + n / 5, f"{n} callbacks")
    sim.state._deliver = deliver
    timed_stamps = stamps(key)
    last = max(at for _, at in timed_stamps) - first
    return [at - sent[mid] for mid, at in timed_stamps], achieved, last


def _barrier() -> str:
    """The durability barrier the run store gives (NEN_DURABILITY; store/durable.py): set
    NEN_DURABILITY=off / auto around `make bench` to compare."""
    from nen_celery.runtime.context import get_context

    return get_context().barrier.mode


def _bare(rate: int, seconds: int) -> tuple[list[float], float]:
    from bench.tasks import finished, stamps, step

    key = f"latbare:{uuid.uuid4().hex[:8]}"
    achieved = _paced(rate, seconds, lambda i: step.apply_async((key, 1, time.time())))
    n = rate * seconds
    wait_for(lambda: finished(key) >= n, 120 + n / 5, f"{n} bare sequences")
    return [at - float(sent) for sent, at in stamps(key)], achieved


def run() -> list[Result]:
    """At BENCH_LATENCY_RATES (default "100,40"): the target's rate, and one this 2-core box
    sustains, so a queue building up at the first is told apart from the path's own latency."""
    from nen_celery.simulator import SimulatorServer

    rates = [int(r) for r in os.environ.get("BENCH_LATENCY_RATES", "100,40").split(",")]
    seconds = env_int("BENCH_LATENCY_SECONDS", 10)
    results = []
    for rate in rates:
        flush()
        with SimulatorServer(sim_config(terminal_delay=0.02)) as sim:
            port = free_port()
            env = configure(NEN_API_URL=sim.url, NEN_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/nen")
            with processes(env, "latency") as procs:
                procs.uvicorn("receiver", RECEIVER, port)
                procs.worker("lat", concurrency=2)
                _bare(20, 1)  # warm up both paths
                _ours(sim, 20, 1)
                wait_for(broker_quiet, 60, "the warm-up to drain")
                bare, bare_rate = _bare(rate, seconds)
                wait_for(broker_quiet, 120, "the bare sequences to drain")
                ours, ours_rate, last = _ours(sim, rate, seconds)
        o50, o99 = pct(ours, 0.5) * 1000, pct(ours, 0.99) * 1000
        barrier = _barrier()
        b50, b99 = pct(bare, 0.5) * 1000, pct(bare, 0.99) * 1000
        print(
            f"latency at {ours_rate:.0f} runs/s: p50 {o50:.1f} ms, p99 {o99:.1f} ms; "
            f"last callback {last:.1f} s"
        )
        print(f"latency bare 2-hop at {bare_rate:.0f}/s: p50 {b50:.1f} ms, p99 {b99:.1f} ms")
        results.append(
            Result(
                f"5. completion latency at {rate} runs/s for {seconds}s (2 prefork processes)",
                f"p50 {o50:.0f} ms, p99 {o99:.0f} ms",
                f"p50 {b50:.0f} ms, p99 {b99:.0f} ms (bare 2 hops)",
                o99 / b99,
                "p99 < 100 ms",
                o99 < 100,
                "terminal webhook sent -> on_complete started; ratio = our p99 / bare p99; the "
                f"last callback {last:.1f} s after the first start_run (runs offered over {seconds} s: "
                f"more means submits queued, NEN_BROKER_QUEUE_ORDER); durability barrier {barrier}",
            )
        )
    return results
