"""1. Lifecycle throughput: N runs start_run() -> on_complete through one `celery worker -c 2`
(2 prefork processes), the simulator answering at once and delivering both webhooks to a
uvicorn receiver, against bare Celery running N 3-task sequences on the same worker.

Per run ours is 4 tasks (submit, 2 ingests, the last dispatching the callback; callback), 1 POST and 2 webhook
requests; the bare sequence is 3 no-op tasks. Target: ours >= 0.5x bare (runs/s / sequences/s).
"""

from __future__ import annotations

import time
import uuid

from bench.common import (
    Result,
    broker_quiet,
    configure,
    env_int,
    flush,
    free_port,
    processes,
    sim_config,
    wait_for,
)

WARMUP = 50


def _ours(n: int) -> float:
    from bench.tasks import done, finished, stamps
    from nen_celery import start_run

    key = f"life:{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    for i in range(n):
        start_run(
            "12345678-1234-1234-1234-123456789abc",
            {"PATIENT_NAME": f"P{i}", "DATE_OF_BIRTH": "1990-01-15"},
            on_complete=done.s(key=key),
        )
    wait_for(lambda: finished(key) >= n, 120 + n / 5, f"{n} on_complete callbacks")
    return n / (max(at for _, at in stamps(key)) - t0)


def _bare(n: int) -> float:
    from bench.tasks import finished, stamps, step

    key = f"bare:{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    for _ in range(n):
        step.apply_async((key, 2))
    wait_for(lambda: finished(key) >= n, 120 + n / 5, f"{n} bare sequences")
    return n / (max(at for _, at in stamps(key)) - t0)


def run() -> list[Result]:
    from nen_celery.simulator import SimulatorServer

    n = env_int("BENCH_N", 2000)
    flush()
    with SimulatorServer(sim_config()) as sim:
        port = free_port()
        env = configure(NEN_API_URL=sim.url, NEN_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/nen")
        with processes(env, "lifecycle") as procs:
            procs.uvicorn("receiver", "nen_celery.web.asgi:app", port)
            procs.worker("life", concurrency=2)
            _bare(WARMUP)
            _ours(WARMUP)
            wait_for(broker_quiet, 60, "the warm-up to drain")
            bare = _bare(n)
            wait_for(broker_quiet, 60, "the bare sequences to drain")
            ours = _ours(n)
    ratio = ours / bare
    print(f"lifecycle: ours {ours:.0f} runs/s, bare Celery {bare:.0f} 3-task sequences/s: {ratio:.2f}x")
    return [
        Result(
            f"1. lifecycle throughput (N={n}, 2 prefork processes)",
            f"{ours:.0f} runs/s",
            f"{bare:.0f} seq/s (bare 3-task)",
            ratio,
            ">= 0.5x",
            ratio >= 0.5,
            "ours: 4 tasks + 1 POST + 2 webhooks per run",
        )
    ]
