"""``make demo`` / ``nen-celery demo``: the whole stack on this machine, end to end.

Starts the simulator, a real ``celery worker`` and the ASGI receiver as child processes, pushes
runs through them and prints what happened. Every child is stopped by its own pid at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import redis

from nen_celery.extras import requires_extra

with requires_extra("demo", __name__):
    # The simulator's and the receiver's, checked here: they run as child processes of this one.
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

from nen_celery.ops.exit_codes import BAD_INPUT, NOT_SUCCESS, OK

if TYPE_CHECKING:
    from nen_celery.lifecycle.api import RunHandle

console = Console()


def shown(value: object) -> str:
    """Text from Nen or a run as a table cell or a line: rich markup escaped."""
    return escape(str(value))


OK_WORKFLOW = "12345678-1234-1234-1234-123456789abc"
FAIL_WORKFLOW = "87654321-4321-4321-4321-cba987654321"
UNKNOWN_WORKFLOW = "00000000-0000-4000-8000-000000000000"


class DemoError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


@contextmanager
def _redis(stack: ExitStack) -> Iterator[str]:
    """NEN_REDIS_URL, else a local Redis, else a throwaway redis-server from PATH."""
    configured = os.environ.get("NEN_REDIS_URL")
    if configured:
        if not _answers(configured):
            raise DemoError(f"NEN_REDIS_URL={configured} does not answer PING")
        yield configured
        return
    local = "redis://127.0.0.1:6379/12"
    if _answers(local):
        yield local
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise DemoError("no Redis: set NEN_REDIS_URL, start Redis on 127.0.0.1:6379, or install redis-server")
    port = _free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own argv
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    stack.callback(_stop, proc)
    url = f"redis://127.0.0.1:{port}/0"
    _wait(lambda: _answers(url), 10, "the throwaway redis-server")
    console.print(f"started a throwaway redis-server on port {port}")
    yield url


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _spawn(stack: ExitStack, argv: list[str], env: dict[str, str], log_dir: str, name: str) -> None:
    log = open(os.path.join(log_dir, f"{name}.log"), "wb")  # noqa: SIM115 - closed by the stack
    stack.callback(log.close)
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    stack.callback(_stop, proc)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def run_demo(runs: int = 20, timeout: float = 120.0) -> int:
    from cryptography.fernet import Fernet

    with ExitStack() as stack:
        try:
            return _run(stack, runs, timeout, Fernet.generate_key().decode())
        except DemoError as exc:
            console.print(f"[red]demo failed:[/] {shown(exc)}")
            return BAD_INPUT


def _run(stack: ExitStack, runs: int, timeout: float, secrets_key: str) -> int:
    """The demo's steps: the stack up, runs started, their callbacks awaited, the outcome shown."""
    redis_url = stack.enter_context(_redis(stack))
    sim_port, receiver_port = _free_port(), _free_port()
    env = _environment(redis_url, sim_port, receiver_port, secrets_key)
    _start_children(stack, env, sim_port, receiver_port)
    _become_client(env, redis_url)
    handles = _start_runs(_plan(runs))
    _await_callbacks(len(handles), timeout)
    return _report(handles)


def _environment(redis_url: str, sim_port: int, receiver_port: int, secrets_key: str) -> dict[str, str]:
    """The settings every process of the demo shares: one Redis, a key prefix of its own."""
    return {
        **os.environ,
        "NEN_REDIS_URL": redis_url,
        "NEN_BROKER_URL": redis_url,
        "NEN_KEY_PREFIX": f"nendemo{uuid.uuid4().hex[:6]}",
        "NEN_API_URL": f"http://127.0.0.1:{sim_port}",
        "NEN_API_KEY": "demo-api-key",
        "NEN_SIGNING_KEY": "demo-signing-key",
        "NEN_WEBHOOK_SECRET": "demo-webhook-secret",
        "NEN_WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/webhooks/nen",
        "NEN_SECRETS_KEY": secrets_key,
    }


def _child_commands(sim_port: int, receiver_port: int) -> dict[str, list[str]]:
    """The argv of each child, by the name of its log file."""
    py = sys.executable
    return {
        "simulator": [
            py,
            "-m",
            "nen_celery.simulator",
            "--port",
            str(sim_port),
            "--processing-delay",
            "0.3",
            "--terminal-delay",
            "1.0",
            "--fail-workflow",
            FAIL_WORKFLOW,
        ],
        "worker": [
            py,
            "-m",
            "celery",
            "-A",
            "nen_celery.worker",
            "worker",
            "-I",
            "nen_celery.ops.demo_tasks",
            "--concurrency",
            "4",
            "--loglevel",
            "INFO",
            "-n",
            f"demo-{os.getpid()}@%h",
        ],
        "receiver": [
            py,
            "-m",
            "uvicorn",
            "nen_celery.web.asgi:app",
            "--port",
            str(receiver_port),
            "--log-level",
            "warning",
        ],
    }


def _start_children(stack: ExitStack, env: dict[str, str], sim_port: int, receiver_port: int) -> None:
    """Simulator, worker and receiver started, the HTTP ones answering, the simulator told which
    workflow it does not know."""
    log_dir = tempfile.mkdtemp(prefix="nen-demo-")
    for name, argv in _child_commands(sim_port, receiver_port).items():
        _spawn(stack, argv, env, log_dir, name)
    console.print(f"logs of simulator, worker and receiver: {log_dir}")
    _wait(lambda: _healthy(f"http://127.0.0.1:{sim_port}/healthz"), 20, "the simulator")
    _wait(lambda: _healthy(f"http://127.0.0.1:{receiver_port}/healthz"), 20, "the receiver")
    httpx.post(f"http://127.0.0.1:{sim_port}/_sim/config", json={"unknown_workflows": [UNKNOWN_WORKFLOW]})


def _become_client(env: dict[str, str], redis_url: str) -> None:
    """This process starts the runs: the children's settings, and a worker that answers."""
    os.environ.update(env)
    from nen_celery.runtime.context import reset_context
    from nen_celery.settings import reset_settings

    reset_settings()
    reset_context()
    from nen_celery.worker import app

    app.conf.broker_url = redis_url
    _wait(lambda: bool(app.control.ping(timeout=0.5)), 60, "the Celery worker")


def _plan(runs: int) -> list[str]:
    """The workflow of each run: a fifth fail in Nen, a tenth are unknown to it, the rest succeed."""
    return (
        [OK_WORKFLOW] * (runs - runs // 5 - runs // 10)
        + [FAIL_WORKFLOW] * (runs // 5)
        + [UNKNOWN_WORKFLOW] * (runs // 10)
    )


def _start_runs(plan: list[str]) -> list[RunHandle]:
    """One run per planned workflow, each with both callbacks (``demo_tasks.record``)."""
    from nen_celery.lifecycle.api import start_run
    from nen_celery.ops import demo_tasks

    return [
        start_run(
            workflow,
            {"PATIENT_NAME": f"Patient {i}", "DATE_OF_BIRTH": "1990-01-15"},
            secure_params={"password": f"demo-secret-{i}"},
            on_complete=demo_tasks.record.s(tag="on_complete"),
            on_failure=demo_tasks.record.s(tag="on_failure"),
        )
        for i, workflow in enumerate(plan)
    ]


def _callbacks() -> list[dict[str, Any]]:
    """Every callback fired so far, as ``demo_tasks.record`` stored it."""
    from nen_celery.ops import demo_tasks
    from nen_celery.runtime.context import get_context

    return [json.loads(x) for x in get_context().redis.lrange(demo_tasks.callbacks_key(), 0, -1)]


def _await_callbacks(total: int, timeout: float) -> None:
    """A progress bar of runs with a callback, until all have one or ``timeout`` passes."""
    with Progress(
        TextColumn("runs finished"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        bar = progress.add_task("runs", total=total)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = len({c["run_id"] for c in _callbacks()})
            progress.update(bar, completed=done)
            if done >= total:
                break
            time.sleep(0.2)


def _report(handles: list[RunHandle]) -> int:
    """A row per run, the outcomes counted; 0 when every run got exactly one callback, else 1."""
    per_run = Counter(c["run_id"] for c in _callbacks())
    table = Table("run", "workflow", "status", "message_id", "attempts", "seconds", "callback")
    statuses: Counter[str] = Counter()
    ok = True
    for handle in handles:
        run = handle.get()
        assert run is not None
        statuses[run.status] += 1
        tags = [c["tag"] for c in _callbacks() if c["run_id"] == handle.run_id]
        ok &= per_run[handle.run_id] == 1
        seconds = f"{run.finished_at - run.created_at:.2f}" if run.finished_at else "-"
        table.add_row(  # Nen's ids and statuses shown as text, never markup
            *map(shown, (handle.run_id[:8], run.workflow_id[:8], run.status, (run.message_id or "-")[:8])),
            str(run.attempts),
            seconds,
            shown(",".join(tags) or "-"),
        )
    console.print(table)
    console.print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(statuses.items())))
    if not ok:
        console.print("[red]some runs did not get exactly one callback[/]")
        return NOT_SUCCESS
    console.print("[green]every run finished with exactly one callback[/]")
    return OK
