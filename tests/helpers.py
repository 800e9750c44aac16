"""Waiting on conditions (never sleeping as synchronisation), servers in threads, snapshots."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import redis
import uvicorn
from celery.signals import before_task_publish, task_postrun

from nen_celery.domain.hints import RunRef

T = TypeVar("T")

# Set on messages this process publishes for workers in other processes (tests.cluster), so
# TaskCounter does not wait for them to finish here.
OTHER_PROCESS_HEADER = "x_nen_other_process"
PROBE_HEADER = "nen_selfcheck"  # direct_publish.PROBE_HEADER: popped back at once, never run


def wait_for(condition: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``condition`` until truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


ROOT = Path(__file__).resolve().parent.parent
# PYTHONPATH of the processes the tests and benchmarks start: the tests and bench packages, and
# this checkout's own code ahead of whatever nen-celery is installed (a worktree, a venv shared)
CHILD_PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "src")])


def spawn_logged(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A process in a session of its own (stopped by its own pid, with its children), from the
    project root, with stdout and stderr appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """End a process ``spawn_logged`` started, and its children (its own session), by its pid;
    SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class TaskCounter:
    """Counts messages published and tasks finished in this process, by task name."""

    def __init__(self) -> None:
        self.published: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        # by task id: a stale message of an earlier test, redelivered now, finishes a task this
        # process never published, and must not make up for one of this process still queued
        self._published_ids: Counter[str] = Counter()
        self._finished_ids: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()
        before_task_publish.connect(self._on_publish, weak=False)
        task_postrun.connect(self._on_postrun, weak=False)

    @contextmanager
    def elsewhere(self) -> Iterator[None]:
        """What this thread publishes meanwhile runs on other workers (a user's app, a CLI):
        not counted, so ``wait_idle`` does not wait for it here."""
        self._local.elsewhere = True
        try:
            yield
        finally:
            self._local.elsewhere = False

    def _on_publish(self, sender: str | None = None, headers: Any = None, **_: Any) -> None:
        if isinstance(headers, dict) and headers.get(OTHER_PROCESS_HEADER):
            return
        if isinstance(headers, dict) and headers.get(PROBE_HEADER):  # direct_publish's self-check
            return
        if getattr(self._local, "elsewhere", False):
            return
        with self._lock:
            self.published[str(sender)] += 1
            if isinstance(headers, dict) and headers.get("id"):
                self._published_ids[str(headers["id"])] += 1

    def _on_postrun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        with self._lock:
            self.finished[getattr(sender, "name", str(sender))] += 1
            if task_id is not None:
                self._finished_ids[task_id] += 1

    def idle(self) -> bool:
        with self._lock:
            return all(self._finished_ids[tid] >= n for tid, n in self._published_ids.items())

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Every task published from this process has run (retries included)."""
        wait_for(self.idle, timeout, "all published tasks to finish")


def free_socket() -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio then sets TCP_NODELAY on accepted connections (no 40 ms stalls)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a pre-bound loopback port; yields its base URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def flushed_db(url: str) -> Iterator[redis.Redis]:
    """A client on a scratch database, empty before and after the test."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


def snapshot(client: redis.Redis, pattern: str) -> dict[str, Any]:
    """Every key matching ``pattern`` with its value, to prove nothing changed."""
    out: dict[str, Any] = {}
    for key in sorted(client.scan_iter(match=pattern, count=1000)):
        if str(key).startswith(("_kombu.binding.", "_kombu.binding_deadlines", "unacked_mutex")):
            # broker metadata written when any consumer (re)connects, and the pidbox binding's
            # deadline kombu refreshes on its own while idle: not run state
            continue
        kind = client.type(key)
        if kind == "hash":
            out[key] = client.hgetall(key)
        elif kind == "string":
            out[key] = client.get(key)
        elif kind == "list":
            out[key] = client.lrange(key, 0, -1)
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = kind
    return out


def run_ref(store: Any, run_id: str, attempt: int = 0) -> RunRef:
    """The hint a URL made for ``run_id``'s record now would carry (its nonce; "" if none)."""
    return RunRef(run_id, attempt, store.redis.hget(store.run_key(run_id), "nonce") or "")
