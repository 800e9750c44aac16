"""1. Lifecycle throughput: N runs start_run() -> on_complete through one `celery worker -c 2`
(2 prefork processes), the simulator answering at once and delivering both webhooks to a
uvicorn receiver, against bare Celery running N 3-task sequences on the same worker.

Per run ours is 3 tasks (submit; the terminal webhook's ingest, which dispatches the callback;
the callback), 1 POST and 2 webhook requests (the receiver applies `processing` itself); the
bare sequence is 3 no-op tasks. Target: ours >= 0.5x bare (runs/s / sequences/s).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

from bench.common import (
    Result,
    broker_quiet,
    configure,
    cpu_seconds,
    env_int,
    flush,
    free_port,
    processes,
    redis_pid,
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


def _cpu(parts: dict[str, tuple[int, bool]]) -> dict[str, float]:
    """CPU seconds so far of each part: (pid, with its children)."""
    return {name: cpu_seconds(pid, children) for name, (pid, children) in parts.items()}


def _measured(
    phase: Callable[[int], float], n: int, parts: dict[str, tuple[int, bool]]
) -> tuple[float, dict[str, float]]:
    """(throughput, CPU ms per item by part) of one phase."""
    before = _cpu(parts)
    rate = phase(n)
    after = _cpu(parts)
    return rate, {name: (after[name] - before[name]) / n * 1000 for name in parts}


def _split(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {ms:.1f}" for name, ms in cpu.items())


def run() -> list[Result]:
    from nen_celery.simulator import SimulatorServer

    n = env_int("BENCH_N", 2000)
    rounds = env_int("BENCH_ROUNDS", 2)
    flush()
    ours: list[tuple[float, dict[str, float]]] = []
    bare: list[tuple[float, dict[str, float]]] = []
    with SimulatorServer(sim_config()) as sim:
        port = free_port()
        env = configure(NEN_API_URL=sim.url, NEN_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/nen")
        with processes(env, "lifecycle") as procs:
            procs.uvicorn("receiver", "nen_celery.web.asgi:app", port)
            procs.worker("life", concurrency=2)
            parts = {
                "worker": (procs.procs[1].pid, True),
                "receiver": (procs.procs[0].pid, True),
                "driver+simulator": (os.getpid(), False),
                "redis": (redis_pid(), False),
            }
            _bare(WARMUP)
            _ours(WARMUP)
            wait_for(broker_quiet, 60, "the warm-up to drain")
            for _ in range(rounds):  # alternate; each side's best rate, least CPU: the machine is shared
                bare.append(_measured(_bare, n, parts))
                wait_for(broker_quiet, 60, "the bare sequences to drain")
                ours.append(_measured(_ours, n, parts))
                wait_for(broker_quiet, 60, "our runs to drain")
    rate, bare_rate = max(r for r, _ in ours), max(r for r, _ in bare)
    cpu = min(ours, key=lambda r: sum(r[1].values()))[1]
    bare_cpu = min(bare, key=lambda r: sum(r[1].values()))[1]
    ratio = rate / bare_rate
    cpu_ratio = sum(bare_cpu.values()) / sum(cpu.values())
    rates = "/".join(f"{r:.0f}" for r, _ in ours), "/".join(f"{r:.0f}" for r, _ in bare)
    print(f"lifecycle: ours {rates[0]} runs/s, bare Celery {rates[1]} 3-task sequences/s: {ratio:.2f}x")
    print(f"  CPU ms per run: {_split(cpu)}; per bare sequence: {_split(bare_cpu)} ({cpu_ratio:.2f}x)")
    return [
        Result(
            f"1. lifecycle throughput (N={n}, 2 prefork processes)",
            f"{rate:.0f} runs/s",
            f"{bare_rate:.0f} seq/s (bare 3-task)",
            ratio,
            ">= 0.5x",
            ratio >= 0.5,
            "ours: 3 tasks + 1 POST + 2 webhooks (one applied by the receiver) per run; "
            f"best of {rounds} alternations (runs/s {rates[0]}, bare {rates[1]}); "
            f"CPU ms per run {sum(cpu.values()):.1f} ({_split(cpu)}) vs per bare sequence "
            f"{sum(bare_cpu.values()):.1f} ({_split(bare_cpu)}): {cpu_ratio:.2f}x",
        )
    ]
