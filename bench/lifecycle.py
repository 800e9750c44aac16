"""1. Lifecycle throughput: N runs start_run() -> on_complete through one `celery worker -c 2`
(2 prefork processes), the simulator answering at once and delivering both webhooks to a
uvicorn receiver, against, on the same worker and simulator:
- the hand-written pipeline (bench/hand.py, issue 28): a submit task POSTing with httpx, a
  Starlette view checking the HMAC and enqueueing an ingest task, which HSETs the status and
  enqueues the callback: 3 tasks, 1 POST, 2 webhooks, 3 HSETs per run;
- bare Celery running N 3-task sequences (no HTTP at all).

Per run ours is 2 tasks (submit; the callback, which the receiver publishes when the terminal
webhook ends the run: bench.receiver_app knows the callback's task), 1 POST and 2 webhook
requests (both applied by the receiver). Targets: ours >= 1.0x the hand-written pipeline
(defaults), >= 1.2x (fast paths); >= 0.7x bare (runs/s / sequences/s). CPU per run beside.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

from bench.common import (
    RECEIVER,
    Result,
    broker_quiet,
    configure,
    cpu_seconds,
    current_column,
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


def _hand(n: int) -> float:
    """N runs of the hand-written pipeline: the user's "start" is enqueueing its submit task."""
    from bench.hand import submit
    from bench.tasks import finished, stamps

    key = f"hand:{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    for i in range(n):
        submit.apply_async(
            (f"hand-{uuid.uuid4()}", {"PATIENT_NAME": f"P{i}", "DATE_OF_BIRTH": "1990-01-15"}, key)
        )
    wait_for(lambda: finished(key) >= n, 120 + n / 5, f"{n} hand-written runs")
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
    phases: dict[str, Callable[[int], float]] = {"bare": _bare, "hand": _hand, "ours": _ours}
    got: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name in phases}
    with SimulatorServer(sim_config()) as sim:
        port, hand_port = free_port(), free_port()
        env = configure(
            NEN_API_URL=sim.url,
            NEN_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/nen",
            HAND_WEBHOOK_URL=f"http://127.0.0.1:{hand_port}/webhooks/hand",
            HAND_WORKFLOW="12345678-1234-1234-1234-123456789abc",
        )
        with processes(env, "lifecycle") as procs:
            procs.uvicorn("receiver", RECEIVER, port)
            procs.uvicorn("hand-web", "bench.hand_web:app", hand_port)
            procs.worker("life", concurrency=2)
            parts = {
                "worker": (procs.procs[2].pid, True),
                "receiver": (procs.procs[0].pid, True),
                "hand view": (procs.procs[1].pid, True),
                "driver+simulator": (os.getpid(), False),
                "redis": (redis_pid(), False),
            }
            for phase in phases.values():
                phase(WARMUP)
            wait_for(broker_quiet, 60, "the warm-up to drain")
            for _ in range(rounds):  # alternate; each side's best rate, least CPU: the machine is shared
                for name, phase in phases.items():
                    got[name].append(_measured(phase, n, parts))
                    wait_for(broker_quiet, 60, f"the {name} runs to drain")
    best = {name: max(r for r, _ in results) for name, results in got.items()}
    cpu = {name: min(results, key=lambda r: sum(r[1].values()))[1] for name, results in got.items()}
    rates = {name: "/".join(f"{r:.0f}" for r, _ in results) for name, results in got.items()}
    fast = current_column() == "fast"
    rows = []
    for base, label, target, bound, what in (
        ("hand", "hand-written pipeline", ">= 1.2x" if fast else ">= 1.0x", 1.2 if fast else 1.0, "runs/s"),
        ("bare", "bare 3-task", ">= 0.7x", 0.7, "seq/s"),
    ):
        ratio = best["ours"] / best[base]
        cpu_ratio = sum(cpu[base].values()) / sum(cpu["ours"].values())
        print(f"lifecycle: ours {rates['ours']} runs/s, {label} {rates[base]} {what}: {ratio:.2f}x")
        print(f"  CPU ms per run: {_split(cpu['ours'])}; {label}: {_split(cpu[base])} ({cpu_ratio:.2f}x)")
        rows.append(
            Result(
                f"1. lifecycle throughput vs {label} (N={n}, 2 prefork processes)",
                f"{best['ours']:.0f} runs/s, CPU {sum(cpu['ours'].values()):.1f} ms/run",
                f"{best[base]:.0f} {what} ({label}), CPU {sum(cpu[base].values()):.1f} ms",
                ratio,
                target,
                ratio >= bound,
                "ours: 2 tasks + 1 POST + 2 webhooks (both applied by the receiver, which publishes "
                f"the callback) per run; best of {rounds} alternations (runs/s {rates['ours']}, "
                f"{label} {rates[base]}); CPU ms per run {_split(cpu['ours'])} vs {_split(cpu[base])}: "
                f"{cpu_ratio:.2f}x",
            )
        )
    return rows
